"""NAS: the supernet's candidates, Gumbel-softmax sampling, temperature schedule, genotypes, and real searches."""
import json
import math
import subprocess
from pathlib import Path

import pytest
import timm
import torch

import osnet_zoo  # noqa: F401  (registers the models)
from osnet_zoo.models.osnet import OmniScaleBlock, OSNet, osnet_arch
from osnet_zoo.nas import (
    AIN_GENOTYPE, CANDIDATES, SearchBlock, SuperNet, build_model_from_genotype, child_state_dict, eq8_alphas,
    gumbel_noise, load_genotype, sample_alphas, save_genotype, temperature_at,
)
from osnet_zoo.nas.supernet import EPS
from conftest import run_module

MIXED = ('plain', 'in_in', 'in_out', 'in_in_out', 'in_in', 'in_out')  # every candidate appears


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Random weights and BN statistics, so that no norm is an identity by initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if t.dtype.is_floating_point:
                if name.endswith('running_var'):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.2 + (1.0 if name.endswith('weight') and t.ndim == 1
                                                                       else 0.0))


def test_temperature_halves_every_n_epochs_with_a_floor():
    assert [temperature_at(e) for e in (0, 19, 20, 39, 40, 60, 79, 80, 119)] == \
        [10, 10, 5, 5, 2.5, 1.25, 1.25, 1.0, 1.0]
    assert temperature_at(3, initial=8, halve_every=1, floor=2) == 2
    with pytest.raises(ValueError, match='halve_every'):
        temperature_at(1, halve_every=0)


