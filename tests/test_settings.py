"""The one declaration of the training settings (``osnet_zoo/engine/settings.py``) drives the config class, the
recipe check, the command line, the record (a run's config.json) and the resume rules: a setting added to the
list, and nothing else, is an option of ``python -m osnet_zoo.train``, a recipe key checked against its bounds,
and a field of the recorded config."""
import argparse
import json
import dataclasses

import pytest

from osnet_zoo.data import make_synthetic_reid
from osnet_zoo.engine import recipes, settings
from osnet_zoo.engine.settings import KINDS, TRAIN_GROUPS, TRAIN_SETTINGS, check_value, option_name
from osnet_zoo.train.options import get_args_parser
from conftest import run_python

# A child process that declares one more setting before anything reads the list, then runs the train command
# (``config`` as first argument: prints the resolved config instead of training).
WITH_NEW_SETTING = '''
import json, sys
from osnet_zoo.engine import settings
settings.TRAIN_SETTINGS = settings.TRAIN_SETTINGS + (settings.Setting(
    'warmup_epochs', 'int', 0, 0, group=settings.OPTIM, help='epochs of linear learning-rate warm-up'),)
from osnet_zoo import cli
from osnet_zoo.train.__main__ import main
from osnet_zoo.train.options import parse_config
if sys.argv[1:2] == ['config']:
    print(json.dumps(parse_config(sys.argv[2:])[0].to_dict()))
    sys.exit(0)
sys.exit(cli.run(main))
'''
TINY = ['--sources', 'market1501', '--targets', 'market1501', '--model', 'osnet_x0_25', '--height', '64',
        '--width', '32', '--batch-size', '8', '--epochs', '1', '--max-steps-per-epoch', '1', '--workers', '0',
        '--device', 'cpu']


def test_config_parser_and_resume_rules_come_from_the_declaration():
    names = [s.name for s in TRAIN_SETTINGS]
    assert len(names) == len(set(names)), 'a setting declared twice'
    assert [f.name for f in dataclasses.fields(recipes.TrainConfig)] == names  # the record's keys, in order
    defaults = recipes.TrainConfig()
    for s in TRAIN_SETTINGS:
        assert s.kind in KINDS and s.resume in ('fixed', 'changeable', 'current'), s
        assert getattr(defaults, s.name) == check_value(s, s.default), s.name  # every default within its bounds
        assert s.help or callable(s.cli), f'{s.name} has no help'
    assert recipes.RECIPE_KEYS == tuple(s.name for s in TRAIN_SETTINGS if s.recipe)
    assert set(recipes.RESUME_CHANGEABLE) | set(recipes.RESUME_CURRENT) == \
        {s.name for s in TRAIN_SETTINGS if s.resume != 'fixed'}
    parser = get_args_parser()
    dests = {a.dest for a in parser._actions}
    assert {s.name for s in TRAIN_SETTINGS if s.group} <= dests
    assert not {s.name for s in TRAIN_SETTINGS if not s.group} & dests  # recipe-only settings stay off it
    assert [g.title for g in parser._action_groups[2:]] == list(TRAIN_GROUPS)


def test_a_recipe_key_out_of_its_bounds_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"option 'num_instances' \(--num-instances\) must be >= 1, got 0"):
        recipes.TrainConfig(num_instances=0)
    with pytest.raises(ValueError, match=r"option 'optim' \(--optim\): 'lbfgs' is not one of"):
        recipes.TrainConfig(optim='lbfgs')
    assert recipes.TrainConfig(stepsize=60).stepsize == [60]  # a lone epoch is one milestone
    assert option_name('max_steps_per_epoch') == '--max-steps-per-epoch'


def test_one_new_declaration_is_an_option_a_recipe_key_and_a_recorded_field(tmp_path):
    root = tmp_path / 'data'
    make_synthetic_reid(root / 'Market-1501-v15.09.15', num_train_ids=8, num_test_ids=4, height=64, width=32,
                        num_distractors=2, num_junk=1, seed=3)
    good, bad = tmp_path / 'good.yaml', tmp_path / 'bad.yaml'
    good.write_text('warmup_epochs: 2\n')
    bad.write_text('warmup_epochs: -1\n')

    shown = run_python('-c', WITH_NEW_SETTING, '--help', check=True).stdout
    assert '--warmup-epochs WARMUP_EPOCHS' in shown and 'epochs of linear learning-rate warm-up' in shown

    given = run_python('-c', WITH_NEW_SETTING, 'config', '--recipe', good, '--warmup-epochs', '3', check=True)
    assert json.loads(given.stdout)['warmup_epochs'] == 3  # the command line overrides the recipe

    refused = run_python('-c', WITH_NEW_SETTING, '--recipe', bad, '--root', root, '--output', tmp_path / 'x', *TINY)
    assert refused.returncode == 1 and not (tmp_path / 'x').exists(), refused.stderr[-2000:]
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "option 'warmup_epochs' (--warmup-epochs) must be >= 0, got -1" in lines[0], lines

    out = tmp_path / 'run'
    run = run_python('-c', WITH_NEW_SETTING, '--recipe', good, '--root', root, '--output', out, *TINY)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((out / 'config.json').read_text())['warmup_epochs'] == 2  # the recipe's value, recorded

    # without the declaration nothing knows the key: the same recipe is refused
    plain = run_python('-m', 'osnet_zoo.train', '--recipe', good, '--root', root, '--output', tmp_path / 'y', *TINY)
    assert plain.returncode == 1 and "unknown options ['warmup_epochs']" in plain.stderr, plain.stderr[-2000:]


def test_an_engineering_switch_is_store_true_and_a_recipe_switch_has_a_no_form():
    parser = argparse.ArgumentParser()
    settings.add_options(parser, [
        settings.Setting('fast', 'bool', False, group='g', recipe=False, help='h'),
        settings.Setting('mixup', 'bool', False, group='g', help='h')], ['g'])
    assert vars(parser.parse_args([])) == {'fast': False, 'mixup': None}  # None: the recipe's value stands
    assert vars(parser.parse_args(['--fast', '--no-mixup'])) == {'fast': True, 'mixup': False}


def test_the_search_settings_use_the_same_mechanism():
    from osnet_zoo.nas.__main__ import RESUMABLE, get_args_parser as nas_parser
    from osnet_zoo.nas.search import PAPER_CONFIG, QUICK_CONFIG, SEARCH_SETTINGS, resolve_config
    assert list(PAPER_CONFIG) == [s.name for s in SEARCH_SETTINGS]
    assert set(RESUMABLE) == {s.name for s in SEARCH_SETTINGS if s.resume == 'changeable'}
    search = nas_parser()._subparsers._group_actions[0].choices['search']
    dests = {a.dest for a in search._actions}
    assert {s.name for s in SEARCH_SETTINGS if s.group} <= dests
    args = search.parse_args(['--tau-floor', '0.5', '--no-conv1-in'])
    assert (args.tau_floor, args.conv1_in, args.epochs) == (0.5, False, None)  # None: the preset's
    assert resolve_config(QUICK_CONFIG, tau_floor=2)['tau_floor'] == 2.0
    with pytest.raises(ValueError, match=r"option 'tau_floor' \(--tau-floor\) must be > 0, got 0.0"):
        resolve_config(QUICK_CONFIG, tau_floor=0.0)
    with pytest.raises(ValueError, match=r"option 'mode' \(--mode\): 'x' is not one of all, sampled"):
        resolve_config(QUICK_CONFIG, mode='x')
    with pytest.raises(ValueError, match='each seed once'):  # the one check across values stays by hand
        resolve_config(QUICK_CONFIG, seeds=[1, 1])
