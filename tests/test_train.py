"""Training end to end: real subprocesses on a small dataset in the Market1501 layout.

Covers: learning far above chance, a real 2-process torchrun (gloo) run whose replicas agree, a run killed
with SIGKILL and resumed that ends with the metrics of an uninterrupted run, NaN stopping with the last
good checkpoint intact, recipes and overrides.
"""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from osnet_zoo.data import make_synthetic_reid
from osnet_zoo.engine import load_training_state
from osnet_zoo.inference.model import build_embedding_model
from osnet_zoo.train import list_recipes, resolve_config
from osnet_zoo.train.__main__ import get_args_parser
from conftest import child_env, run_module, start_python

# Small and fast: 64x32 crops, osnet_x0_25.
TINY = ['--sources', 'market1501', '--targets', 'market1501', '--model', 'osnet_x0_25', '--height', '64',
        '--width', '32', '--batch-size', '16', '--lr', '0.003', '--eval-freq', '0', '--workers', '0',
        '--device', 'cpu']


@pytest.fixture(scope='module')
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('data')
    make_synthetic_reid(root / 'Market-1501-v15.09.15', num_train_ids=32, num_test_ids=16, height=64, width=32,
                        num_distractors=5, num_junk=2, seed=3)
    return root


def test_recipes_ship_with_sources_and_override():
    assert {'synthetic', 'scratch', 'imagenet_finetune', 'cross_domain', 'cross_domain_msmt17',
            'practitioners'} <= set(list_recipes())
    for name in list_recipes():
        args = get_args_parser().parse_args(['--recipe', name])
        cfg = resolve_config(args)
        assert cfg.citation, f'recipe {name} must cite its source'
    scratch = resolve_config(get_args_parser().parse_args(['--recipe', 'scratch', '--lr', '0.01']))
    assert scratch.lr == 0.01 and scratch.stepsize == [150, 225, 300] and scratch.optim == 'sgd'
    ft = resolve_config(get_args_parser().parse_args(['--recipe', 'imagenet_finetune']))
    assert ft.fixbase_epochs == 10 and ft.amsgrad and ft.lr_scheduler == 'cosine'
    with pytest.raises(FileNotFoundError, match='nope'):
        resolve_config(get_args_parser().parse_args(['--recipe', 'nope']))


def test_learns_far_above_chance(tiny_root, tmp_path):
    out = tmp_path / 'run'
    r = run_module('osnet_zoo.train', '--root', tiny_root, '--output', out, *TINY, '--epochs', '10', '--eval-freq',
                   '1', '--tensorboard')
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / 'results.json').read_text())['targets']['market1501']
    assert res['rank1'] > 3 * res['chance_rank1'], res
    log = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    losses = [r['loss'] for r in log if r['kind'] == 'train']
    assert losses[-1] < 0.5 * losses[0]
    evals = [r for r in log if r['kind'] == 'eval']
    assert len(evals) == 10 and evals[-1]['mAP'] > evals[0]['mAP'] + 0.05, evals
    assert (out / 'curves.png').stat().st_size > 10_000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(out / 'tensorboard')).Reload()
    assert [e.value for e in events.Scalars('train/loss')] == pytest.approx(losses, rel=1e-5)
    assert [e.value for e in events.Scalars('eval/market1501/mAP')] == pytest.approx([e['mAP'] for e in evals])
    final = out / 'final'
    assert {'model.safetensors', 'config.json', 'README.md'} <= {p.name for p in final.iterdir()}
    import timm
    reloaded = timm.create_model(f'local-dir:{final}', pretrained=True)  # what the Hub loader reads
    assert reloaded.num_classes == 32  # the training identities


