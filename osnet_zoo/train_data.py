"""Data for ``train.py``: the training loader (sharded over DDP ranks, reproducible per epoch) and the
evaluation splits, built from ``osnet_zoo.data``."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Sampler

from osnet_zoo import distributed as du
from osnet_zoo.data import (
    ImageDataset, RandomIdentitySampler, ReIDDataset, ReIDItem, build_dataset, build_train_transform,
)

__all__ = ['DEFAULT_DATA_ROOT', 'TrainData', 'EpochBatches', 'PairDataset', 'build_train_loader', 'build_eval_splits',
           'extract', 'Embedder']

DEFAULT_DATA_ROOT = Path(os.environ.get('OSNET_ZOO_DATA', '~/.cache/osnet_zoo/data')).expanduser()


class EpochBatches(Sampler[int]):
    """Indices of this rank's share of an epoch.

    The whole epoch's order is drawn from (seed, epoch) — a P×K identity order when ``num_instances`` is
    set, else a permutation — identically on every rank; rank r then takes batches r, r+W, r+2W, ... So the
    ranks see disjoint batches, and an epoch's order does not depend on what ran before it (exact resume).
    """

    def __init__(self, items: Sequence[ReIDItem], batch_size: int, num_instances: int = 0, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.items, self.batch_size, self.seed = items, batch_size, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.identity = RandomIdentitySampler(items, batch_size, num_instances, seed) if num_instances else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _epoch_order(self) -> List[int]:
        if self.identity is not None:
            self.identity.set_epoch(self.epoch)
            return list(self.identity)
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return torch.randperm(len(self.items), generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self._epoch_order()
        n_batches = len(order) // self.batch_size // self.world_size  # equal count on every rank
        for b in range(n_batches):
            start = (b * self.world_size + self.rank) * self.batch_size
            yield from order[start:start + self.batch_size]

    def __len__(self) -> int:
        n = len(self.identity) if self.identity is not None else len(self.items)
        return n // self.batch_size // self.world_size * self.batch_size


class PairDataset(torch.utils.data.Dataset):
    """(image tensor, pid) pairs for the training loop."""

    def __init__(self, items: Sequence[ReIDItem], transform):
        self.images = ImageDataset(items, transform)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        sample = self.images[i]
        return sample['image'], sample['pid']


@dataclass
class TrainData:
    loader: DataLoader
    sampler: EpochBatches
    dataset: ReIDDataset
    num_classes: int

    @property
    def images_per_epoch(self) -> int:
        return len(self.sampler) * du.get_world_size()

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


def data_root(args: argparse.Namespace) -> Path:
    return Path(args.root).expanduser() if args.root else DEFAULT_DATA_ROOT


def _build(names: Sequence[str], root: Path, combineall: bool = False) -> ReIDDataset:
    # Generating the synthetic set is done by one process; the others wait and then read it.
    if du.is_main_process():
        ds = build_dataset(list(names), root, combineall=combineall)
    du.barrier()
    if not du.is_main_process():
        ds = build_dataset(list(names), root, combineall=combineall)
    return ds


def build_train_loader(cfg: Dict[str, Any], args: argparse.Namespace, seed: int) -> TrainData:
    dataset = _build(cfg['sources'], data_root(args), cfg['combineall'])
    if du.is_main_process():
        print(dataset.summary())
    transform = build_train_transform(cfg['height'], cfg['width'], cfg['transforms'])
    num_instances = cfg['num_instances'] if cfg['triplet_weight'] > 0 else 0
    sampler = EpochBatches(dataset.train, cfg['batch_size'], num_instances, seed, du.get_rank(), du.get_world_size())
    if len(sampler) == 0:
        raise ValueError(f"{len(dataset.train)} training images cannot fill one batch of {cfg['batch_size']} "
                         f'on each of {du.get_world_size()} processes; lower --batch-size.')
    loader = DataLoader(PairDataset(dataset.train, transform), batch_size=cfg['batch_size'], sampler=sampler,
                        num_workers=args.workers, pin_memory=args.device.startswith('cuda'), drop_last=True)
    return TrainData(loader, sampler, dataset, dataset.num_train_pids)


def build_eval_splits(cfg: Dict[str, Any], args: argparse.Namespace) -> Dict[str, Tuple[list, list]]:
    """{target: (query items, gallery items)} for every evaluation target."""
    root = data_root(args)
    out = {}
    for target in cfg['targets']:
        ds = _build([target], root)
        out[target] = (ds.query, ds.gallery)
    return out


class Embedder(nn.Module):
    """The re-ID embedding (``fc`` output) of a model that also has a classifier."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def extract(models: Sequence[nn.Module], items: Sequence[ReIDItem], cfg: Dict[str, Any],
            args: argparse.Namespace, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings of ``items`` (concatenated over ``models``: the DML ensemble), pids and camids.

    Each rank embeds a contiguous share; the shares are gathered in rank order.
    """
    from osnet_zoo.evaluate import extract_features
    rank, world = du.get_rank(), du.get_world_size()
    per = (len(items) + world - 1) // world
    mine = list(items[rank * per:(rank + 1) * per])
    feats = torch.cat([
        extract_features(Embedder(m).eval(), mine, device, batch_size=max(cfg['batch_size'], 64),
                         num_workers=args.workers, size=(cfg['height'], cfg['width']), amp=args.amp != 'none',
                         desc='embedding')
        for m in models], dim=1) if mine else torch.zeros(0, 512 * len(models))
    feats = du.all_gather_cat(feats.to(device)).cpu()
    pids = torch.tensor([it.pid for it in items])
    camids = torch.tensor([it.camid for it in items])
    return feats, pids, camids
