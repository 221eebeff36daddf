"""P x K identity sampling for metric-learning losses (e.g. triplet): P identities, K images each, per batch."""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterator, List, Sequence, Union

import numpy as np
from torch.utils.data import Sampler

from .datasets.base import ReIDItem

__all__ = ['RandomIdentitySampler']


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