def test_alpha_is_eq8_for_a_fixed_gumbel_draw():
    # eq. (8): alpha = exp((log pi + z) / lambda) / sum(...), pi = relu(w) non-negative (w <= 0 -> pi = 0)
    w = torch.tensor([[2.0, 0.5, -1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    z = torch.tensor([[0.3, -0.2, 1.5, 0.0], [-1.0, 0.4, 0.1, 2.0]])
    for lam in (10.0, 1.0, 0.5):
        expected = []
        for w_row, z_row in zip(w.tolist(), z.tolist()):
            e = [math.exp((math.log(max(wi, 0.0) + EPS) + zi) / lam) for wi, zi in zip(w_row, z_row)]
            expected.append([v / sum(e) for v in e])
        torch.testing.assert_close(eq8_alphas(w, z, lam), torch.tensor(expected), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(sample_alphas(w, lam, z=z), torch.tensor(expected), rtol=1e-6, atol=1e-7)
    # the Gumbel noise is -log(-log(u)), u ~ U(0, 1)
    torch.manual_seed(3)
    u = torch.rand(6, 4)
    torch.manual_seed(3)
    torch.testing.assert_close(gumbel_noise((6, 4)), -torch.log(-torch.log(u)))
    # and the supernet mixes with exactly that draw: same seed, same z, alpha by eq. (8) from its weights
    net = SuperNet(0.25, num_classes=3)
    with torch.no_grad():
        net.arch_weights.copy_(torch.rand(6, 4) * 2 - 0.5)  # some weights below zero: relu clips them
    net.temperature = 2.5
    x = torch.randn(2, 3, 64, 32)
    torch.manual_seed(11)
    z = gumbel_noise((6, 4))
    torch.manual_seed(11)
    net(x)
    torch.testing.assert_close(net.last_alphas, eq8_alphas(net.arch_weights.detach(), z, 2.5))
    torch.testing.assert_close(net.pi, torch.relu(net.arch_weights.detach()))


def test_architecture_weights_start_at_one_and_get_gradients():
    net = SuperNet(0.25, num_classes=3)
    assert torch.equal(net.arch_weights.detach(), torch.ones(6, 4))  # pi uniform: every candidate equally likely
    torch.testing.assert_close(net.probabilities(), torch.full((6, 4), 0.25))
    soft = sample_alphas(net.arch_weights, temperature=10.0)
    assert soft.shape == (6, 4) and (soft > 0).all()
    torch.testing.assert_close(soft.sum(-1), torch.ones(6))
    hard = sample_alphas(net.arch_weights, temperature=1.0, hard=True)
    assert ((hard == 0) | (hard == 1)).all() and (hard.sum(-1) == 1).all()
    (hard * torch.arange(4.0)).sum().backward()  # straight-through: the one-hot draw still has a gradient
    assert net.arch_weights.grad is not None and net.arch_weights.grad.abs().sum() > 0
    # at a low temperature the draws follow pi / sum(pi)
    w = torch.tensor([[6.0, 1.0, 1.0, 0.0]])
    torch.manual_seed(0)
    wins = sum(int(sample_alphas(w, 0.5, hard=True)[0, 0]) for _ in range(400))
    assert 0.65 < wins / 400 < 0.85  # 6 / 8 = 0.75; pi = 0 is never drawn
    assert not any(int(sample_alphas(w, 0.5, hard=True)[0, 3]) for _ in range(200))


def test_candidates_of_a_position_share_no_parameter():
    torch.manual_seed(0)
    net = SuperNet(0.25, num_classes=3)
    for block in net.blocks:
        assert [c.norm for c in block.candidates] == list(CANDIDATES)
        owners = {}
        for k, cand in enumerate(block.candidates):
            for t in list(cand.parameters()) + list(cand.buffers()):
                assert t.data_ptr() not in owners, 'a tensor is shared between two candidates'
                owners[t.data_ptr()] = k
    # four complete blocks: each candidate has the parameters of the plain block with its placement
    a = net.net.arch
    for k, choice in enumerate(CANDIDATES):
        ref = OmniScaleBlock(a['channels'][0], a['channels'][1], norm=choice)
        assert {n: p.shape for n, p in net.blocks[0].candidates[k].state_dict().items()} == \
            {n: p.shape for n, p in ref.state_dict().items()}
    # a gradient through one candidate reaches none of the others
    block = net.blocks[2]
    block.candidates[1](torch.randn(2, a['channels'][1], 8, 4)).sum().backward()
    for k, cand in enumerate(block.candidates):
        grads = [p.grad for p in cand.parameters()]
        assert all(g is not None for g in grads) if k == 1 else all(g is None for g in grads)


@pytest.mark.parametrize('mode', ['all', 'sampled'])
def test_supernet_modes_shapes_and_gradients(mode):
    torch.manual_seed(0)
    net = SuperNet(0.25, num_classes=7, mode=mode)
    x = torch.randn(4, 3, 64, 32)
    logits = net(x)
    drawn = net.last_alphas
    assert logits.shape == (4, 7)
    assert net.forward_features(x).shape == OSNet(**osnet_arch(0.25), num_classes=7).forward_features(x).shape
    logits.logsumexp(1).sum().backward()
    w = net.arch_weights
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
    used = [k for k, c in enumerate(net.blocks[0].candidates) if c.conv1.conv.weight.grad is not None]
    assert used == ([0, 1, 2, 3] if mode == 'all' else [int(drawn[0].argmax())])
    net.eval()
    emb = net.forward_head(net.forward_features(x), pre_logits=True)
    assert emb.shape == (4, 512)
    assert net.choices() == [CANDIDATES[int(i)] for i in w.argmax(-1)]
    torch.testing.assert_close(net.probabilities().sum(-1), torch.ones(6))


def test_search_block_output_is_eq5():
    torch.manual_seed(0)
    search = SearchBlock(16, 32)
    _randomise(search, seed=1)
    x = torch.randn(3, 16, 16, 8)
    alpha = torch.tensor([0.1, 0.2, 0.3, 0.4], requires_grad=True)
    for train in (False, True):
        search.train(train)
        search.alpha = alpha
        expected = sum(alpha[k] * search.candidates[k](x) for k in range(4))
        torch.testing.assert_close(search(x), expected)


@pytest.mark.parametrize('choice', CANDIDATES)
@pytest.mark.parametrize('mode', ['all', 'sampled'])
def test_search_block_with_one_hot_alpha_equals_the_plain_block(choice, mode):
    torch.manual_seed(0)
    search = SearchBlock(16, 32)
    _randomise(search, seed=1)
    search.mode = mode
    k = CANDIDATES.index(choice)
    block = OmniScaleBlock(16, 32, norm=choice)
    block.load_state_dict(search.candidates[k].state_dict(), strict=True)
    x = torch.randn(3, 16, 16, 8)
    for train in (False, True):
        search.train(train), block.train(train)
        for alpha in (torch.eye(4)[k], torch.eye(4)[k].requires_grad_()):  # fixed, and a straight-through draw
            search.alpha = alpha
            torch.testing.assert_close(search(x), block(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('mode', ['all', 'sampled'])
def test_child_takes_the_chosen_candidates_weights_as_they_are(mode):
    torch.manual_seed(0)
    net = SuperNet(0.25, num_classes=5, mode=mode)
    _randomise(net, seed=2)
    child = build_model_from_genotype({'format': 'osnet_zoo.nas.genotype', 'block_norms': list(MIXED)},
                                      width=0.25, num_classes=5)
    state = child_state_dict(net, MIXED)
    child.load_state_dict(state, strict=True)  # every key of the child, nothing more
    supernet_state = net.net.state_dict()
    for key, value in child.state_dict().items():
        position = next((p for p in net.positions if key.startswith(p + '.')), None)
        source = key if position is None else \
            f'{position}.candidates.{CANDIDATES.index(MIXED[net.positions.index(position)])}.{key[len(position) + 1:]}'
        assert torch.equal(value, supernet_state[source]), key  # the very values, not a re-initialisation
    net.fixed_alphas = torch.stack([torch.eye(4)[CANDIDATES.index(c)] for c in MIXED])
    net.eval(), child.eval()
    x = torch.randn(2, 3, 64, 32)
    torch.testing.assert_close(net(x), child(x), rtol=1e-4, atol=1e-5)
    # and without fixed alphas, eval mode uses the argmax of the weights: the child of net.choices()
    net.fixed_alphas = None
    with torch.no_grad():
        net.arch_weights.copy_(torch.stack([torch.eye(4)[CANDIDATES.index(c)] * 3 for c in MIXED]))
    assert net.choices() == list(MIXED)
    torch.testing.assert_close(net(x), child(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match='choices'):
        child_state_dict(net, ['in'] * 6)


@pytest.mark.parametrize('width,name', [(1.0, 'osnet_ain_x1_0'), (0.25, 'osnet_ain_x0_25')])
def test_shipped_ain_genotype_builds_osnet_ain(width, name):
    # the same head on both: timm's default num_classes follows the default pretrained tag's classifier
    ours = build_model_from_genotype(AIN_GENOTYPE, width=width, num_classes=1000)
    ref = timm.create_model(name, num_classes=1000)
    assert ours.arch == ref.arch
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    assert load_genotype('osnet_ain')['block_norms'] == list(ref.arch['block_norms'])
    if width == 0.25:  # same weights, same function
        ours.load_state_dict(ref.state_dict(), strict=True)
        ours.eval(), ref.eval()
        x = torch.randn(2, 3, 64, 32)
        torch.testing.assert_close(ours(x), ref(x))


def test_genotype_files_are_validated_and_written_atomically(tmp_path):
    good = load_genotype('osnet_ain')
    path = save_genotype(dict(good, seed=3), tmp_path / 'g.json')
    assert load_genotype(path)['seed'] == 3
    assert [p.name for p in tmp_path.iterdir()] == ['g.json']  # no temporary left behind
    with pytest.raises(ValueError, match='block_norms'):
        save_genotype(dict(good, block_norms=['plain'] * 5), tmp_path / 'bad.json')
    assert not (tmp_path / 'bad.json').exists()
    (tmp_path / 'wrong.json').write_text(json.dumps(dict(good, block_norms=['in'] * 6)))
    with pytest.raises(ValueError, match=r'wrong\.json.*block_norms'):
        load_genotype(tmp_path / 'wrong.json')
    (tmp_path / 'other.json').write_text('{"block_norms": []}')
    with pytest.raises(ValueError, match='format'):
        load_genotype(tmp_path / 'other.json')
    (tmp_path / 'broken.json').write_text('{')
    with pytest.raises(ValueError, match='not valid JSON'):
        load_genotype(tmp_path / 'broken.json')
    with pytest.raises(FileNotFoundError, match='osnet_ain'):
        load_genotype(tmp_path / 'missing.json')


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp('nas_data')


def _assert_png(path: Path):
    from PIL import Image
    with Image.open(path) as im:
        assert im.format == 'PNG' and im.size[0] > 500


def _tiny_search(out: Path, data_root: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_module('osnet_zoo.nas', '--output', out, '--root', data_root, '--epochs', '3', '--max-steps-per-epoch',
                      '2', '--batch-size', '16', '--height', '64', '--width', '32', '--tau-halve-every', '1',
                      '--synthetic-ids', '16', '8', '--quiet', *extra, cwd=out.parent)


@pytest.fixture(scope='module')
def tiny_search(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp('search') / 'run'
    r = _tiny_search(out, data_root)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_tiny_search_end_to_end(tiny_search):
    out = tiny_search
    g = load_genotype(out / 'genotype.json')
    assert len(g['block_norms']) == 6 and all(c in CANDIDATES for c in g['block_norms'])
    assert g['block_norms'] == [CANDIDATES[max(range(4), key=row.__getitem__)] for row in g['arch_weights']]
    for pi_row, w_row, p_row in zip(g['pi'], g['arch_weights'], g['probabilities']):
        assert pi_row == [max(w, 0.0) for w in w_row]  # pi = relu(w)
        assert abs(sum(p_row) - 1) < 1e-5
    assert g['epochs'] == 3 and g['data']['sources'] == ['synthetic'] and g['batch_size'] == 16
    log = [json.loads(line) for line in (out / f"seed_{g['seed']}" / 'metrics.jsonl').read_text().splitlines()]
    assert [rec['temperature'] for rec in log] == [10.0, 5.0, 2.5]
    assert log[-1]['probabilities'] == g['probabilities']
    _assert_png(out / 'probabilities.png')
    assert [s['seed'] for s in json.loads((out / 'seeds.json').read_text())['seeds']] == [1]
    config = json.loads((out / 'config.json').read_text())
    assert config['batch_size'] == 16 and config['world_size'] == 1 and config['batch_size_per_rank'] == 16


def test_seeds_then_select_keeps_the_best_trained_child(tmp_path, data_root):
    out = tmp_path / 'run'
    r = _tiny_search(out, data_root, '--mode', 'sampled', '--samples', '2', '--seeds', '1', '2')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'nas select' in r.stdout and not (out / 'genotype.json').exists()  # several seeds: select chooses
    found = {s['seed']: s['block_norms'] for s in json.loads((out / 'seeds.json').read_text())['seeds']}
    assert sorted(found) == [1, 2]
    r = run_module('osnet_zoo.nas', 'select', '--output', out, '--epochs', '1', '--batch-size', '8',
                   '--max-steps-per-epoch', '2', '--quiet', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    sel = json.loads((out / 'selection.json').read_text())
    assert sel['recipe'] == 'synthetic' and sel['targets'] == ['synthetic_b'] and sel['train']['epochs'] == 1
    assert [row['seed'] for row in sel['seeds']] == [1, 2]
    for row in sel['seeds']:
        assert row['block_norms'] == found[row['seed']]
        assert 0 <= row['results']['synthetic_b']['mAP'] <= 1
    best = max(sel['seeds'], key=lambda row: (row['results']['synthetic_b']['mAP'],
                                              row['results']['synthetic_b']['rank1'], -row['seed']))
    assert sel['kept_seed'] == best['seed']
    kept = load_genotype(out / 'genotype.json')
    assert kept['seed'] == best['seed'] and kept['block_norms'] == found[best['seed']]
    assert kept['selection']['targets'] == ['synthetic_b']
    table = (out / 'selection.md').read_text()
    assert table.count('\n| 1') + table.count('\n| 2') == 2 and 'synthetic_b mAP' in table
    r = run_module('osnet_zoo.nas', 'select', '--output', tmp_path / 'nothing', '--quiet', cwd=tmp_path)
    assert r.returncode == 1 and 'config.json' in r.stderr and 'Traceback' not in r.stderr


def test_interrupted_search_resumes_to_the_same_genotype(tmp_path, data_root, tiny_search):
    out = tmp_path / 'run'
    r = _tiny_search(out, data_root, '--stop-after-epoch', '1')
    assert r.returncode == 0 and 'stopped after epoch 1 of 3' in r.stdout, r.stderr[-3000:]
    assert not (out / 'genotype.json').exists() and (out / 'seed_1' / 'checkpoint.pth').is_file()
    assert len((out / 'seed_1' / 'metrics.jsonl').read_text().splitlines()) == 1
    r = _tiny_search(out, data_root, '--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    resumed, straight = load_genotype(out / 'genotype.json'), load_genotype(tiny_search / 'genotype.json')
    assert resumed['arch_weights'] == straight['arch_weights'] and resumed['block_norms'] == straight['block_norms']


def test_search_checkpoint_is_the_training_format(tiny_search):
    # one checkpoint format for train and nas: the search's loads with the training loop's required entries
    from osnet_zoo.engine import CHECKPOINT_KEYS, load_training_state
    state = load_training_state(tiny_search / 'seed_1' / 'checkpoint.pth', required=(*CHECKPOINT_KEYS, 'seconds'))
    assert state['epoch'] == 3 and 'arch_weights' in state['model'] and 'models' not in state


def test_a_nan_in_a_search_is_caught_and_no_checkpoint_written(tmp_path, data_root):
    # the weight decay overflows float32 (10 x 1e38 x a BN weight of 1): the step's loss is finite, the weights
    # after it are not. The NaN guard of the run folder (once keyed on the training format alone, so it skipped
    # the search's checkpoints) must refuse to checkpoint the search's weights.
    out = tmp_path / 'run'
    r = _tiny_search(out, data_root, '--lr', '10', '--weight-decay', '1e38', '--max-steps-per-epoch', '1')
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-3000:])
    assert 'NaN/inf' in r.stderr and 'no checkpoint was saved' in r.stderr and 'Traceback' not in r.stderr
    assert not (out / 'seed_1' / 'checkpoint.pth').exists()
    assert not (out / 'seed_1' / 'metrics.jsonl').read_text().strip()  # no epoch logged without its checkpoint


def test_a_listing_is_recorded_by_its_absolute_path(tmp_path, data_root):
    from test_data_listing import make_people, write_csv
    write_csv(tmp_path / 'shop' / 'listing.csv', make_people(tmp_path / 'shop', train=8, test=4))
    out = tmp_path / 'run'
    r = _tiny_search(out, data_root, '--sources', 'shop/listing.csv', '--targets', 'none')  # relative to tmp_path
    assert r.returncode == 0, r.stderr[-3000:]
    listing = str(tmp_path / 'shop' / 'listing.csv')
    assert load_genotype(out / 'genotype.json')['data']['sources'] == [listing]
    assert json.loads((out / 'config.json').read_text())['sources'] == [listing]
    # the same listing by another relative path, from another folder: the same search, resumed (not "changed")
    again = run_module('osnet_zoo.nas', '--output', out, '--root', data_root, '--epochs', '3', '--max-steps-per-epoch',
                       '2', '--batch-size', '16', '--height', '64', '--width', '32', '--tau-halve-every', '1',
                       '--synthetic-ids', '16', '8', '--quiet', '--resume', '--sources', 'listing.csv', '--targets',
                       'none', cwd=tmp_path / 'shop')
    assert again.returncode == 0, again.stderr[-3000:]


def test_bad_option_is_a_clear_error(tmp_path):
    r = run_module('osnet_zoo.nas', '--output', tmp_path / 'x', '--root', tmp_path, '--sources', 'nosuchset', '--quiet',
                   cwd=tmp_path)
    assert r.returncode == 1 and 'nosuchset' in r.stderr and 'Traceback' not in r.stderr
    from osnet_zoo.nas.__main__ import main
    with pytest.raises(SystemExit) as exc:  # argparse's usage error, in-process (no second interpreter start)
        main(['--output', str(tmp_path / 'x'), '--preset', 'nosuch'])
    assert exc.value.code == 2


def test_proof_runs_end_to_end_on_tiny_data(tmp_path):
    out = tmp_path / 'proof'
    r = run_module('osnet_zoo.nas', 'proof', '--device', 'cpu', '--output', out, '--train-ids', '12', '--test-ids',
                   '6', '--search-epochs', '1', '--train-epochs', '1', '--batch-size', '8', '--model-width', '0.25',
                   '--height', '64', '--width', '32', '--max-steps-per-epoch', '2', '--seeds', '1', '2', '--quiet',
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((out / 'proof.json').read_text())
    names = [m['name'] for m in result['models']]
    assert names == ['OSNet', 'OSNet-IBN', 'OSNet-AIN (published placement)', 'OSNet-AIN (searched here)']
    for m in result['models']:
        for key in ('cross_rank1', 'cross_mAP', 'same_rank1', 'same_mAP'):
            assert 0 <= m[key] <= 1
    assert result['models'][1]['params'] > result['models'][0]['params']  # IBN adds IN affine parameters
    assert [f['seed'] for f in result['search']['found']] == [1, 2]
    kept = result['selection']['kept_seed']
    assert result['search']['genotype'] == load_genotype(out / 'search' / 'genotype.json')['block_norms'] == \
        next(f['block_norms'] for f in result['search']['found'] if f['seed'] == kept)
    searched = result['models'][3]
    kept_row = next(row for row in result['selection']['seeds'] if row['seed'] == kept)
    assert searched['cross_mAP'] == kept_row['cross_mAP']  # the selection's training is the searched row
    published = load_genotype('osnet_ain')['block_norms']
    assert result['search']['is_published_ain'] == (searched['block_norms'] == published)
    table = (out / 'proof.md').read_text()
    assert table.count('\n| OSNet') == 4 and 'A->B mAP' in table and '- seed 2: `' in table


def test_timm_create_model_takes_a_genotype(tmp_path):
    from osnet_zoo.models.genotype import save_genotype
    ain = timm.create_model('osnet_x0_25', genotype='osnet_ain', num_classes=0)
    ref = timm.create_model('osnet_ain_x0_25', num_classes=0)
    assert [b.norm for s in (ain.conv2, ain.conv3, ain.conv4) for b in s] == \
        [b.norm for s in (ref.conv2, ref.conv3, ref.conv4) for b in s]
    assert {k: v.shape for k, v in ain.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    path = save_genotype({'block_norms': ['in_out'] * 6, 'conv1_in': False}, tmp_path / 'g.json')
    custom = timm.create_model('osnet_x0_25', genotype=str(path))
    assert all(b.norm == 'in_out' for b in custom.conv3) and not isinstance(custom.conv1.bn, torch.nn.InstanceNorm2d)
    with pytest.raises(ValueError, match='genotype'):
        timm.create_model('osnet_x0_25', genotype='osnet_ain', pretrained=True)
