"""Per-channel pixel statistics of a dataset's training images, for dataset-specific normalisation (ICCV 2019
supplementary, Table 12a); ``python -m osnet_zoo.data stats`` prints them."""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .datasets import LABELLED_DATASETS, LabelledSplit, is_known_dataset, unknown_dataset_message
from .images import ImageDataset
from .labelled import LabelledImages, build_labelled_transform
from .loader import data_root, load_datasets
from .transforms import build_test_transform

__all__ = ['channel_stats', 'dataset_stats']


def channel_stats(batches: Sequence[torch.Tensor]) -> Dict[str, List[float]]:
    """Mean and (population) standard deviation per channel of uint8 image batches (N, 3, H, W), on the 0..1
    scale, accumulated in float64."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count = 0
    for images in batches:
        x = images.to(torch.float64) / 255.0
        total += x.sum((0, 2, 3))
        squares += (x * x).sum((0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    if count == 0:
        raise ValueError('no images to compute statistics on')
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt()
    return dict(mean=mean.tolist(), std=std.tolist(), pixels_per_channel=count)


def _spread(n: int, keep: Optional[int]) -> List[int]:
    if keep is None or keep >= n:
        return list(range(n))
    if keep < 1:
        raise ValueError(f'--max-images must be >= 1, got {keep}')
    return np.unique(np.linspace(0, n - 1, keep).round().astype(int)).tolist()


def dataset_stats(name: str, root: Optional[str], height: int, width: int, max_images: Optional[int] = None,
                  batch_size: int = 64, workers: int = 0) -> Dict[str, Any]:
    """:func:`channel_stats` of the training split of dataset ``name`` (re-ID, attributes or categories; a CSV
    listing or a dataset folder too),
    each image resized to ``height`` x ``width``; ``max_images`` spreads a sample over the split."""
    if height < 1 or width < 1 or batch_size < 1:
        raise ValueError('--height, --width and --batch-size must be >= 1')
    if name in LABELLED_DATASETS:
        full: Any = LABELLED_DATASETS[name](data_root(root))
        train = full.train
        keep = _spread(len(train), max_images)
        subset = LabelledSplit(train.labels[keep], paths=[train.paths[i] for i in keep] if train.paths else None,
                               pixels=train.pixels[keep] if train.pixels is not None else None)
        dataset: Any = LabelledImages(subset, build_labelled_transform(height, width, (), train=False))
    elif is_known_dataset(name):  # a re-ID reader, a CSV listing or a dataset folder
        full = load_datasets([name], root)
        items = full.train
        if not items:
            raise ValueError(f'--dataset {name}: no training images to compute statistics on')
        dataset = ImageDataset([items[i] for i in _spread(len(items), max_images)],
                               build_test_transform(height, width, normalize=False), as_tensor=True)
    else:
        raise ValueError(unknown_dataset_message(name, '--dataset', LABELLED_DATASETS))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    stats = channel_stats(b['image'] for b in tqdm(loader, desc=f'{name} train', unit='batch', file=sys.stderr))
    return dict(dataset=name, split='train', images=len(dataset), size=[height, width], **stats,
                summary=full.summary())
