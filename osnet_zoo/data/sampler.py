"""Sampling for training: P x K identity batches for metric-learning losses (e.g. triplet), and the epoch
batching that shards them over DDP ranks with a per-sample augmentation seed."""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterator, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Sampler

from .datasets.base import ReIDItem
from .transforms import sample_seed

__all__ = ['RandomIdentitySampler', 'EpochBatches']


class RandomIdentitySampler(Sampler[int]):
    """Yields dataset indices so that every ``batch_size`` consecutive ones hold ``batch_size // num_instances``
    identities with ``num_instances`` images each. Identities with fewer images are sampled with
    replacement. Each epoch (each ``iter``) reshuffles, reproducibly from ``seed``.
    """

    def __init__(self, items: Sequence[Union[ReIDItem, int]], batch_size: int, num_instances: int = 4,
                 seed: int = 0):
        if num_instances < 1 or batch_size < num_instances or batch_size % num_instances:
            raise ValueError(f'batch_size ({batch_size}) must be a positive multiple of num_instances '
                             f'({num_instances})')
        pids = [it.pid if isinstance(it, ReIDItem) else int(it) for it in items]
        self.index_of: Dict[int, List[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            self.index_of[pid].append(i)
        self.pids = sorted(self.index_of)
        self.batch_size, self.num_instances = batch_size, num_instances
        self.ids_per_batch = batch_size // num_instances
        if len(self.pids) < self.ids_per_batch:
            raise ValueError(f'{len(self.pids)} identities cannot fill a batch of {self.ids_per_batch} identities')
        self.seed, self.epoch = seed, 0
        groups = sum(max(len(v), num_instances) // num_instances for v in self.index_of.values())
        self._length = (groups // self.ids_per_batch) * batch_size  # an estimate: the exact count varies

    def set_epoch(self, epoch: int) -> None:
        """Draw the next ``iter``'s order from (seed, ``epoch``); each ``iter`` then moves
        on to the following epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        k = self.num_instances
        groups: Dict[int, List[List[int]]] = {}
        for pid in self.pids:
            idx = np.asarray(self.index_of[pid])
            idx = rng.choice(idx, size=k, replace=True) if len(idx) < k else rng.permutation(idx)
            groups[pid] = [idx[i:i + k].tolist() for i in range(0, len(idx) - k + 1, k)]
        available = [pid for pid in self.pids if groups[pid]]
        out: List[int] = []
        while len(available) >= self.ids_per_batch:
            chosen = rng.choice(len(available), size=self.ids_per_batch, replace=False)
            for j in chosen:
                out += groups[available[j]].pop()
            available = [pid for pid in available if groups[pid]]
        return iter(out)

    def __len__(self) -> int:
        return self._length


class EpochBatches(Sampler[Tuple[int, int]]):
    """``(index, sample seed)`` pairs of this rank's share of an epoch.

    ``batch_size`` is the global batch: the images of one optimisation step over all ranks. The whole
    epoch's order is drawn from (seed, epoch) — a P×K identity order when ``num_instances`` is set, else a
    permutation — identically on every rank; global batch b is positions ``[b*B, (b+1)*B)`` of that order, and
    rank r takes the r-th of its ``world_size`` equal slices (``per_rank_batch`` images). So the ranks see
    disjoint slices, one step of W processes sees the same images as one step of a single process, and an
    epoch's order does not depend on what ran before it (exact resume).
    Each sample also gets a seed from (seed, epoch, position in the epoch's order), from which
    ``ImageDataset`` draws its augmentation: the batches are the same whichever worker or rank builds them,
    however many workers there are, and whether or not the workers lived through earlier epochs.
    A global batch that ``world_size`` does not divide is a ``ValueError`` naming both numbers.
    """

    def __init__(self, items: Sequence[ReIDItem], batch_size: int, num_instances: int = 0, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
        if batch_size % world_size:
            raise ValueError(f'the global batch size {batch_size} cannot be split evenly over {world_size} '
                             f'processes; use a multiple of {world_size}.')
        self.per_rank_batch = batch_size // world_size
        if num_instances and self.per_rank_batch % num_instances:
            raise ValueError(f'the per-process batch {self.per_rank_batch} (global batch {batch_size} over '
                             f'{world_size} processes) must be a multiple of num_instances ({num_instances}), '
                             'so that every process gets whole identities.')
        self.items, self.batch_size, self.seed = items, batch_size, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.identity = RandomIdentitySampler(items, batch_size, num_instances, seed) if num_instances else None

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch the next ``iter`` yields: its order and sample seeds come from (seed, epoch)."""
        self.epoch = epoch

    def _epoch_order(self) -> List[int]:
        if self.identity is not None:
            self.identity.set_epoch(self.epoch)
            return list(self.identity)
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return torch.randperm(len(self.items), generator=g).tolist()

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        order = self._epoch_order()
        per = self.per_rank_batch
        for b in range(len(order) // self.batch_size):  # whole global batches: equal count on every rank
            start = b * self.batch_size + self.rank * per
            for pos in range(start, start + per):
                yield order[pos], sample_seed(self.seed, self.epoch, pos)

    def __len__(self) -> int:
        n = len(self.identity) if self.identity is not None else len(self.items)
        return n // self.batch_size * self.per_rank_batch