def test_curves_show_one_evaluation_on_whole_epochs():
    """One epoch and one evaluation (the README's main job): the epoch axis is whole epochs around the point
    (not 0.96..1.04), percentages on 0..100, the evaluated values written in the legend."""
    import matplotlib.pyplot as plt
    from osnet_zoo.train.curves import curves_figure

    records = [{'kind': 'train', 'epoch': 1, 'loss': 4.59, 'loss_ce': 4.59, 'acc': 0.0},
               {'kind': 'eval', 'epoch': 1, 'target': 'synthetic', 'rank1': 0.0986, 'mAP': 0.0946}]
    fig = curves_figure(records)
    try:
        for ax in fig.axes:
            assert ax.get_xlim() == (0.5, 1.5)
            ticks = [t for t in ax.get_xticks() if 0.5 <= t <= 1.5]
            assert ticks == [1.0], ticks
        loss, acc, evaluation = fig.axes
        assert acc.get_ylim() == evaluation.get_ylim() and acc.get_ylim()[0] < 0 < 100 < acc.get_ylim()[1]
        assert [t.get_text() for t in evaluation.get_legend().get_texts()] == ['synthetic R1: 9.9',
                                                                               'synthetic mAP: 9.5']
        fig.clear()
        fig = curves_figure(records[:1] + [dict(records[1], epoch=e) for e in (2, 4)]
                            + [dict(records[0], epoch=e) for e in (2, 3, 4)])
        assert fig.axes[2].get_xlim() == (0.5, 4.5)
        assert all(float(t).is_integer() for t in fig.axes[2].get_xticks())
        assert fig.axes[2].get_legend().get_texts()[0].get_text() == 'synthetic R1: 9.9 (epoch 4)'
    finally:
        plt.close(fig)


