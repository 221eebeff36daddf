"""The training loader: worker processes decode and augment, yet every batch is a function of
(seed, epoch) alone — the same with 0 or 2 workers, and the same for an epoch whether or not the
(persistent) workers lived through earlier epochs. That is what lets a resumed run end where an
uninterrupted one does with workers on."""
from pathlib import Path

import pytest
import torch

from osnet_zoo.data import build_dataset, make_synthetic_reid
from osnet_zoo.data import build_train_loader

CFG = dict(height=64, width=32, batch_size=16,
           transforms=['random_flip', 'random_crop', 'random_patch', 'color_jitter', 'random_erase'])


@pytest.fixture(scope='module')
def train_items(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    make_synthetic_reid(root / 'Market-1501-v15.09.15', num_train_ids=16, num_test_ids=4, height=64, width=32,
                        num_distractors=0, num_junk=0, seed=3)
    return build_dataset(['market1501'], root).train


def _batches(items, workers, epochs, seed=5, num_instances=0):
    train = build_train_loader(items, CFG['height'], CFG['width'], CFG['batch_size'], CFG['transforms'],
                               num_instances=num_instances, seed=seed, workers=workers)
    loader, sampler = train.loader, train.sampler
    assert loader.persistent_workers == (workers > 0)
    out = {}
    for epoch in epochs:
        sampler.set_epoch(epoch)
        out[epoch] = [(b['image'], b['pid']) for b in loader]
    del loader, train  # shut the workers down now, not at interpreter exit
    return out


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


def test_batches_do_not_depend_on_workers_or_on_earlier_epochs(train_items):
    main_process = _batches(train_items, 0, [0, 1, 2])
    two_workers = _batches(train_items, 2, [0, 1, 2])
    resumed = _batches(train_items, 2, [2])  # fresh workers, straight to epoch 2: as after a resume
    for epoch in range(3):
        assert _same(main_process[epoch], two_workers[epoch])
    assert _same(main_process[2], resumed[2])
    assert not torch.equal(main_process[0][0][0], main_process[1][0][0])  # epochs differ
    assert not torch.equal(main_process[0][0][0], _batches(train_items, 0, [0], seed=6)[0][0][0])  # seeds differ


def test_identity_batches_are_p_by_k(train_items):
    batches = _batches(train_items, 0, [0], num_instances=4)[0]
    assert batches
    for _, pids in batches:
        assert sorted(torch.bincount(pids).tolist())[-4:] == [4, 4, 4, 4]


def test_too_few_images_for_a_batch_is_clear(train_items):
    with pytest.raises(ValueError, match='cannot fill one global batch of 16'):
        build_train_loader(train_items[:10], CFG['height'], CFG['width'], CFG['batch_size'], CFG['transforms'])
