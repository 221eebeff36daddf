"""ImageNet-1k (ILSVRC-2012) as class folders: ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``.

The validation images must be sorted into folders of their class first (the release ships them flat with
a ground-truth file; the usual ``valprep.sh`` does the sorting). Classes are the sorted training folder
names (wnids), the order the published ``imagenet`` classifiers use.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Tuple, Union

import torch

from .base import IMAGE_EXTENSIONS, DatasetLayoutError, find_dataset_dir
from .labelled import LabelledDataset, LabelledSplit

__all__ = ['imagenet', 'read_class_folders', 'IMAGENET_LAYOUT']

IMAGENET_LAYOUT = """\
  ROOT/imagenet/                         (or ROOT/ itself)
      train/n01440764/n01440764_10026.JPEG ...   (one folder per class, named by its wnid)
      val/n01440764/ILSVRC2012_val_00000293.JPEG ...   (the validation images sorted into the same folders)"""


def read_class_folders(directory: Path, classes: Dict[str, int], dataset: str) -> Tuple[List[str], List[int]]:
    """Image paths and labels of ``directory/<class>/*``; a folder of an unknown class is an error."""
    paths, labels = [], []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if not entry.is_dir():
            if entry.name.lower().endswith(IMAGE_EXTENSIONS):  # never counted without a word
                raise DatasetLayoutError(f'{dataset}: {entry.path}: an image outside the class folders; each image '
                                         f'lies in {directory}/<class>/ (sort the validation images into their '
                                         f'class folders). Expected layout:\n{IMAGENET_LAYOUT}')
            continue
        if entry.name not in classes:
            raise DatasetLayoutError(f'{dataset}: {entry.path}: class folder not among the {len(classes)} '
                                     f'training classes')
        for image in sorted(os.scandir(entry.path), key=lambda e: e.name):
            if image.is_dir():
                raise DatasetLayoutError(f'{dataset}: {image.path}: a folder inside the class folder {entry.name}; '
                                         f'its images are not read: move them into {entry.path} itself')
            if image.name.lower().endswith(IMAGE_EXTENSIONS):
                paths.append(image.path)
                labels.append(classes[entry.name])
    if not paths:
        raise DatasetLayoutError(f'{dataset}: no images in class folders under {directory}. Expected layout:\n'
                                 f'{IMAGENET_LAYOUT}')
    return paths, labels


def imagenet(root: Union[str, os.PathLike]) -> LabelledDataset:
    """ImageNet class folders: the training folders define the classes, val/ is the test split. Without
    train/ (scoring a published classifier on the validation set only) the val/ folders define them, and
    the training split is empty."""
    base = find_dataset_dir(root, ['imagenet', 'ILSVRC2012', ''], ['val'], 'imagenet', IMAGENET_LAYOUT)
    source = base / 'train' if (base / 'train').is_dir() else base / 'val'
    wnids = sorted(e.name for e in os.scandir(source) if e.is_dir())
    if not wnids:
        raise DatasetLayoutError(f'imagenet: no class folders in {source}. Expected layout:\n{IMAGENET_LAYOUT}')
    index = {w: i for i, w in enumerate(wnids)}
    splits = {}
    for split in ('train', 'val'):
        if split == 'train' and source.name == 'val':
            splits[split] = LabelledSplit(torch.zeros(0, dtype=torch.int64), paths=[])
            continue
        paths, labels = read_class_folders(base / split, index, 'imagenet')
        splits[split] = LabelledSplit(torch.tensor(labels, dtype=torch.int64), paths=paths)
    return LabelledDataset('imagenet', 'classification', wnids, splits['train'], splits['val'], root=Path(base))
