"""A trained run describes itself: its final/config.json gives every command the architecture, input size,
mean/std and distance it was trained with (issue 20). The README's train -> evaluate flow, run as the README
writes it in real subprocesses, gives the figures training printed; the run record is read from any of the
three names of a trained model; explicit options override it and say so; results.json has one schema."""
import argparse
import json
import shlex
from pathlib import Path

import pytest
import torch

from osnet_zoo.data import make_synthetic_reid
from osnet_zoo.evaluation import METRIC_KEYS
from osnet_zoo.inference import FeatureExtractor, apply_run_record, build_embedding_model, read_run_record
from osnet_zoo.train.__main__ import main as train_main
from conftest import run_python
from test_docs_commands import TINY_TRAIN, documented_commands, documented_env

TINY_DATA = dict(num_train_ids=12, num_test_ids=6, num_cameras=3, num_distractors=4, num_junk=2)


def readme_command(verb: str) -> list:
    """The first command line of README.md running ``python -m osnet_zoo.<verb>``, as written."""
    for page, argv in documented_commands():
        if page == 'README.md' and argv[:3] == ['python', '-m', f'osnet_zoo.{verb}']:
            return argv
    raise AssertionError(f'README.md shows no python -m osnet_zoo.{verb} command')


def test_readme_train_then_evaluate_gives_the_same_figures(tmp_path):
    """The README's evaluate command, exactly as written, after its training (tiny: 1 epoch of 2 steps at 64x32,
    euclidean distance from the synthetic recipe), reports training's own Rank-1 / mAP / mINP to 1e-6."""
    make_synthetic_reid(tmp_path / '.cache' / 'osnet_zoo' / 'data' / 'synthetic_reid', **TINY_DATA)
    env = documented_env(tmp_path)
    train = readme_command('train')
    assert train == ['python', '-m', 'osnet_zoo.train']
    proc = run_python(*train[1:], *shlex.split(TINY_TRAIN), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluate = readme_command('evaluate')
    proc = run_python(*evaluate[1:], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # it says where the model's settings came from: the record, not the 256x128 / cosine defaults
    assert 'run record runs/osnet/final/config.json: osnet_x0_25, input 64x32' in proc.stdout
    assert 'euclidean distance' in proc.stdout and 'overridden' not in proc.stdout
    trained = json.loads((tmp_path / 'runs' / 'osnet' / 'results.json').read_text())
    evaluated = json.loads((tmp_path / 'runs' / 'evaluate' / 'results.json').read_text())
    # one schema: the same keys, the same units (fractions)
    assert trained.keys() == evaluated.keys()
    assert trained['targets'].keys() == evaluated['targets'].keys() == {'synthetic'}
    t, e = trained['targets']['synthetic'], evaluated['targets']['synthetic']
    assert t.keys() == e.keys() and set(METRIC_KEYS) <= t.keys()
    for key in ('rank1', 'mAP', 'mINP'):
        assert e[key] == pytest.approx(t[key], abs=1e-6), key
    assert 0 < t['mAP'] <= 1 and t['num_query'] == e['num_query'] > 0
    assert (trained['distance'], trained['input_size']) == (evaluated['distance'], evaluated['input_size']) == (
        'euclidean', [64, 32])
    # the model card of the run names files that exist, and no Hub repository
    card = (tmp_path / 'runs' / 'osnet' / 'final' / 'README.md').read_text()
    assert 'final_state' not in card and 'hf-hub:' not in card
    assert 'timm.create_model("local-dir:runs/osnet/final"' in card
    for name in ('config.json', 'metrics.jsonl', 'results.json'):
        assert f'`{name}`' in card and (tmp_path / 'runs' / 'osnet' / name).is_file()


@pytest.fixture(scope='module')
def run(tmp_path_factory) -> Path:
    """A tiny finished run at 64x32 with cosine distance and an ablation (num_streams=2)."""
    root = tmp_path_factory.mktemp('data')
    make_synthetic_reid(root / 'synthetic_reid', **TINY_DATA)
    out = tmp_path_factory.mktemp('run') / 'osnet'
    train_main(['--root', str(root), '--output', str(out), '--distance', 'cosine', '--model-args', 'num_streams=2',
                *shlex.split(TINY_TRAIN)])
    return out


def test_the_record_is_found_from_each_name_of_the_model(run):
    records = [read_run_record(p) for p in (run, run / 'final', run / 'final' / 'model.safetensors')]
    assert records[0] == records[1] == records[2]
    record = records[0]
    assert record.architecture == 'osnet_x0_25' and record.model_args == {'num_streams': 2}
    assert record.input_hw == (64, 32) and record.distance == 'cosine' and record.weights.is_file()
    # a checkpoint without a record beside it is an ordinary checkpoint
    assert read_run_record(run / 'checkpoint.pth') is None


def test_bad_records_are_errors_naming_the_thing(run, tmp_path):
    with pytest.raises(FileNotFoundError, match='neither a training run'):
        read_run_record(tmp_path)
    unfinished = tmp_path / 'unfinished'
    unfinished.mkdir()
    (unfinished / 'checkpoint.pth').write_bytes(b'')
    with pytest.raises(FileNotFoundError, match='has not finished.*--resume'):
        read_run_record(unfinished)
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'model.safetensors').write_bytes((run / 'final' / 'model.safetensors').read_bytes())
    (broken / 'config.json').write_text('{"architecture": "osnet_x0_25", ')
    with pytest.raises(ValueError, match=r'broken/config.json is not valid JSON'):
        read_run_record(broken / 'model.safetensors')
    (broken / 'config.json').write_text(json.dumps({'architecture': 'osnet_x0_25', 'distance': 'manhattan'}))
    with pytest.raises(ValueError, match="distance 'manhattan'"):
        read_run_record(broken)


def test_builder_and_extractor_use_the_recorded_model(run):
    model = build_embedding_model(checkpoint_path=run)
    assert model.arch['num_streams'] == 2 and tuple(model.pretrained_cfg['input_size']) == (3, 64, 32)
    by_name = FeatureExtractor(f'local-dir:{run}', device='cpu')
    by_path = FeatureExtractor(checkpoint_path=run / 'final' / 'model.safetensors', device='cpu')
    assert by_name.preprocessing['input_size'] == by_path.preprocessing['input_size'] == (3, 64, 32)
    assert by_path.model_name == 'osnet_x0_25'
    crops = torch.randint(0, 256, (3, 3, 90, 40), dtype=torch.uint8)
    assert torch.equal(by_name(crops), by_path(crops))
    # timm itself reads the final/ folder
    import timm
    assert timm.create_model(f'local-dir:{run / "final"}', pretrained=True).arch['num_streams'] == 2


def test_explicit_options_override_the_record_and_say_so(run):
    lines = []
    args = argparse.Namespace(model=None, checkpoint=str(run), height=None, width=None, distance=None)
    record = apply_run_record(args, log=lines.append)
    assert (args.model, args.height, args.width, args.distance) == ('osnet_x0_25', 64, 32, 'cosine')
    assert args.checkpoint == str(record.weights) and 'overridden' not in lines[-1]
    args = argparse.Namespace(model='osnet_x0_25', checkpoint=str(run / 'final'), height=128, width=32,
                              distance='euclidean', model_args=['num_streams=2'])
    apply_run_record(args, log=lines.append)
    assert len(lines) == 2 and lines[-1].endswith(
        'overridden by --height 128 (recorded: 64), --distance euclidean (recorded: cosine)')
    assert (args.height, args.width, args.distance) == (128, 32, 'euclidean')
    # without a record: the command's default model, or an error saying what is missing
    args = argparse.Namespace(model=None, checkpoint=None)
    assert apply_run_record(args, default_model='osnet_x1_0') is None and args.model == 'osnet_x1_0'
    with pytest.raises(ValueError, match='--model is required'):
        apply_run_record(argparse.Namespace(model=None, checkpoint=None))
