"""The Table 4 protocol end to end on synthetic VIPeR / CUHK01 layouts: per-split fine-tuning from a
pre-trained run, mean/std summary, resume, --init-checkpoint, --model-args, --split-id options."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from osnet_zoo.data.synthetic_small import make_synthetic_cuhk01, make_synthetic_viper
from osnet_zoo.train import resolve_config
from osnet_zoo.train import protocol
from osnet_zoo.train.__main__ import get_args_parser
from osnet_zoo.train.__main__ import main as train_main
from conftest import run_module

TINY = ['--model', 'osnet_x0_25', '--epochs', '1', '--height', '64', '--width', '32', '--batch-size', '4',
        '--max-steps-per-epoch', '1', '--fixbase-epochs', '0', '--device', 'cpu', '--workers', '0']


@pytest.fixture(scope='module')
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('small')
    make_synthetic_viper(root, num_ids=8, height=64, width=32)     # 4 train / 4 test identities
    make_synthetic_cuhk01(root, num_ids=10, height=64, width=32)   # 5 train / 5 test identities
    return root


@pytest.fixture(scope='module')
def cuhk01_protocol(root, tmp_path_factory):
    """The CUHK01 protocol, first split, from random weights: its run is the 'pre-trained' network below."""
    out = tmp_path_factory.mktemp('cuhk01')
    summary = protocol.main(['--dataset', 'cuhk01', '--init-checkpoint', 'none', '--root', str(root),
                             '--output', str(out), '--max-splits', '1', '--device', 'cpu', *TINY[:-4]])
    return out, summary


def _aggregate_by_hand(runs, key):
    v = np.array([r[key] for r in runs])
    return v.mean(), v.std()


def test_cuhk01_protocol_one_split(cuhk01_protocol):
    out, summary = cuhk01_protocol
    assert summary['num_splits'] == 1 and not summary['complete'] and len(summary['runs']) == 1
    run = summary['runs'][0]
    assert run['split_id'] == 0 and run['targets']['cuhk01']['num_query'] > 0
    # the protocol's evaluation of the reloaded final model equals the training's own final evaluation, in
    # the same results schema
    trained = json.loads((out / 'split_00' / 'results.json').read_text())
    assert run.keys() - {'split_id', 'options'} == trained.keys()
    assert run['targets']['cuhk01'].keys() == trained['targets']['cuhk01'].keys()
    run, trained = run['targets']['cuhk01'], trained['targets']['cuhk01']
    assert run['rank1'] == pytest.approx(trained['rank1']) and run['mAP'] == pytest.approx(trained['mAP'])
    assert json.loads((out / 'summary.json').read_text())['aggregate']['num_runs'] == 1


def test_viper_protocol_summary_and_resume(root, cuhk01_protocol, tmp_path, capsys):
    init = cuhk01_protocol[0] / 'split_00'
    args = ['--dataset', 'viper', '--init-checkpoint', str(init), '--root', str(root), '--output', str(tmp_path),
            '--max-splits', '2', *TINY[:-4]]
    summary = protocol.main(args)
    assert [(r['split_id'], r['options']['direction']) for r in summary['runs']] == [
        (0, 'a2b'), (0, 'b2a'), (1, 'a2b'), (1, 'b2a')]
    runs = [r['targets']['viper'] for r in summary['runs']]
    # the two directions really swap query and gallery cameras; the splits differ in their test identities
    assert all(r['num_query'] == 4 and r['num_gallery'] == 4 for r in runs)
    for key in ('rank1', 'rank5', 'rank10', 'mAP'):
        mean, std = _aggregate_by_hand(runs, key)
        assert summary['aggregate'][key]['mean'] == pytest.approx(mean)
        assert summary['aggregate'][key]['std'] == pytest.approx(std)
    on_disk = json.loads((tmp_path / 'summary.json').read_text())
    assert on_disk['aggregate'] == summary['aggregate'] and on_disk['num_splits'] == 2
    cfg = json.loads((tmp_path / 'split_01' / 'config.json').read_text())
    assert cfg['split_id'] == 1 and cfg['sources'] == ['viper'] and cfg['init_checkpoint'] == str(init)

    # a second call trains nothing and re-evaluates nothing
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob('*') if p.is_file() and p.name != 'summary.json'}
    capsys.readouterr()
    again = protocol.main(args)
    printed = capsys.readouterr().out
    assert printed.count('skipped') == 4 and 'training in' not in printed
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again['aggregate'] == summary['aggregate']


@pytest.mark.parametrize('content', [pytest.param('{}', id='empty_object'), pytest.param('[]', id='list'),
                                     pytest.param('{"rank1": 0.5, "rank5": 0.', id='truncated'),
                                     pytest.param('{"targets": {"cuhk01": {"rank1": "high", "rank5": 1, "rank10": 1, '
                                                  '"mAP": 1}}}', id='metric_not_a_number')])
def test_damaged_result_of_a_finished_split_is_evaluated_again(content, root, cuhk01_protocol, tmp_path, capsys):
    """A finished split whose result file is damaged or edited: evaluated again (saying so), never a crash."""
    out = tmp_path / 'protocol'
    shutil.copytree(cuhk01_protocol[0], out)
    result = out / 'split_00' / 'result_test.json'
    good = json.loads(result.read_text())['targets']['cuhk01']
    result.write_text(content)
    capsys.readouterr()
    summary = protocol.main(['--dataset', 'cuhk01', '--init-checkpoint', 'none', '--root', str(root),
                             '--output', str(out), '--max-splits', '1', '--device', 'cpu', *TINY[:-4]])
    printed = capsys.readouterr().out
    assert f'{result} is not a result document' in printed and 'training in' not in printed
    again = json.loads(result.read_text())['targets']['cuhk01']
    assert again['rank1'] == pytest.approx(good['rank1']) and again['mAP'] == pytest.approx(good['mAP'])
    assert summary['runs'][0]['targets']['cuhk01']['mAP'] == pytest.approx(good['mAP'])


def test_init_checkpoint_weights_are_the_inits(root, cuhk01_protocol, tmp_path):
    """lr 0: the fine-tuned backbone must be the init's exactly; the classifier (5 -> 4 classes) is new."""
    init = cuhk01_protocol[0] / 'split_00'
    train_main(['--recipe', 'small_finetune', '--sources', 'viper', '--targets', 'viper', '--root', str(root),
                '--init-checkpoint', str(init), '--lr', '0', '--weight-decay', '0', '--output', str(tmp_path),
                *TINY])
    before = load_file(str(init / 'final' / 'model.safetensors'))
    after = load_file(str(tmp_path / 'final' / 'model.safetensors'))
    convs = [k for k in before if k.endswith('.weight') and before[k].dim() == 4]
    assert len(convs) > 20
    for k in convs:
        assert torch.equal(before[k], after[k]), k
    assert before['classifier.weight'].shape[0] == 5 and after['classifier.weight'].shape[0] == 4
    # a training checkpoint.pth works as well as the final folder
    train_main(['--recipe', 'small_finetune', '--root', str(root), '--init-checkpoint',
                str(init / 'checkpoint.pth'), '--lr', '0', '--weight-decay', '0', '--output', str(tmp_path / 'b'),
                *TINY])
    again = load_file(str(tmp_path / 'b' / 'final' / 'model.safetensors'))
    assert all(torch.equal(before[k], again[k]) for k in convs)


