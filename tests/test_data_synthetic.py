"""The synthetic re-ID generator: exact Market1501 layout, reproducible, learnable, two camera domains."""
import json
import re

import numpy as np
import pytest
from PIL import Image

from osnet_zoo.data import build_dataset, make_synthetic_reid, market1501, synthetic_reid
from osnet_zoo.metrics import evaluate_features

SMALL = dict(num_train_ids=10, num_test_ids=30, num_cameras=5, num_distractors=10, num_junk=4)
NAME = re.compile(r'^(-1|\d{4})_c(\d)s1_\d{6}_\d{2}\.jpg$')


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic')
    synthetic_reid(root, domain=0, **SMALL)
    synthetic_reid(root, domain=1, **SMALL)
    return root


def _ids(ds):
    return [np.array([getattr(it, f) for it in getattr(ds, s)])
            for s, f in (('query', 'pid'), ('gallery', 'pid'), ('query', 'camid'), ('gallery', 'camid'))]


def test_exact_market1501_layout(root):
    base = root / 'synthetic_reid'
    assert sorted(p.name for p in base.iterdir()) == ['bounding_box_test', 'bounding_box_train', 'query',
                                                      'synthetic_reid.json']
    names = {split: [p.name for p in (base / split).iterdir()] for split in ('bounding_box_train', 'query',
                                                                            'bounding_box_test')}
    assert all(NAME.match(n) for ns in names.values() for n in ns)
    test_names = names['bounding_box_test']
    assert sum(n.startswith('0000_') for n in test_names) == 10 and sum(n.startswith('-1_') for n in test_names) == 4
    with Image.open(base / 'query' / names['query'][0]) as im:
        assert im.size == (64, 128) and im.mode == 'RGB' and im.format == 'JPEG'
    ds = market1501(base, max_cam=0)  # the plain Market1501 reader takes it
    train_ids = {int(n[:4]) for n in names['bounding_box_train']}
    test_ids = {int(n[:4]) for n in names['query']}
    assert len(train_ids) == 10 and len(test_ids) == 30 and not train_ids & test_ids
    assert ds.num_train_pids == 10 and 0 in {it.pid for it in ds.gallery}
    # every query has a true match from another camera
    res = evaluate_features(np.random.rand(len(ds.query), 8).astype(np.float32),
                            np.random.rand(len(ds.gallery), 8).astype(np.float32), *_ids(ds))
    assert res['num_valid_queries'] == res['num_queries'] == len(ds.query)


def test_reproducible_and_read_back(root, tmp_path):
    again = make_synthetic_reid(tmp_path / 'again', **SMALL)
    a = sorted((root / 'synthetic_reid' / 'query').iterdir())
    b = sorted((again / 'query').iterdir())
    assert [p.name for p in a] == [p.name for p in b] and a[3].read_bytes() == b[3].read_bytes()
    other = make_synthetic_reid(tmp_path / 'seed1', **{**SMALL, 'seed': 1})
    assert sorted(p.name for p in (other / 'query').iterdir()) != [p.name for p in a]
    before = (root / 'synthetic_reid' / 'synthetic_reid.json').stat().st_mtime_ns
    ds = build_dataset('synthetic', root, **SMALL)  # read back, not regenerated
    assert ds.name == 'synthetic' and (root / 'synthetic_reid' / 'synthetic_reid.json').stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match='other options'):
        synthetic_reid(root, **{**SMALL, 'num_cameras': 3})
    with pytest.raises(FileExistsError):
        make_synthetic_reid(tmp_path / 'again', **SMALL)
    with pytest.raises(TypeError, match='unknown synthetic dataset option'):
        make_synthetic_reid(tmp_path / 'x', colour='red')


def _camera_normalised_histograms(ds):
    """A hand-made re-ID feature: colour histogram of the body after dividing out each camera's mean colour."""
    items = ds.query + ds.gallery
    imgs = {it.path: np.asarray(Image.open(it.path), np.float32) for it in items}
    cam_mean = {c: np.mean([imgs[it.path].mean((0, 1)) for it in items if it.camid == c], 0)
                for c in {it.camid for it in items}}

    def feats(split, normalise):
        out = []
        for it in getattr(ds, split):
            a = imgs[it.path] / (cam_mean[it.camid] if normalise else 1.0) * (100 if normalise else 1.6)
            a = np.clip(a[20:110, 12:52] // 50, 0, 4).astype(np.int64)
            h = np.bincount((a[..., 0] * 25 + a[..., 1] * 5 + a[..., 2]).ravel(), minlength=125)
            out.append(np.sqrt(h / h.sum()))
        return np.asarray(out, np.float32)

    return {n: (feats('query', n), feats('gallery', n)) for n in (False, True)}


@pytest.mark.parametrize('name', ['synthetic', 'synthetic_b'])
def test_learnable_identity_with_camera_style_as_nuisance(root, name):
    ds = build_dataset(name, root, **SMALL)
    ids = _ids(ds)
    rng = np.random.default_rng(0)
    chance = np.mean([evaluate_features(rng.random((len(ds.query), 16), np.float32),
                                        rng.random((len(ds.gallery), 16), np.float32), *ids)['mAP']
                      for _ in range(5)])
    hists = _camera_normalised_histograms(ds)
    raw, normalised = (evaluate_features(*hists[n], *ids)['mAP'] for n in (False, True))
    assert normalised > 4 * chance  # identity is in the pixels: a simple feature finds it
    assert normalised > raw + 0.05  # and the camera style hides part of it: there is something to learn


def test_second_domain_has_other_camera_styles(root):
    cams = [json.loads((root / d / 'synthetic_reid.json').read_text())['cameras']
            for d in ('synthetic_reid', 'synthetic_reid_b')]
    assert cams[0] != cams[1]
    mean = [np.mean([np.asarray(Image.open(p)).mean() for p in sorted((root / d / 'query').iterdir())[:40]])
            for d in ('synthetic_reid', 'synthetic_reid_b')]
    assert mean[1] < mean[0] - 15  # domain B's cameras are dimmer
