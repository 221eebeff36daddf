"""`--batch-size` is the global batch: the epoch sampler splits each global batch evenly over the processes,
and a real `torchrun --nproc_per_node 2` (gloo, CPU) step sees the same images and makes the same update as
one process."""
import json

import pytest
import torch

from osnet_zoo.data import EpochBatches, ReIDItem
from conftest import REPO, run_python

ITEMS = [ReIDItem(f'{i}.jpg', i // 4, i % 2) for i in range(40)]  # 10 identities x 4 images


@pytest.mark.parametrize('num_instances', [0, 4])
def test_ranks_split_each_global_batch(num_instances):
    one = list(EpochBatches(ITEMS, 16, num_instances, seed=3))
    shares = [list(EpochBatches(ITEMS, 16, num_instances, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert all(s.per_rank_batch == 8 for s in [EpochBatches(ITEMS, 16, world_size=2)])
    assert len(shares[0]) == len(shares[1]) == len(one) // 2
    for step in range(len(one) // 16):  # step b of two processes together = step b of one process
        together = shares[0][step * 8:(step + 1) * 8] + shares[1][step * 8:(step + 1) * 8]
        assert together == one[step * 16:(step + 1) * 16]
    assert len(EpochBatches(ITEMS, 16, num_instances, rank=1, world_size=2)) == len(shares[1])


def test_indivisible_global_batch_is_an_error_naming_both_numbers():
    with pytest.raises(ValueError, match=r'global batch size 10 .* 4 processes'):
        EpochBatches(ITEMS, 10, world_size=4)
    with pytest.raises(ValueError, match=r'per-process batch 6 .* num_instances \(4\)'):
        EpochBatches(ITEMS, 12, num_instances=4, world_size=2)


def test_two_processes_make_the_same_first_step_as_one(tmp_path):
    script = str(REPO / 'tests' / 'global_batch_step.py')
    root = str(tmp_path / 'data')
    one, two = tmp_path / 'one', tmp_path / 'two'
    one.mkdir(), two.mkdir()
    runs = [
        [script, str(one), root, '8'],
        ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', script, str(two), root, '8'],
    ]
    for args in runs:
        r = run_python(*args, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
    single = torch.load(one / 'rank0.pt', weights_only=True)
    ranks = [torch.load(two / f'rank{r}.pt', weights_only=True) for r in range(2)]
    assert single['images'].shape[0] == 8 and [s['images'].shape[0] for s in ranks] == [4, 4]
    torch.testing.assert_close(torch.cat([s['images'] for s in ranks]), single['images'], rtol=0, atol=0)
    for s in ranks:  # every process mixes the candidates with the same Gumbel draw
        torch.testing.assert_close(s['alphas'], single['alphas'], rtol=0, atol=0)
    a, b = torch.load(one / 'state.pt', weights_only=True), torch.load(two / 'state.pt', weights_only=True)
    assert a.keys() == b.keys()
    for key in a:  # the update of the first step: the same to fp32 rounding
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    assert not torch.equal(a['arch_weights'], torch.ones(6, 4))  # the step did move the architecture weights
    for folder, world, per_rank in ((one, 1, 8), (two, 2, 4)):
        config = json.loads((folder / 'config.json').read_text())
        assert (config['batch_size'], config['world_size'], config['batch_size_per_rank']) == (8, world, per_rank)
