"""Verification ("same person?"): the ROC figures equal scikit-learn's, the CLI records a threshold in the run folder
that FeatureExtractor reads and uses as recorded, and a threshold is refused for another model or preprocessing."""
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

import osnet_zoo  # noqa: F401
from osnet_zoo import FeatureExtractor, cli
from osnet_zoo.data import build_dataset, synthetic_reid
from osnet_zoo.evaluation.verification import (
    area_under_curve, eer_point, equal_error_rate, operating_point, pair_scores, roc_curve, verification_metrics,
)
from osnet_zoo.models.folder import write_model_folder
from osnet_zoo.verify import main
from conftest import run_module
from test_extractor import trained_looking

SMALL = dict(num_train_ids=2, num_test_ids=8, num_cameras=3, cameras_per_id=(2, 3), images_per_camera=(1, 2),
             num_distractors=3, num_junk=2)


def _scores(seed: int, n: int, ties: bool):
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.2
    scores = rng.normal(size=n) + 1.5 * same
    return (np.round(scores, 1) if ties else scores), same


@pytest.mark.parametrize('seed,n,ties', [(0, 2000, False), (1, 3000, True), (2, 50, True)])
def test_roc_tpr_at_fpr_eer_and_auc_equal_scikit_learns(seed, n, ties):
    scores, same = _scores(seed, n, ties)
    for drop in (False, True):
        ours = roc_curve(scores, same, drop_intermediate=drop)
        fpr, tpr, thresholds = sk_roc_curve(same, scores, drop_intermediate=drop)
        np.testing.assert_array_equal(ours.fpr, fpr)
        np.testing.assert_array_equal(ours.tpr, tpr)
        np.testing.assert_array_equal(ours.thresholds, thresholds)
    roc = roc_curve(scores, same)
    fpr, tpr, thresholds = sk_roc_curve(same, scores, drop_intermediate=False)
    assert area_under_curve(roc) == pytest.approx(roc_auc_score(same, scores), rel=1e-12)
    for target in (1e-2, 1e-3, 1e-4):
        point = operating_point(roc, target)
        if (~same).sum() * target < 1:  # fewer than 1/target negatives: no false match fits under the rate
            assert point is None
            assert 'unresolved' in verification_metrics(roc)['tpr_at_fpr'][f'{target:.0e}']['note']
            continue
        best = np.flatnonzero(fpr <= target)[-1]
        assert point.tpr == tpr[best] and point.fpr == fpr[best] <= target and point.score == thresholds[best]
        # the recorded threshold accepts exactly the point's pairs
        accepted = scores >= point.threshold
        assert (accepted & same).sum() == point.true_matches and (accepted & ~same).sum() == point.false_matches
    # EER: the crossing of FNR and FPR on scikit-learn's polyline (FNR - FPR falls strictly along it)
    assert equal_error_rate(roc) == pytest.approx(np.interp(0.0, -(1 - tpr - fpr), fpr), abs=1e-12)
    near = eer_point(roc)
    gaps = np.abs(1 - tpr - fpr)
    assert abs(1 - near.tpr - near.fpr) == gaps.min()


def test_pair_scores_query_gallery_and_within_a_split():
    feats = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    scores, same = pair_scores(feats, [5, 5, -1])  # the junk image (pid -1) forms no pair
    assert same.tolist() == [True] and scores == pytest.approx([0.0])
    scores, same = pair_scores(feats[:2], [1, 2], feats, [1, 0, 2])
    assert same.tolist() == [True, False, False, False, False, True]
    assert scores == pytest.approx([1, 0, 2 ** -0.5, 0, 1, 2 ** -0.5])
    with pytest.raises(ValueError, match='other_features: 3 rows, but 2 identities'):
        pair_scores(feats[:2], [1, 2], feats, [1, 0])


