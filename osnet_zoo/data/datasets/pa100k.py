"""PA-100K (Liu et al., "HydraPlus-Net", ICCV 2017): 100,000 pedestrian images, 26 binary attributes.

The release holds ``annotation.mat`` (MATLAB v5: ``attributes``, a 26x1 cell of names;
``train_images_name`` / ``val_images_name`` / ``test_images_name``, cells of file names;
``train_label`` / ``val_label`` / ``test_label``, N x 26 arrays of 0/1) and the images in ``data/``:
80,000 train, 10,000 val, 10,000 test. Reading the .mat file needs scipy (``pip install "osnet-zoo[attributes]"``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Union

import numpy as np
import torch

from .base import DatasetLayoutError, find_dataset_dir, optional_import
from .labelled import LabelledDataset, LabelledSplit, check_class_names

__all__ = ['pa100k', 'PA100K_LAYOUT', 'PA100K_SPLITS']

PA100K_SPLITS = ('train', 'val', 'test')

PA100K_LAYOUT = """\
  ROOT/pa100k/                           (or ROOT/PA-100K/, or ROOT/ itself)
      annotation.mat                     (attributes; train/val/test_images_name; train/val/test_label)
      data/000001.jpg ... 100000.jpg"""


def _strings(cell: Any, key: str, path: Path) -> List[str]:
    """A MATLAB cell array of strings (as scipy reads it: an object array of 1-element string arrays)."""
    try:
        return [str(np.asarray(v).reshape(-1)[0]) for v in np.asarray(cell, dtype=object).reshape(-1)]
    except (IndexError, TypeError, ValueError):
        raise DatasetLayoutError(f'pa100k: {path}: {key} is not a cell array of strings') from None


def pa100k(root: Union[str, os.PathLike]) -> LabelledDataset:
    """PA-100K as released: the 26 attributes and the train / val / test splits of ``annotation.mat``.

    Every split's images must be in ``data/`` and every label row must hold one 0/1 value per attribute;
    anything else is an error naming the file and the key.
    """
    base = find_dataset_dir(root, ['pa100k', 'PA-100K', 'PA100K', ''], ['annotation.mat', 'data'], 'pa100k',
                            PA100K_LAYOUT)
    sio = optional_import('scipy.io', 'pa100k', 'attributes', 'to read annotation.mat')
    mat_path = base / 'annotation.mat'
    try:
        mat = sio.loadmat(str(mat_path))
    except Exception as e:  # noqa: BLE001  scipy's reader: MatReadError (empty, truncated), IndexError, ValueError ...
        raise DatasetLayoutError(f'pa100k: cannot read {mat_path} as a MATLAB v5 file ({type(e).__name__}: '
                                 f'{" ".join(str(e).split())[:120] or "no details"}): empty, truncated or not '
                                 'the released annotation.mat') from None
    keys = ['attributes'] + [f'{s}_{k}' for s in PA100K_SPLITS for k in ('images_name', 'label')]
    missing = [k for k in keys if k not in mat]
    if missing:
        raise DatasetLayoutError(f'pa100k: {mat_path} lacks {", ".join(missing)}. Expected layout:\n{PA100K_LAYOUT}')
    attributes = check_class_names(_strings(mat['attributes'], 'attributes', mat_path), 'pa100k', mat_path)
    present = set(os.listdir(base / 'data'))
    splits = {}
    for split in PA100K_SPLITS:
        names = _strings(mat[f'{split}_images_name'], f'{split}_images_name', mat_path)
        labels = np.asarray(mat[f'{split}_label'])
        if labels.ndim != 2 or labels.shape != (len(names), len(attributes)):
            raise DatasetLayoutError(
                f'pa100k: {mat_path}: {split}_label has shape {labels.shape}, expected ({len(names)}, '
                f'{len(attributes)}) (one row per image of {split}_images_name, one column per attribute)')
        if not np.isin(labels, (0, 1)).all():
            raise DatasetLayoutError(f'pa100k: {mat_path}: {split}_label holds values other than 0 and 1')
        absent = [n for n in names if n not in present]
        if absent:
            raise DatasetLayoutError(f'pa100k: {len(absent)} {split} images listed in {mat_path} are not in '
                                     f'{base / "data"} (e.g. {absent[0]})')
        splits[split] = LabelledSplit(torch.from_numpy(labels.astype(np.float32)),
                                      paths=[str(base / 'data' / n) for n in names])
    return LabelledDataset('pa100k', 'attributes', attributes, splits['train'], splits['test'], val=splits['val'],
                           root=base)
