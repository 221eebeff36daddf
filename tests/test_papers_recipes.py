"""Every shipped recipe cites its paper section and uses the distance that paper states (ICCV 2019: l2, Sec. 4.1;
its supplementary's training studies and TPAMI 2021: cosine); the cross-domain OSNet-IBN and Mix4 recipes
carry the supplementary's / the ICCV text's settings."""
import json

import pytest

from osnet_zoo.data import make_synthetic_reid
from osnet_zoo.train import list_recipes
from osnet_zoo.train.__main__ import get_args_parser, main as train_main
from osnet_zoo.engine.recipes import load_recipe, resolve_config


def _cfg(name, *extra):
    return resolve_config(get_args_parser().parse_args(['--recipe', name, *extra]))


@pytest.mark.parametrize('name', list_recipes())
def test_recipe_cites_a_section_and_the_papers_distance(name):
    cfg = _cfg(name)
    if name == 'synthetic':
        assert 'not a paper recipe' in open(f'osnet_zoo/train/recipes/{name}.yaml').read().lower()
        return
    assert 'Sec.' in cfg.citation, f'{name}: the source must name the section it follows'
    # the first paper a recipe cites is the one it follows
    if cfg.citation.startswith('OSNet-AIN, TPAMI') or 'supplementary Sec. B' in cfg.citation:
        assert cfg.distance == 'cosine', name
    elif cfg.sources[0] in ('pa100k', 'cifar10', 'cifar100', 'imagenet'):
        assert load_recipe(name)['targets'] == cfg.sources  # scored on their own test split
    else:
        assert cfg.citation.startswith('OSNet, ICCV 2019') and cfg.distance == 'euclidean', name


def test_cross_domain_ibn_and_mix4_settings():
    ibn = _cfg('cross_domain_ibn')
    assert (ibn.model, ibn.pretrained, ibn.epochs, ibn.lr, ibn.optim, ibn.amsgrad) == (
        'osnet_ibn_x1_0', 'imagenet', 150, 0.0015, 'adam', True)
    assert ibn.lr_scheduler == 'multistep' and ibn.stepsize == [60, 120] and ibn.fixbase_epochs == 10
    assert ibn.transforms == ['random_flip', 'color_jitter'] and ibn.batch_size == 64 and ibn.weight_decay == 5e-4
    ain = _cfg('cross_domain')
    assert ain.lr_scheduler == 'cosine' and ain.epochs == 100 and ain.distance == 'cosine'  # TPAMI, not the same
    mix4 = _cfg('mix4')
    assert mix4.pretrained is None and mix4.optim == 'sgd' and mix4.lr == 0.065  # from scratch (ICCV Sec. 4.1)
    assert mix4.stepsize == [150, 225, 300] and mix4.sources == ['market1501', 'cuhk03', 'dukemtmcreid', 'msmt17']
    assert 'random_patch' in mix4.transforms


def test_cross_domain_ibn_recipe_runs_from_source_to_target(tmp_path):
    root = tmp_path / 'data'
    make_synthetic_reid(root / 'Market-1501-v15.09.15', num_train_ids=8, num_test_ids=6, height=64, width=32,
                        num_distractors=1, num_junk=1, seed=4)
    make_synthetic_reid(root / 'DukeMTMC-reID', num_train_ids=6, num_test_ids=6, height=64, width=32,
                        num_distractors=0, num_junk=0, seed=9, num_cameras=8, domain=1)
    out = tmp_path / 'run'
    results = train_main(['--recipe', 'cross_domain_ibn', '--pretrained', 'none', '--root', str(root),
                          '--epochs', '2', '--fixbase-epochs', '1', '--height', '64', '--width', '32',
                          '--batch-size', '8', '--max-steps-per-epoch', '1', '--output', str(out)])
    assert set(results) == {'dukemtmcreid'}
    config = json.loads((out / 'config.json').read_text())
    assert config['model'] == 'osnet_ibn_x1_0' and config['distance'] == 'euclidean' and config['stepsize'] == [60, 120]
