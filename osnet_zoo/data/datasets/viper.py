"""VIPeR (Gray et al., PETS 2007): 632 identities, one image from each of two cameras.

The protocol of the OSNet papers (Table 4): 10 random splits of the identities into 316 for training and 316
for testing; each split is evaluated in both directions (cam_a queries against a cam_b gallery, and the
reverse), 20 evaluations averaged. The splits are drawn once and saved beside the images as
``viper_splits.json``, so that every machine uses the same ones.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, Union

from .base import (
    IMAGE_EXTENSIONS, DatasetLayoutError, ReIDDataset, ReIDItem, check_split_id, find_dataset_dir, identity_splits,
    relabel,
)

__all__ = ['viper', 'VIPER_DIRECTIONS', 'VIPER_NUM_SPLITS']

VIPER_NUM_SPLITS = 10
VIPER_DIRECTIONS = ('a2b', 'b2a')
_CAMERAS = ('cam_a', 'cam_b')
_NAME = re.compile(r'^(\d+)_')
SPLIT_FILE = 'viper_splits.json'

VIPER_LAYOUT = """\
  ROOT/viper/VIPeR/                      (or ROOT/VIPeR/, or ROOT/ itself)
      cam_a/000_45.bmp 001_45.bmp ...    (one image per identity: IDENTITY_ANGLE.bmp)
      cam_b/000_45.bmp 001_90.bmp ...    (the same identities seen by the other camera)
      viper_splits.json                  (written on first use: the 10 random 316/316 splits)"""


def _read_camera(directory: Path) -> Dict[int, str]:
    """identity -> image path of one camera folder; a badly named or repeated identity is an error naming it."""
    images: Dict[int, str] = {}
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if not entry.name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        m = _NAME.match(entry.name)
        if m is None:
            raise DatasetLayoutError(f'viper: {entry.path}: file name is not IDENTITY_ANGLE.bmp (e.g. 000_45.bmp)')
        pid = int(m.group(1))
        if pid in images:
            raise DatasetLayoutError(f'viper: {entry.path}: identity {pid} already has an image in {directory} '
                                     f'({os.path.basename(images[pid])}); VIPeR has one image per camera')
        images[pid] = entry.path
    if not images:
        raise DatasetLayoutError(f'viper: no images in {directory}. Expected layout:\n{VIPER_LAYOUT}')
    return images


def viper(root: Union[str, os.PathLike], split_id: int = 0, direction: str = 'a2b') -> ReIDDataset:
    """VIPeR, split ``split_id`` (0..9) of the 10 random half/half splits, evaluated in ``direction``.

    ``direction`` ``'a2b'``: cam_a test images are the queries and cam_b's the gallery; ``'b2a'`` the
    reverse. Training holds both images of each training identity (relabelled 0..N-1; camid 0 = cam_a,
    1 = cam_b); query and gallery keep the identity numbers of the file names. Every identity must have
    exactly one image in each camera folder.
    """
    if direction not in VIPER_DIRECTIONS:
        raise ValueError(f'viper: direction must be one of {VIPER_DIRECTIONS}, got {direction!r}')
    split_id = check_split_id(split_id, VIPER_NUM_SPLITS, 'viper')
    base = find_dataset_dir(root, ['viper/VIPeR', 'VIPeR', 'viper', ''], _CAMERAS, 'viper', VIPER_LAYOUT)
    cams = [_read_camera(base / c) for c in _CAMERAS]
    for this, other in ((0, 1), (1, 0)):
        unpaired = sorted(set(cams[this]) - set(cams[other]))
        if unpaired:
            raise DatasetLayoutError(f'viper: {cams[this][unpaired[0]]}: identity {unpaired[0]} has no image in '
                                     f'{base / _CAMERAS[other]} ({len(unpaired)} unpaired in {_CAMERAS[this]}). '
                                     f'Expected layout:\n{VIPER_LAYOUT}')
    ids = sorted(cams[0])
    split = identity_splits(base / SPLIT_FILE, 'viper', ids, len(ids) // 2, VIPER_NUM_SPLITS)[split_id]
    train = relabel(ReIDItem(cams[c][pid], pid, c) for pid in split['train'] for c in (0, 1))
    q_cam = 0 if direction == 'a2b' else 1
    query = [ReIDItem(cams[q_cam][pid], pid, q_cam) for pid in split['test']]
    gallery = [ReIDItem(cams[1 - q_cam][pid], pid, 1 - q_cam) for pid in split['test']]
    return ReIDDataset('viper', train, query, gallery, root=base)
