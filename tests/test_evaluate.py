"""`python -m osnet_zoo.evaluate` end to end: synthetic dataset -> model -> JSON and PNGs, numbers consistent."""
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import osnet_zoo  # noqa: F401
from osnet_zoo.data import synthetic_reid
from osnet_zoo.evaluate import main
from osnet_zoo.metrics import evaluate_features
from conftest import run_module

SMALL = dict(num_train_ids=2, num_test_ids=8, num_cameras=3, cameras_per_id=(2, 3), images_per_camera=(1, 2),
             num_distractors=3, num_junk=2)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('evaluate')
    synthetic_reid(tmp / 'data', **SMALL)
    torch.manual_seed(0)
    model = timm.create_model('osnet_x0_25', num_classes=7)  # a trainer checkpoint: classifier included
    ckpt = tmp / 'osnet_x0_25.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    return tmp, ckpt


def test_end_to_end_outputs_and_consistent_numbers(setup):
    tmp, ckpt = setup
    out = tmp / 'out'
    proc = run_module('osnet_zoo.evaluate', '--model', 'osnet_x0_25', '--checkpoint', ckpt, '--dataset', 'synthetic',
                      '--root', tmp / 'data', '--output', out, '--height', '128', '--width', '64', '--batch-size',
                      '32', '--workers', '0', '--flip', '--device', 'cpu', cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    for key in ('R1', 'R5', 'R10', 'R20', 'mAP', 'mINP'):
        assert key in proc.stdout
    summary = json.loads((out / 'results.json').read_text())
    res = summary['targets']['synthetic']
    assert summary['model'] == 'osnet_x0_25' and summary['flip'] and summary['input_size'] == [128, 64]
    # the default on the CPU, fp32: onnxruntime, or OpenVINO where installed and timed faster here
    assert 'device cpu, onnxruntime' in proc.stdout or 'device cpu, openvino' in proc.stdout
    cmc = np.array(res['cmc'])
    assert len(cmc) == 50 and np.all(np.diff(cmc) >= 0) and cmc[-1] <= 1
    assert res['rank1'] == cmc[0] and res['rank10'] == cmc[9] and 0 < res['mINP'] <= res['mAP'] <= 1
    assert res['num_valid_queries'] == res['num_query'] > 0
    for png in ('cmc.png', 'ranked_synthetic.png'):
        with Image.open(out / png) as im:
            assert im.format == 'PNG' and im.width > 200
    # the cached features give the same numbers again
    ds = synthetic_reid(tmp / 'data', **SMALL)
    qf = next(iter(load_file(str(out / 'features_synthetic_query.safetensors')).values()))
    gf = next(iter(load_file(str(out / 'features_synthetic_gallery.safetensors')).values()))
    assert qf.shape == (len(ds.query), 512) and gf.shape == (len(ds.gallery), 512)
    ids = [np.array([getattr(it, f) for it in getattr(ds, s)])
           for s, f in (('query', 'pid'), ('gallery', 'pid'), ('query', 'camid'), ('gallery', 'camid'))]
    again = evaluate_features(qf, gf, *ids)
    assert again['mAP'] == pytest.approx(res['mAP'], abs=1e-12) and np.array_equal(again['cmc'], cmc)
    # the ranked-results grid: one row per picked query, each cell framed green (match) or red
    with Image.open(out / 'ranked_synthetic.png') as im:
        px = np.asarray(im.convert('RGB'))
    green = np.all(px == (0, 170, 0), axis=-1).sum()
    red = np.all(px == (210, 0, 0), axis=-1).sum()
    assert red > 0 and green + red > 1000

    # second run, in this process: features come from the cache (no extraction), re-ranking on
    stamp = (out / 'features_synthetic_query.safetensors').stat().st_mtime_ns
    rerank = main(['--model', 'osnet_x0_25', '--checkpoint', str(ckpt), '--dataset', 'synthetic', '--root',
                   str(tmp / 'data'), '--output', str(out), '--height', '128', '--width', '64', '--flip', '--rerank',
                   '--workers', '0', '--distance', 'euclidean', '--device', 'cpu'])
    assert (out / 'features_synthetic_query.safetensors').stat().st_mtime_ns == stamp
    assert rerank == json.loads((out / 'results.json').read_text())
    assert rerank['rerank'] and rerank['distance'] == 'euclidean'
    assert 0 < rerank['targets']['synthetic']['mAP'] <= 1

    # the PyTorch model, asked for: its own cached features (the backend is part of the key), the same numbers
    eager = main(['--model', 'osnet_x0_25', '--checkpoint', str(ckpt), '--dataset', 'synthetic', '--root',
                  str(tmp / 'data'), '--output', str(out), '--height', '128', '--width', '64', '--flip',
                  '--workers', '0', '--device', 'cpu', '--backend', 'torch'])
    assert (out / 'features_synthetic_query.safetensors').stat().st_mtime_ns != stamp
    eager_qf = next(iter(load_file(str(out / 'features_synthetic_query.safetensors')).values()))
    assert (eager_qf - qf).abs().max() < 1e-4
    assert eager['targets']['synthetic']['mAP'] == pytest.approx(res['mAP'], abs=1e-6)


def test_clear_errors(setup, capsys):
    tmp, ckpt = setup
    with pytest.raises(FileNotFoundError) as e:
        main(['--model', 'osnet_x0_25', '--checkpoint', str(ckpt), '--dataset', 'market1501', '--root',
              str(tmp / 'empty'), '--output', str(tmp / 'o2'), '--device', 'cpu'])
    assert 'Expected layout' in str(e.value) and 'bounding_box_train' in str(e.value)
    with pytest.raises(ValueError, match='unknown model'):
        main(['--model', 'resnet50', '--checkpoint', str(ckpt), '--device', 'cpu'])
    with pytest.raises(SystemExit):
        main(['--help'])
    help_text = capsys.readouterr().out
    assert '--rerank' in help_text and '--flip' in help_text and 'ranked_' in help_text


def test_extract_features_matches_the_model_on_the_test_transform(setup):
    """Workers hand over uint8 crops normalised on the device: the features are those of the float
    pipeline (``build_test_transform``) fed to the model directly."""
    from osnet_zoo.data import build_dataset, build_test_transform, read_image
    from osnet_zoo.evaluation import embed
    tmp, _ = setup
    items = build_dataset('synthetic', tmp / 'data').gallery[:10]
    torch.manual_seed(1)
    model = timm.create_model('osnet_x0_25', num_classes=0).eval()
    transform = build_test_transform(128, 64)
    with torch.inference_mode():
        expected = model(torch.stack([transform(read_image(it.path)) for it in items]))
    for workers in (0, 2):
        got = embed(model, items, torch.device('cpu'), batch_size=4, workers=workers, size=(128, 64))
        assert got.shape == (10, 512) and (got - expected).abs().max() < 1e-4 * expected.abs().max()
    flipped = embed(model, [it.path for it in items], torch.device('cpu'), batch_size=4, workers=0, size=(128, 64),
                    flip=True)
    assert (flipped - expected).abs().max() > 1e-4  # the mirrored half changes the average
