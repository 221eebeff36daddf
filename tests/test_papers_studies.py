"""The training studies of the OSNet paper's supplementary (Table 12): dataset statistics for normalisation,
mean/std as recipe keys and options, the entropy-maximisation regulariser."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from osnet_zoo.data.__main__ import main as data_main
from osnet_zoo.data.stats import channel_stats
from osnet_zoo.data import make_synthetic_reid
from osnet_zoo.train.__main__ import get_args_parser, main as train_main
from osnet_zoo.engine.recipes import resolve_config

from conftest import run_module
from task_layouts import make_cifar10


def test_channel_stats_match_hand_computed_values():
    a = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    a[:, 0] = 255            # red 1.0 everywhere
    b = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    b[:, 1, 0, :] = 255      # green 1.0 on the top row
    stats = channel_stats([a, b])
    # red: four 1s and four 0s -> mean 0.5, std 0.5; green: two 1s of eight -> mean 0.25, std sqrt(0.25 * 0.75)
    assert stats['mean'] == pytest.approx([0.5, 0.25, 0.0])
    assert stats['std'] == pytest.approx([0.5, (0.25 * 0.75) ** 0.5, 0.0])
    assert stats['pixels_per_channel'] == 8


def test_data_stats_cli_on_a_reid_and_a_cifar_layout(tmp_path):
    root = tmp_path / 'data'
    base = root / 'Market-1501-v15.09.15'
    for split in ('bounding_box_train', 'query', 'bounding_box_test'):
        (base / split).mkdir(parents=True)
    colours = [(255, 0, 0), (0, 0, 255)]
    for i, colour in enumerate(colours):  # two plain training images, one red and one blue
        Image.new('RGB', (8, 16), colour).save(base / 'bounding_box_train' / f'000{i + 1}_c1s1_0000{i}_00.png')
    Image.new('RGB', (8, 16), (9, 9, 9)).save(base / 'query' / '0003_c1s1_00003_00.png')
    Image.new('RGB', (8, 16), (9, 9, 9)).save(base / 'bounding_box_test' / '0003_c2s1_00004_00.png')
    result = data_main(['stats', '--dataset', 'market1501', '--root', str(root), '--height', '16', '--width', '8',
                        '--output', str(tmp_path / 'stats.json')])
    assert result['mean'] == pytest.approx([0.5, 0.0, 0.5]) and result['std'] == pytest.approx([0.5, 0.0, 0.5])
    assert json.loads((tmp_path / 'stats.json').read_text())['images'] == 2
    make_cifar10(root, per_batch=2, test=1)
    cifar = data_main(['stats', '--dataset', 'cifar10', '--root', str(root), '--height', '32', '--width', '32'])
    pixels = torch.cat([torch.from_numpy(np.fromfile(root / 'cifar10' / 'cifar-10-batches-bin' / f'data_batch_{i}.bin',
                                                     dtype=np.uint8).reshape(-1, 3073)[:, 1:]) for i in range(1, 6)])
    expected = pixels.reshape(-1, 3, 1024).double().div(255).transpose(0, 1).reshape(3, -1)
    assert cifar['mean'] == pytest.approx(expected.mean(1).tolist())
    assert cifar['std'] == pytest.approx(expected.std(1, unbiased=False).tolist())
    bad = run_module('osnet_zoo.data', 'stats', '--dataset', 'nope', '--root', root)
    assert bad.returncode == 1 and "--dataset 'nope': unknown dataset" in bad.stderr and 'Traceback' not in bad.stderr


def test_mean_std_options_are_checked_and_recorded():
    cfg = resolve_config(get_args_parser().parse_args(['--mean', '0.4', '0.5', '0.6', '--std', '0.2', '0.2', '0.3']))
    assert cfg.mean == [0.4, 0.5, 0.6] and cfg.std == [0.2, 0.2, 0.3] and cfg.to_dict()['mean'] == [0.4, 0.5, 0.6]
    assert resolve_config(get_args_parser().parse_args([])).mean == pytest.approx([0.485, 0.456, 0.406])
    with pytest.raises(ValueError, match='--std .*each above 0'):
        resolve_config(get_args_parser().parse_args(['--std', '0', '0.2', '0.2']))
    with pytest.raises(ValueError, match='--mean .*three numbers'):
        resolve_config(get_args_parser().parse_args(['--mean', '120', '110', '100']))


def test_entropy_regulariser_and_dataset_statistics_in_a_reid_run(tmp_path):
    root = tmp_path / 'data'
    make_synthetic_reid(root / 'Market-1501-v15.09.15', num_train_ids=8, num_test_ids=6, height=64, width=32,
                        num_distractors=1, num_junk=1, seed=2)
    out = tmp_path / 'run'
    train_main(['--sources', 'market1501', '--targets', 'market1501', '--root', str(root), '--height', '64',
                '--width', '32', '--batch-size', '8', '--epochs', '1', '--max-steps-per-epoch', '1',
                '--entropy-weight', '0.5', '--mean', '0.3', '0.3', '0.3', '--std', '0.25', '0.25', '0.25',
                '--output', str(out)])
    config = json.loads((out / 'config.json').read_text())
    assert config['entropy_weight'] == 0.5 and config['mean'] == [0.3, 0.3, 0.3] and config['std'] == [0.25] * 3
    first = json.loads((out / 'metrics.jsonl').read_text().splitlines()[0])
    # one step of one network: loss = L_ID - 0.5 * H, with 0 < H <= ln(8 identities)
    assert 0 < first['loss_entropy'] <= np.log(8) + 1e-6
    assert first['loss'] == pytest.approx(first['loss_ce'] - 0.5 * first['loss_entropy'], rel=1e-5)
    final = json.loads((out / 'final' / 'config.json').read_text())['pretrained_cfg']
    assert final['mean'] == [0.3, 0.3, 0.3] and final['std'] == [0.25] * 3  # the model says how to feed it
