"""Loaders of the labelled tasks (attributes, categories): a :class:`LabelledSplit` as uint8 batches.

Training batches come from :class:`~osnet_zoo.data.EpochBatches` (shuffled, sharded over DDP ranks, one
augmentation seed per sample), so a resumed run sees the batches an uninterrupted one would. The
augmentations of the papers' experiments:

* ``random_flip``: mirroring;
* ``random_crop``: the "random translation" of the re-ID recipes (half of the time enlarge by 1/8 and crop
  back at a random place; PA-100K);
* ``pad_crop``: pad 4 pixels of zeros on each side and crop back at a random place (the CIFAR setting of
  He et al., "Deep Residual Learning", CVPR 2016, Sec. 4.2, which pre-activation ResNet follows);
* ``resize_crop``: resize to size / 0.875 (256 for 224) and crop a random size x size window (ImageNet; the
  test images then get the 0.875 centre crop, "224 x 224 centre crop from 256 x 256").
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from .. import distributed as du
from .datasets.labelled import LabelledSplit
from .images import read_image_tensor
from .loader import TrainLoader
from .sampler import EpochBatches
from .seeding import seeded_rng

__all__ = ['LABELLED_AUGMENTATIONS', 'CROP_PCT', 'LabelledImages', 'build_labelled_transform',
           'build_labelled_train_loader', 'build_labelled_eval_loader']

LABELLED_AUGMENTATIONS = ('random_flip', 'random_crop', 'pad_crop', 'resize_crop')
CROP_PCT = 0.875  # 224 / 256: the ImageNet crop of the OSNet paper (Sec. 4.4)


def build_labelled_transform(height: int, width: int, augmentations: Sequence[str] = (),
                             train: bool = True, crop_pct: float = CROP_PCT) -> v2.Compose:
    """uint8 (3, H, W) in, uint8 (3, height, width) out: the training pipeline with ``augmentations``, or
    (``train=False``) the test pipeline that matches it (the centre crop when training used ``resize_crop``;
    ``crop_pct``: the crop's share of the resized image)."""
    unknown = set(augmentations) - set(LABELLED_AUGMENTATIONS)
    if unknown:
        raise ValueError(f'--transforms {sorted(unknown)[0]}: not an augmentation of the attribute / classification '
                         f'tasks; choose from {", ".join(LABELLED_AUGMENTATIONS)}')
    size = (height, width)
    if not 0 < crop_pct <= 1:
        raise ValueError(f'crop_pct must be in (0, 1], got {crop_pct}')
    big = (int(height / crop_pct), int(width / crop_pct))  # floor, as timm: 224 / 0.875 = 256
    steps: list = [v2.ToImage()]
    if 'resize_crop' in augmentations:
        steps += [v2.Resize(big, antialias=True), v2.RandomCrop(size) if train else v2.CenterCrop(size)]
    elif train and 'pad_crop' in augmentations:
        steps += [v2.Resize(size, antialias=True), v2.RandomCrop(size, padding=4)]
    elif train and 'random_crop' in augmentations:
        enlarged = (int(round(height * 1.125)), int(round(width * 1.125)))
        steps.append(v2.RandomChoice([v2.Resize(size, antialias=True),
                                      v2.Compose([v2.Resize(enlarged, antialias=True), v2.RandomCrop(size)])]))
    else:
        steps.append(v2.Resize(size, antialias=True))
    if train and 'random_flip' in augmentations:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


class LabelledImages(Dataset):
    """A torch Dataset over a :class:`LabelledSplit`: ``{'image': uint8 (3, H, W), 'label', 'index'}``.
    A key may be an ``(index, seed)`` pair (EpochBatches): the transform's randomness then comes from
    ``seed`` alone."""

    def __init__(self, split: LabelledSplit, transform: Any):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        img = self.split.pixels[index] if self.split.pixels is not None else read_image_tensor(self.split.paths[index])
        with seeded_rng(seed) if seed is not None else contextlib.nullcontext():
            img = self.transform(img)
        return {'image': torch.as_tensor(img), 'label': self.split.labels[index], 'index': index}


def build_labelled_train_loader(split: LabelledSplit, height: int, width: int, batch_size: int,
                                augmentations: Sequence[str], seed: int = 0, workers: int = 0,
                                pin_memory: bool = False) -> TrainLoader:
    """Shuffled training batches of ``split`` (whole batches, this rank's share), augmented per sample."""
    sampler = EpochBatches(range(len(split)), batch_size, 0, seed, du.get_rank(), du.get_world_size())
    if len(sampler) == 0:
        raise ValueError(f'{len(split)} training images cannot fill one batch of {batch_size} on each of '
                         f'{du.get_world_size()} processes; lower the batch size.')
    dataset = LabelledImages(split, build_labelled_transform(height, width, augmentations, train=True))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                        drop_last=True, persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)
    return TrainLoader(loader, sampler)


def build_labelled_eval_loader(split: LabelledSplit, height: int, width: int, augmentations: Sequence[str] = (),
                               batch_size: int = 64, workers: int = 0, pin_memory: bool = False,
                               crop_pct: float = CROP_PCT) -> DataLoader:
    """``split`` in order, with the test pipeline that matches the training ``augmentations``."""
    dataset = LabelledImages(split, build_labelled_transform(height, width, augmentations, False, crop_pct))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory)
