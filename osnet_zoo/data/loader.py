"""The loaders that training, NAS, evaluation and the benchmarks all use, and where datasets are read from.

* :func:`build_train_loader`: P×K or shuffled batches, sharded over DDP ranks, each sample augmented from its
  own seed (:class:`~osnet_zoo.data.EpochBatches`), decoded and augmented in uint8 on worker processes that
  live for the whole run. Batches are ``{'image': uint8 (N, 3, H, W), 'pid': ..., ...}``: finish the images
  with :func:`~osnet_zoo.data.normalize_batch` on the device (a quarter of the bytes to pin and copy).
* :func:`build_eval_loader`: the same images in order, resized in uint8 on the workers.
* :func:`load_datasets`: ``build_dataset`` on the main process first (it may generate or extract files),
  then on the other ranks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader

from .. import distributed as du
from .datasets import ReIDDataset, ReIDItem, build_dataset
from .images import ImageDataset
from .sampler import EpochBatches
from .transforms import IMAGENET_MEAN, IMAGENET_STD, build_test_transform, build_train_transform, normalize_batch

__all__ = ['DEFAULT_DATA_ROOT', 'data_root', 'load_datasets', 'TrainLoader', 'build_train_loader', 'device_batches',
           'build_eval_loader']

# Where datasets live when no root is given ($OSNET_ZOO_DATA overrides it); synthetic sets are generated here.
DEFAULT_DATA_ROOT = Path(os.environ.get('OSNET_ZOO_DATA', '~/.cache/osnet_zoo/data')).expanduser()


def data_root(root: Union[str, os.PathLike, None]) -> Path:
    """``root`` expanded, or the default data root."""
    return Path(root).expanduser() if root else DEFAULT_DATA_ROOT


def load_datasets(names: Union[str, Sequence[str]], root: Union[str, os.PathLike, None] = None,
                  combineall: bool = False, per_dataset: Optional[Mapping[str, Mapping[str, Any]]] = None,
                  **options: Any) -> ReIDDataset:
    """``build_dataset(names, root, ...)`` on the main process first, then on the other DDP ranks, which
    then read what it generated. ``options`` (e.g. synthetic sizes) go to synthetic datasets only;
    ``per_dataset`` (name -> options, e.g. the small benchmarks' ``split_id``) to the named readers."""
    names = [names] if isinstance(names, str) else list(names)
    kwargs = options if options and all(n.startswith('synthetic') for n in names) else {}
    with du.main_process_first():
        return build_dataset(names, data_root(root), combineall=combineall, per_dataset=per_dataset, **kwargs)


@dataclass
class TrainLoader:
    """A training loader, its epoch sampler and the number of images one epoch feeds (all ranks)."""
    loader: Optional[DataLoader]
    sampler: EpochBatches

    @property
    def per_rank_batch(self) -> int:
        """Images each rank loads per step (the global batch over the world size)."""
        return self.sampler.per_rank_batch

    @property
    def images_per_epoch(self) -> int:
        """This rank's images per epoch (whole batches only) times the world size."""
        return len(self.sampler) * self.sampler.world_size

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch the next pass draws its order and augmentation seeds from; call it before
        each epoch."""
        self.sampler.set_epoch(epoch)

    def close(self) -> None:
        """Stop the loader's persistent worker processes now rather than at interpreter exit."""
        self.loader = None


def build_train_loader(items: Sequence[ReIDItem], height: int, width: int, batch_size: int,
                       augmentations: Sequence[str] = ('random_flip',), num_instances: int = 0, seed: int = 0,
                       workers: int = 0, pin_memory: bool = False) -> TrainLoader:
    """The training loader over ``items``: ``batch_size`` images per step over all DDP ranks (the global
    batch, split evenly: each rank loads ``batch_size / world_size``; an indivisible size is an error naming
    both), resized to ``height`` x ``width`` with ``augmentations``; ``num_instances`` > 0 draws P×K identity
    batches.

    Workers persist across epochs (no start-up cost per epoch), which per-sample seeds make safe for exact
    resume; random patches are cut from other training images. benchmarks/bench_loader.py measures it.
    """
    transform = build_train_transform(height, width, augmentations, patch_donors=[it.path for it in items],
                                      normalize=False)
    sampler = EpochBatches(items, batch_size, num_instances, seed, du.get_rank(), du.get_world_size())
    if len(sampler) == 0:
        raise ValueError(f'{len(items)} training images cannot fill one global batch of {batch_size} '
                         f'({du.get_world_size()} processes); lower the batch size.')
    loader = DataLoader(ImageDataset(items, transform, as_tensor=True), batch_size=sampler.per_rank_batch,
                        sampler=sampler, num_workers=workers, pin_memory=pin_memory, drop_last=True,
                        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)
    return TrainLoader(loader, sampler)


def device_batches(loader: DataLoader, device: torch.device, channels_last: bool = False,
                   max_steps: int = 0, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                   target: str = 'pid') -> Tuple[Iterator[Tuple[torch.Tensor, torch.Tensor]], int]:
    """One epoch of a training loader on ``device``: ``(images, targets)`` with the images normalised there
    (``normalize_batch`` with ``mean`` / ``std``, channels_last when asked) and each batch's ``target`` entry
    (``'pid'``; ``'label'`` for attributes and categories), at most ``max_steps`` batches (0: all); and the
    number of batches it yields."""
    steps = len(loader) if not max_steps else min(len(loader), max_steps)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def batches() -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for step, batch in enumerate(loader):
            if step >= steps:
                break
            yield (normalize_batch(batch['image'].to(device, non_blocking=True), mean, std, memory_format),
                   batch[target].to(device, non_blocking=True))

    return batches(), steps


def build_eval_loader(items: Sequence[Union[ReIDItem, str, os.PathLike]], size: Tuple[int, int] = (256, 128),
                      batch_size: int = 64, workers: int = 0, pin_memory: bool = False,
                      mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> DataLoader:
    """``items`` (ReIDItems or image paths) in order, resized (squash) to ``size`` in uint8 on the workers;
    normalise each batch's ``'image'`` with ``normalize_batch(images, mean, std)`` on the device."""
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
    items = [it if isinstance(it, ReIDItem) else ReIDItem(os.fspath(it), -1, -1) for it in items]
    transform = build_test_transform(*size, mean, std, normalize=False)
    return DataLoader(ImageDataset(items, transform, as_tensor=True), batch_size=batch_size, shuffle=False,
                      num_workers=workers, pin_memory=pin_memory)
