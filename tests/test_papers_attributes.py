"""PA-100K attribute recognition (ICCV 2019 Sec. 4.2, Table 7, Fig. 7) on a tiny copy of the released layout."""
import json
import math

import pytest
import torch

from osnet_zoo.data.datasets import DatasetLayoutError, pa100k
from osnet_zoo.metrics.attributes import attribute_metrics
from osnet_zoo.train.__main__ import main as train_main
from osnet_zoo.engine.losses import WeightedMultiLabelLoss, prediction_entropy
from osnet_zoo.visualize import main as visualize_main

from conftest import run_module
from task_layouts import PA100K_ATTRIBUTES, make_pa100k

pytest.importorskip('scipy')


def test_attribute_metrics_match_hand_computed_values():
    labels = torch.tensor([[1., 0., 1.], [0., 1., 0.]])
    probs = torch.tensor([[0.9, 0.6, 0.2], [0.1, 0.7, 0.4]])  # predicted sets {0, 1} and {1}
    r = attribute_metrics(probs, labels)
    # mA: attribute 0 TPR 1 TNR 1; attribute 1 TPR 1 TNR 0; attribute 2 TPR 0 TNR 1
    assert r['per_attribute_mA'] == pytest.approx([1.0, 0.5, 0.5])
    assert r['mA'] == pytest.approx(2 / 3)
    # image 0: |Y∩P| = 1, |Y∪P| = 3, |P| = 2, |Y| = 2; image 1: all 1
    assert r['accuracy'] == pytest.approx((1 / 3 + 1) / 2)
    assert r['precision'] == pytest.approx(0.75)
    assert r['recall'] == pytest.approx(0.75)
    assert r['f1'] == pytest.approx(0.75)
    # an image with nothing predicted counts 0 for precision, not a division by zero; so does the missing
    # negative of attribute 0 and the missing positive of attribute 1: mA = ((0 + 0) / 2 + (0 + 1) / 2) / 2
    r = attribute_metrics(torch.tensor([[0.1, 0.1]]), torch.tensor([[1., 0.]]))
    assert r['precision'] == 0 and r['recall'] == 0 and r['f1'] == 0 and r['mA'] == pytest.approx(0.25)
    with pytest.raises(ValueError, match='images, attributes'):
        attribute_metrics(torch.zeros(2, 3), torch.zeros(2, 4))


def test_weighted_multilabel_loss_and_entropy_match_hand_computed_values():
    loss = WeightedMultiLabelLoss(torch.tensor([0.5, 0.0]))
    value = loss(torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]]))
    expected = (math.exp(-0.5) * math.log(2) + 1.0 * math.log(1 + math.exp(2))) / 2
    assert value.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match='positive_ratio'):
        WeightedMultiLabelLoss(torch.tensor([1.5]))
    h = prediction_entropy(torch.tensor([[0.0, 0.0], [0.0, math.log(3)]]))
    assert h.item() == pytest.approx((math.log(2) - (0.25 * math.log(0.25) + 0.75 * math.log(0.75))) / 2, rel=1e-6)


def test_pa100k_reader_reads_the_release_layout(tmp_path):
    make_pa100k(tmp_path, sizes=(6, 3, 4))
    ds = pa100k(tmp_path)
    assert ds.classes == PA100K_ATTRIBUTES and ds.task == 'attributes'
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 3, 4)
    assert ds.train.labels.shape == (6, 26) and set(ds.train.labels.unique().tolist()) <= {0.0, 1.0}
    assert ds.test.paths[0].endswith('000010.jpg')


def test_pa100k_reader_names_what_is_wrong(tmp_path):
    with pytest.raises(DatasetLayoutError, match='annotation.mat'):
        pa100k(tmp_path)
    base = make_pa100k(tmp_path, sizes=(4, 2, 2))
    (base / 'data' / '000007.jpg').unlink()
    with pytest.raises(DatasetLayoutError, match=r'1 test images .* 000007.jpg'):
        pa100k(tmp_path)
    from scipy.io import loadmat, savemat
    mat = {k: v for k, v in loadmat(str(base / 'annotation.mat')).items() if not k.startswith('__')}
    mat['val_label'] = mat['val_label'][:, :5]
    savemat(str(base / 'annotation.mat'), mat)
    with pytest.raises(DatasetLayoutError, match=r'val_label has shape \(2, 5\)'):
        pa100k(tmp_path)


def test_attributes_recipe_trains_one_epoch_and_draws_fig7(tmp_path):
    make_pa100k(tmp_path / 'data', sizes=(16, 4, 6))
    out = tmp_path / 'run'
    results = train_main(['--recipe', 'attributes_pa100k', '--root', str(tmp_path / 'data'), '--epochs', '1',
                          '--batch-size', '8', '--height', '64', '--width', '32', '--model', 'osnet_x0_25',
                          '--output', str(out)])
    written = json.loads((out / 'results.json').read_text())['targets']
    for key in ('mA', 'accuracy', 'precision', 'recall', 'f1'):
        assert 0 <= written['pa100k'][key] <= 1
        assert written['pa100k'][key] == pytest.approx(results['pa100k'][key])
    config = json.loads((out / 'config.json').read_text())
    assert config['task'] == 'attributes' and config['lr'] == 0.065 and config['stepsize'] == [30, 40]
    assert (out / 'final' / 'model.safetensors').is_file()
    fig = visualize_main(['attributes', '--run', str(out), '--root', str(tmp_path / 'data'), '--max-images', '3',
                          '--device', 'cpu', '--output', str(tmp_path / 'fig7')])
    assert (tmp_path / 'fig7' / 'attributes.png').is_file() and len(fig['images']) == 3
    first = fig['images'][0]['attributes']
    assert first and all(a['correct'] == (a['probability'] >= 0.5) for a in first)
    # a bad --run is one line on stderr, no traceback
    bad = run_module('osnet_zoo.visualize', 'attributes', '--run', tmp_path / 'x')
    assert bad.returncode == 1 and bad.stderr.startswith('error: --run') and 'Traceback' not in bad.stderr
