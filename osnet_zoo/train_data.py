"""Data for ``train.py``: the training loader (sharded over DDP ranks, reproducible per epoch) and the
evaluation splits, built from ``osnet_zoo.data``."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Sampler

from osnet_zoo import distributed as du
from osnet_zoo.data import (
    ImageDataset, RandomIdentitySampler, ReIDDataset, ReIDItem, build_dataset, build_train_transform, sample_seed,
    seeded_rng,
)

__all__ = ['DEFAULT_DATA_ROOT', 'TrainData', 'EpochBatches', 'PairDataset', 'make_train_loader', 'build_train_loader',
           'build_eval_splits', 'extract', 'Embedder']

DEFAULT_DATA_ROOT = Path(os.environ.get('OSNET_ZOO_DATA', '~/.cache/osnet_zoo/data')).expanduser()


class EpochBatches(Sampler[Tuple[int, int]]):
    """``(index, sample seed)`` pairs of this rank's share of an epoch.

    The whole epoch's order is drawn from (seed, epoch) — a P×K identity order when ``num_instances`` is
    set, else a permutation — identically on every rank; rank r then takes batches r, r+W, r+2W, ... So the
    ranks see disjoint batches, and an epoch's order does not depend on what ran before it (exact resume).
    Each sample also gets a seed from (seed, epoch, position in the epoch's order), from which
    ``PairDataset`` draws its augmentation: the batches are the same whichever worker builds them, however
    many workers there are, and whether or not the workers lived through earlier epochs.
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

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        order = self._epoch_order()
        n_batches = len(order) // self.batch_size // self.world_size  # equal count on every rank
        for b in range(n_batches):
            start = (b * self.world_size + self.rank) * self.batch_size
            for pos in range(start, start + self.batch_size):
                yield order[pos], sample_seed(self.seed, self.epoch, pos)

    def __len__(self) -> int:
        n = len(self.identity) if self.identity is not None else len(self.items)
        return n // self.batch_size // self.world_size * self.batch_size


class PairDataset(torch.utils.data.Dataset):
    """(image tensor, pid) pairs for the training loop. Keys are indices, or ``(index, seed)`` pairs
    (``EpochBatches``): then the transform draws from generators seeded with ``seed`` alone.
    ``as_tensor``: decode to a uint8 tensor (torchvision) rather than a PIL image."""

    def __init__(self, items: Sequence[ReIDItem], transform, as_tensor: bool = False):
        self.images = ImageDataset(items, transform, as_tensor=as_tensor)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: Union[int, Tuple[int, int]]):
        if isinstance(key, tuple):
            index, seed = key
            with seeded_rng(seed):
                sample = self.images[index]
        else:
            sample = self.images[key]
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

    def close(self) -> None:
        """Stop the loader's persistent worker processes now rather than at interpreter exit."""
        self.loader = None


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


def make_train_loader(items: Sequence[ReIDItem], cfg: Dict[str, Any], seed: int, workers: int, pin_memory: bool,
                      num_instances: int = 0) -> Tuple[DataLoader, EpochBatches]:
    """The training loader over ``items`` with ``cfg``'s size, batch and augmentations, and its sampler.

    Batches are uint8 (N, 3, H, W): finish them with ``osnet_zoo.data.normalize_batch`` on the device.
    Workers decode (torchvision) and augment in uint8; they persist across epochs (no start-up cost per
    epoch), which per-sample seeds make safe for exact resume. Random patches are cut from other training
    images. benchmarks/bench_loader.py measures it.
    """
    transform = build_train_transform(cfg['height'], cfg['width'], cfg['transforms'],
                                      patch_donors=[it.path for it in items], normalize=False)
    sampler = EpochBatches(items, cfg['batch_size'], num_instances, seed, du.get_rank(), du.get_world_size())
    if len(sampler) == 0:
        raise ValueError(f"{len(items)} training images cannot fill one batch of {cfg['batch_size']} "
                         f'on each of {du.get_world_size()} processes; lower the batch size.')
    loader = DataLoader(PairDataset(items, transform, as_tensor=True), batch_size=cfg['batch_size'], sampler=sampler,
                        num_workers=workers, pin_memory=pin_memory, drop_last=True, persistent_workers=workers > 0,
                        prefetch_factor=4 if workers > 0 else None)
    return loader, sampler


def build_train_loader(cfg: Dict[str, Any], args: argparse.Namespace, seed: int) -> TrainData:
    dataset = _build(cfg['sources'], data_root(args), cfg['combineall'])
    if du.is_main_process():
        print(dataset.summary())
    num_instances = cfg['num_instances'] if cfg['triplet_weight'] > 0 else 0
    loader, sampler = make_train_loader(dataset.train, cfg, seed, args.workers, args.device.startswith('cuda'),
                                        num_instances)
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
