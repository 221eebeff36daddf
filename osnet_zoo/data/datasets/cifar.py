"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from their binary releases: raw bytes, nothing unpickled.

``cifar-10-batches-bin/``: ``data_batch_1.bin`` .. ``data_batch_5.bin`` (50,000 training images),
``test_batch.bin`` (10,000), ``batches.meta.txt`` (the 10 class names); each record is 1 label byte and
3,072 pixel bytes (the 1,024 red, then green, then blue values of a 32x32 image, row by row).
``cifar-100-binary/``: ``train.bin``, ``test.bin``, ``fine_label_names.txt``; each record is a coarse and
a fine label byte, then the 3,072 pixel bytes. The fine labels (100 classes) are the benchmark's.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import numpy as np
import torch

from .base import DatasetLayoutError, find_dataset_dir
from .labelled import LabelledDataset, LabelledSplit, check_class_names

__all__ = ['cifar10', 'cifar100', 'read_cifar_binary', 'CIFAR10_LAYOUT', 'CIFAR100_LAYOUT']

_PIXELS = 3 * 32 * 32

CIFAR10_LAYOUT = """\
  ROOT/cifar10/cifar-10-batches-bin/     (or ROOT/cifar-10-batches-bin/: the "CIFAR-10 binary version")
      data_batch_1.bin ... data_batch_5.bin, test_batch.bin, batches.meta.txt"""

CIFAR100_LAYOUT = """\
  ROOT/cifar100/cifar-100-binary/        (or ROOT/cifar-100-binary/: the "CIFAR-100 binary version")
      train.bin, test.bin, fine_label_names.txt"""


def read_cifar_binary(path: Union[str, os.PathLike], label_bytes: int, label_index: int,
                      num_classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """A binary batch file as (uint8 images (N, 3, 32, 32), int64 labels (N,)): records of
    ``label_bytes`` label bytes, the label being byte ``label_index``, then 3,072 pixel bytes. A file
    that is not a whole number of records, or a label outside 0..num_classes-1, is an error naming it."""
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    record = label_bytes + _PIXELS
    if raw.size == 0 or raw.size % record:
        raise DatasetLayoutError(f'{path}: {raw.size} bytes is not a whole number of {record}-byte CIFAR records '
                                 '(is it the binary version of the release?)')
    rows = raw.reshape(-1, record)
    labels = rows[:, label_index].astype(np.int64)
    if labels.max() >= num_classes:
        raise DatasetLayoutError(f'{path}: label {labels.max()} outside 0..{num_classes - 1}')
    images = rows[:, label_bytes:].reshape(-1, 3, 32, 32)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels)


def _names(path: Path, dataset: str) -> List[str]:
    try:
        text = path.read_text(encoding='utf-8')
    except UnicodeDecodeError as e:
        raise DatasetLayoutError(f'{dataset}: {path} is not a text file of class names, one per line (not UTF-8: '
                                 f'byte {e.start}); is it the binary release\'s file?') from None
    return check_class_names([line.strip() for line in text.splitlines() if line.strip()], dataset, path)


def _split(files: Sequence[Path], label_bytes: int, label_index: int, num_classes: int) -> LabelledSplit:
    parts = [read_cifar_binary(f, label_bytes, label_index, num_classes) for f in files]
    return LabelledSplit(torch.cat([p[1] for p in parts]), pixels=torch.cat([p[0] for p in parts]))


def cifar10(root: Union[str, os.PathLike]) -> LabelledDataset:
    """CIFAR-10's binary release: 50,000 training and 10,000 test images of 10 classes."""
    train_files = [f'data_batch_{i}.bin' for i in range(1, 6)]
    base = find_dataset_dir(root, ['cifar10/cifar-10-batches-bin', 'cifar-10-batches-bin', ''],
                            train_files + ['test_batch.bin', 'batches.meta.txt'], 'cifar10', CIFAR10_LAYOUT)
    classes = _names(base / 'batches.meta.txt', 'cifar10')
    return LabelledDataset('cifar10', 'classification', classes,
                           _split([base / f for f in train_files], 1, 0, len(classes)),
                           _split([base / 'test_batch.bin'], 1, 0, len(classes)), root=base)


def cifar100(root: Union[str, os.PathLike]) -> LabelledDataset:
    """CIFAR-100's binary release: 50,000 training and 10,000 test images of 100 (fine) classes."""
    base = find_dataset_dir(root, ['cifar100/cifar-100-binary', 'cifar-100-binary', ''],
                            ['train.bin', 'test.bin', 'fine_label_names.txt'], 'cifar100', CIFAR100_LAYOUT)
    classes = _names(base / 'fine_label_names.txt', 'cifar100')
    return LabelledDataset('cifar100', 'classification', classes,
                           _split([base / 'train.bin'], 2, 1, len(classes)),
                           _split([base / 'test.bin'], 2, 1, len(classes)), root=base)