def test_triplet_and_dml(tiny_root, tmp_path):
    out = tmp_path / 'dml'
    r = run_module('osnet_zoo.train', '--root', tiny_root, '--output', out, '--epochs', '1', '--triplet-weight',
                   '0.5', '--num-instances', '4', '--dml', *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    log = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert {'loss_triplet', 'loss_dml'} <= set(log[0])
    state = load_training_state(out / 'checkpoint.pth')
    # one checkpoint format: the two mutually-learning networks are one module (one optimiser, one schedule)
    assert {k.split('.')[1] for k in state['model'] if k.startswith('nets.')} == {'0', '1'}
    assert len(state['optimizer']['param_groups']) == 1


def test_dml_saves_both_networks_and_the_figures_of_each(tiny_root, tmp_path):
    # a tiny DML run at 64x32 with cosine distance and an ablation architecture (num_streams=2)
    import timm
    from huggingface_hub import ModelCard
    from osnet_zoo.evaluation import evaluate_models, load_eval_splits
    out = tmp_path / 'dml2'
    r = run_module('osnet_zoo.train', '--root', tiny_root, '--output', out, '--epochs', '1', '--max-steps-per-epoch',
                   '2', '--dml', '--distance', 'cosine', '--model-args', 'num_streams=2', *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((out / 'results.json').read_text())
    dml = results['dml']
    assert dml['folders'] == ['final', 'final_net2'] and 'concatenate' in dml['ensemble']
    splits = load_eval_splits(['market1501'], str(tiny_root))
    nets = []
    for folder in dml['folders']:
        config = json.loads((out / folder / 'config.json').read_text())
        # what the run trained and evaluated with, not the 256x128 default
        assert config['pretrained_cfg']['input_size'] == [3, 64, 32] and config['distance'] == 'cosine'
        assert config['model_args']['num_streams'] == 2
        card = ModelCard.load(out / folder / 'README.md')
        assert 'not** a checkpoint of the reference' in card.text and 'network' in card.text
        model = timm.create_model(f'local-dir:{out / folder}', pretrained=True)  # rebuilt from config.json alone
        assert model.arch['num_streams'] == 2 and tuple(model.pretrained_cfg['input_size']) == (3, 64, 32)
        nets.append(model)
        alone = evaluate_models([model], splits, torch.device('cpu'), distance='cosine', size=(64, 32))
        assert alone['market1501']['mAP'] == pytest.approx(dml['networks'][folder]['market1501']['mAP'], abs=1e-6)
    # the ensemble is rebuilt as results.json says: both networks' features, concatenated
    ensemble = evaluate_models(nets, splits, torch.device('cpu'), distance='cosine', size=(64, 32))
    assert ensemble['market1501']['mAP'] == pytest.approx(results['targets']['market1501']['mAP'], abs=1e-6)


def test_torchrun_two_processes_agree(tiny_root, tmp_path):
    out = tmp_path / 'ddp'
    r = run_module('torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29631',
                   '-m', 'osnet_zoo.train', '--root', tiny_root, '--output', out, '--epochs', '1', *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    dist = json.loads((out / 'distributed.json').read_text())
    assert dist['world_size'] == 2 and dist['ranks_agree'], dist
    config = json.loads((out / 'config.json').read_text())  # --batch-size 16 is the global batch: 8 per process
    assert (config['batch_size'], config['world_size'], config['batch_size_per_rank']) == (16, 2, 8)
    assert 'market1501' in json.loads((out / 'results.json').read_text())['targets']


def test_killed_run_resumes_to_the_same_result(tiny_root, tmp_path):
    # Every augmentation on, including random patch; the reference decodes in the main process, the killed
    # run in 2 worker processes and the resumed one in 1: per-sample seeds make all three see the same data.
    common = ['--root', str(tiny_root), '--epochs', '3', '--deterministic', *TINY,
              '--transforms', 'random_flip', 'random_crop', 'random_patch', 'color_jitter', 'random_erase']
    ref = tmp_path / 'ref'
    r = run_module('osnet_zoo.train', *common, '--output', ref)
    assert r.returncode == 0, r.stderr[-3000:]

    run = tmp_path / 'killed'
    proc = start_python('-m', 'osnet_zoo.train', *common, '--workers', '2', '--output', run,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = run / 'metrics.jsonl'
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and '"epoch": 1' in log.read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-way through epoch 2: no chance to clean up
    proc.wait()
    assert load_training_state(run / 'checkpoint.pth')['epoch'] in (1, 2)
    assert not (run / 'results.json').exists()

    r = run_module('osnet_zoo.train', *common, '--workers', '1', '--output', run, '--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'Resumed from' in r.stdout
    resumed, uninterrupted = (json.loads((folder / 'results.json').read_text()) for folder in (run, ref))
    assert resumed['targets'] == uninterrupted['targets']
    a = load_training_state(ref / 'checkpoint.pth')['model']
    b = load_training_state(run / 'checkpoint.pth')['model']
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the one checkpoint format loads into the inference builder, and gives the final model's embedding
    x = torch.randn(2, 3, 64, 32)
    from_checkpoint = build_embedding_model('osnet_x0_25', checkpoint_path=run / 'checkpoint.pth')(x)
    assert torch.allclose(from_checkpoint, build_embedding_model(f'local-dir:{run / "final"}')(x), atol=1e-5)


def test_nan_loss_stops_with_checkpoint_intact(tiny_root, tmp_path):
    out = tmp_path / 'nan'
    # epoch 1 trains normally; from epoch 2 the lr is multiplied by 1e40 and the loss overflows
    r = run_module('osnet_zoo.train', '--root', tiny_root, '--output', out, '--epochs', '3', *TINY,
                   '--lr-scheduler', 'multistep', '--stepsize', '1', '--gamma', '1e40')
    assert r.returncode == 2, r.stderr[-3000:]
    # the one line of engine.checkpoint.divergence_message: where it diverged and the checkpoint that is kept
    assert 'Training diverged at epoch 2' in r.stderr and 'checkpoint.pth' in r.stderr and 'Traceback' not in r.stderr
    state = load_training_state(out / 'checkpoint.pth')
    assert state['epoch'] == 1
    assert all(torch.isfinite(v).all() for v in state['model'].values() if v.is_floating_point())
    assert not (out / 'results.json').exists()


def test_resume_without_checkpoint_is_clear(tmp_path):
    r = run_module('osnet_zoo.train', '--output', tmp_path / 'none', '--resume', *TINY, '--root', tmp_path)
    assert r.returncode != 0
    assert 'checkpoint' in r.stderr and 'does not exist' in r.stderr


def test_tensorboard_missing_is_clear_before_any_work(tmp_path):
    blocker = tmp_path / 'no_tensorboard'
    blocker.mkdir()
    (blocker / 'tensorboard.py').write_text("raise ImportError('No module named tensorboard')\n")
    env = child_env()
    env['PYTHONPATH'] = str(blocker) + os.pathsep + env['PYTHONPATH']
    r = run_module('osnet_zoo.train', '--output', tmp_path / 'run', '--tensorboard', *TINY, '--root', tmp_path / 'data',
                   env=env)
    assert r.returncode == 1
    assert 'pip install "osnet-zoo[tensorboard]"' in r.stderr
    assert not (tmp_path / 'data').exists()  # failed before generating or reading any data