def test_model_args_recorded_and_built(root, tmp_path):
    train_main(['--sources', 'viper', '--targets', 'viper', '--root', str(root), '--split-id', '3',
                '--dataset-option', 'direction=b2a', '--model-args', 'num_streams=1', '--output', str(tmp_path),
                *TINY])
    cfg = json.loads((tmp_path / 'config.json').read_text())
    assert cfg['model_args'] == {'num_streams': 1} and cfg['split_id'] == 3
    assert cfg['dataset_options'] == {'direction': 'b2a'}
    final = json.loads((tmp_path / 'final' / 'config.json').read_text())
    assert final['model_args']['num_streams'] == 1 and final['architecture'] == 'osnet_x0_25'
    keys = load_file(str(tmp_path / 'final' / 'model.safetensors'))
    assert any('streams.0.' in k for k in keys) and not any('streams.1.' in k for k in keys)


def test_option_parsing_and_errors(root, tmp_path):
    cfg = resolve_config(get_args_parser().parse_args(['--recipe', 'mix4']))
    assert cfg.sources == ['market1501', 'cuhk03', 'dukemtmcreid', 'msmt17'] and cfg.citation
    cfg = resolve_config(get_args_parser().parse_args(['--recipe', 'small_finetune']))
    assert cfg.init_checkpoint == 'runs/mix4' and cfg.citation
    with pytest.raises(ValueError, match='--split-id / --dataset-option apply to'):
        train_main(['--split-id', '1', '--output', str(tmp_path / 'a'), *TINY])
    with pytest.raises(ValueError, match='--dataset-option colour'):
        train_main(['--sources', 'viper', '--targets', 'viper', '--root', str(root), '--dataset-option',
                    'colour=1', '--output', str(tmp_path / 'b'), *TINY])
    with pytest.raises(ValueError, match='--model-args'):
        train_main(['--sources', 'viper', '--targets', 'viper', '--root', str(root), '--model-args', 'bogus=1',
                    '--output', str(tmp_path / 'c'), *TINY])
    with pytest.raises(ValueError, match='--split-id is set by the protocol'):
        protocol.main(['--dataset', 'viper', '--root', str(root), '--output', str(tmp_path / 'd'), '--split-id', '2'])


def test_cli_missing_init_checkpoint_is_one_line(root, tmp_path):
    p = run_module('osnet_zoo.train.protocol', '--dataset', 'viper', '--root', root, '--output', tmp_path,
                   '--init-checkpoint', tmp_path / 'no_mix4', *TINY)
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith('error: --init-checkpoint ') and 'Traceback' not in p.stderr
    assert not (tmp_path / 'split_00' / 'checkpoint.pth').exists()