def test_bad_pairs_one_line_each():
    with pytest.raises(ValueError, match='no same-person pairs among the 3 pairs'):
        roc_curve([0.1, 0.2, 0.3], [False, False, False])
    with pytest.raises(ValueError, match='no different-person pairs'):
        roc_curve([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match='between 0 and 1'):
        operating_point(roc_curve([0.1, 0.2], [True, False]), 1.5)


def _run_folder(path, seed: int):
    torch.manual_seed(seed)
    model = trained_looking(timm.create_model('osnet_x0_25', num_classes=0))  # other seed: other conv weights
    write_model_folder(model.state_dict(), 'osnet_x0_25', 'mine', path / 'final', input_size=(64, 32),
                       distance='cosine')
    return path


@pytest.fixture(scope='module')
def verified(tmp_path_factory):
    """A training run's folder (a model folder in final/), a small synthetic set, and the CLI run on them."""
    tmp = tmp_path_factory.mktemp('verify')
    synthetic_reid(tmp / 'data', **SMALL)
    run = _run_folder(tmp / 'run', seed=0)
    proc = run_module('osnet_zoo.verify', '--checkpoint', run, '--dataset', 'synthetic', '--root', tmp / 'data',
                      '--target-fpr', '1e-2', '--device', 'cpu', '--batch-size', '16', '--workers', '1', cwd=tmp,
                      check=True)
    return tmp, run, proc


def test_cli_writes_the_threshold_figures_and_pictures(verified):
    tmp, run, proc = verified
    record = json.loads((run / 'verification.json').read_text())
    assert record['chosen_at'] == 'fpr<=0.01' and record['model']['architecture'] == 'osnet_x0_25'
    assert record['preprocessing']['input_size'] == [3, 64, 32] and record['preprocessing']['resize'] == 'antialias'
    metrics, point = record['metrics'], record['operating_point']
    assert point == metrics['tpr_at_fpr']['1e-02'] and point['fpr'] <= 0.01
    assert metrics['num_negative'] < 1000  # too few for 1e-3 and 1e-4: said so, in the file and the output
    assert metrics['tpr_at_fpr']['1e-03']['tpr'] is None and 'unresolved' in metrics['tpr_at_fpr']['1e-04']['note']
    assert f"TPR at FPR 0.001: unresolved: needs >= 1,000 different-person pairs, the data has " \
           f"{metrics['num_negative']:,}" in proc.stdout
    assert f"EER {100 * metrics['eer']:.2f}%" in proc.stdout
    for name in ('verification_roc.png', 'verification_scores.png'):
        with Image.open(run / name) as im:
            im.load()
            assert im.format == 'PNG' and im.width > 300 and im.height > 200
    rows = (run / 'verification_roc.csv').read_text().splitlines()
    assert rows[0] == 'threshold,fpr,tpr,false_matches,true_matches' and rows[1].startswith('inf,0.0,0.0,0,0')
    assert rows[-1].endswith(f",1.0,1.0,{metrics['num_negative']},{metrics['num_positive']}")


def test_feature_extractor_uses_the_recorded_threshold(verified):
    tmp, run, _ = verified
    record = json.loads((run / 'verification.json').read_text())
    extractor = FeatureExtractor(checkpoint_path=run, device='cpu', batch_size=16).load_threshold(run)
    assert extractor.threshold == record['threshold']
    ds = build_dataset('synthetic', tmp / 'data')
    query = [it for it in ds.query if it.pid >= 0]
    gallery = [it for it in ds.gallery if it.pid >= 0]
    qf = extractor([it.path for it in query])
    gf = extractor([it.path for it in gallery])
    accepted = extractor.match(qf, gf)
    same = torch.tensor([[q.pid == g.pid for g in gallery] for q in query])
    point = record['operating_point']  # the pairs the CLI accepted, accepted again
    assert int((accepted & same).sum()) == point['true_matches'] > 0
    assert int((accepted & ~same).sum()) == point['false_matches']
    # same_person on crops (file paths) and on embeddings: the best same pair passes, the best different pair
    # does as recorded (accepted only if the threshold lets a false match through)
    scores = extractor.similarity(qf, gf)
    best_same = divmod(int(torch.where(same, scores, -2).argmax()), len(gallery))
    best_other = divmod(int(torch.where(~same, scores, -2).argmax()), len(gallery))
    assert extractor.same_person(query[best_same[0]].path, gallery[best_same[1]].path) is True
    assert extractor.same_person(qf[best_same[0]], gf[best_same[1]]) is True
    assert extractor.same_person(query[best_other[0]].path, gallery[best_other[1]].path) is (point['false_matches'] > 0)
    pairwise = extractor.same_person(qf[:3], gf[:3])
    assert pairwise.tolist() == [bool(accepted[i, i]) for i in range(3)]


def test_threshold_refused_for_another_model_or_preprocessing(verified, tmp_path):
    tmp, run, _ = verified
    other = _run_folder(tmp_path / 'other', seed=1)
    with pytest.raises(ValueError, match=r'chosen for osnet_x0_25 \(weights [0-9a-f]{12}\), not for this model') as e:
        FeatureExtractor(checkpoint_path=other, device='cpu', backend='torch').load_threshold(run)
    assert str(run / 'verification.json') in str(e.value) and '\n' not in str(e.value)
    same_weights = FeatureExtractor(checkpoint_path=run, device='cpu', backend='torch')
    with pytest.raises(ValueError, match=r'other preprocessing \(input_size differ\).*input 64x32.*input 128x64'):
        FeatureExtractor(checkpoint_path=run, device='cpu', backend='torch',
                         preprocessing={'input_size': (3, 128, 64)}).load_threshold(run)
    with pytest.raises(ValueError, match=r'other preprocessing \(resize differ\)'):
        FeatureExtractor(checkpoint_path=run, device='cpu', backend='torch', resize='cv2').load_threshold(run)
    with pytest.raises(ValueError, match='no threshold loaded'):
        same_weights.same_person(np.zeros((64, 32, 3), np.uint8), np.zeros((64, 32, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match='holds no verification.json'):
        same_weights.load_threshold(tmp_path)
    assert same_weights.load_threshold(run / 'verification.json').threshold is not None


def _error(capsys, argv):
    assert cli.run(lambda: main(argv)) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('error: ') and '\r' not in err, err  # before any progress bar
    return err


def _market_layout(root, splits):
    """A tiny Market-1501 folder: {split folder: [(pid, camera)]}, one generated picture per entry."""
    for folder, entries in splits.items():
        (root / folder).mkdir(parents=True)
        for i, (pid, cam) in enumerate(entries):
            colour = (40 * pid % 256, 90 * cam % 256, 17 * i % 256)
            Image.new('RGB', (32, 64), colour).save(root / folder / f'{pid:04d}_c{cam}s1_{i:06d}_01.jpg')
    return root


def test_cli_bad_inputs_one_line_each(verified, capsys, tmp_path):
    tmp, run, _ = verified
    common = ['--checkpoint', str(run), '--root', str(tmp / 'data'), '--device', 'cpu', '--output',
              str(tmp_path / 'out')]
    assert '--target-fpr must be a false-match rate between 0 and 1' in _error(capsys, [*common, '--target-fpr', '2'])
    assert '--target-fpr must be' in _error(capsys, [*common, '--target-fpr', '0'])
    err = _error(capsys, [*common, '--target-fpr', '1e-4'])
    assert '--target-fpr 0.0001 needs at least 10,000 different-person pairs' in err and '--eer' in err
    # a gallery of one image per identity: no same-person pair among its own pairs
    root = _market_layout(tmp_path / 'market', {'bounding_box_train': [(3, 1), (3, 2)], 'query': [(1, 1), (2, 1)],
                                                'bounding_box_test': [(1, 2), (2, 2)]})
    err = _error(capsys, ['--checkpoint', str(run), '--dataset', 'market1501', '--root', str(root), '--pairs',
                          'gallery', '--eer', '--device', 'cpu', '--output', str(tmp_path / 'out')])
    assert '--dataset market1501, gallery pairs: no same-person pairs among the 1 pairs' in err
    err = _error(capsys, ['--model', 'osnet_x0_25', '--no-pretrained', '--root', str(tmp / 'data'), '--device',
                          'cpu'])
    assert 'give --output' in err
    assert not (tmp_path / 'out').exists()


def test_cli_on_a_csv_listing_of_generated_images(verified, tmp_path):
    """A user's own images as a CSV listing (osnet_zoo.data.datasets.listing): the pairs are counted from it."""
    from osnet_zoo.data.datasets.listing import read_listing
    _, run, _ = verified
    rows = ['path,pid,camid,split']
    rng = np.random.default_rng(0)
    for person in ('ann', 'bob', 'cid', 'dee', 'eve'):
        colour = rng.integers(0, 256, 3)
        for split, cams in (('train', (0, 1)), ('query', (0,)), ('gallery', (1, 2, 1))):
            for k, cam in enumerate(cams):
                noise = rng.integers(-30, 30, (48, 24, 3))
                pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
                name = f'images/{person}_{split}_{k}.png'
                (tmp_path / 'images').mkdir(exist_ok=True)
                Image.fromarray(pixels).save(tmp_path / name)
                rows.append(f'{name},{person},{cam},{split}')
    (tmp_path / 'mine.csv').write_text('\n'.join(rows) + '\n')
    record = main(['--checkpoint', str(run), '--dataset', str(tmp_path / 'mine.csv'), '--eer', '--device', 'cpu',
                   '--output', str(tmp_path / 'out'), '--workers', '0'])
    ds = read_listing(tmp_path / 'mine.csv')
    same = sum(q.pid == g.pid for q in ds.query for g in ds.gallery)
    assert (record['metrics']['num_positive'], record['metrics']['num_negative']) == (same, 5 * 15 - same) == (15, 60)
    assert record['chosen_at'] == 'eer' and record['data']['dataset'] == str(tmp_path / 'mine.csv')
    assert json.loads((tmp_path / 'out' / 'verification.json').read_text()) == record
