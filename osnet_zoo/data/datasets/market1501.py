"""Market1501 and DukeMTMC-reID: folders of crops named ``PPPP_cC...`` (identity, camera)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Union

from .base import IMAGE_EXTENSIONS, DatasetLayoutError, ReIDDataset, ReIDItem, find_dataset_dir, relabel

__all__ = ['market1501', 'dukemtmcreid', 'read_market_style_dir']

_NAME = re.compile(r'^(-?\d+)_c(\d+)')
_SPLITS = ('bounding_box_train', 'query', 'bounding_box_test')

MARKET1501_LAYOUT = """\
  ROOT/Market-1501-v15.09.15/            (or ROOT/market1501/Market-1501-v15.09.15/, or the old flat layout:
      bounding_box_train/0002_c1s1_000451_03.jpg ...     ROOT/ or ROOT/market1501/ holding the three folders)
      query/0001_c1s1_001051_00.jpg ...
      bounding_box_test/0000_c1s1_000151_01.jpg ...  (pid 0: distractors, kept; pid -1: junk, dropped)"""

DUKE_LAYOUT = """\
  ROOT/DukeMTMC-reID/                    (or ROOT/dukemtmcreid/DukeMTMC-reID/, or ROOT/ itself)
      bounding_box_train/0001_c2_f0046182.jpg ...
      query/0005_c2_f0046985.jpg ...
      bounding_box_test/0002_c1_f0044158.jpg ..."""


def read_market_style_dir(directory: Path, dataset: str, max_cam: int = 0) -> List[ReIDItem]:
    """Items of one split folder: identity and camera from each file name; junk (pid -1) dropped.

    ``max_cam`` > 0 checks the camera numbers (1..max_cam). A file name that does not follow the pattern is an
    error naming the file.
    """
    items = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if not entry.name.lower().endswith(IMAGE_EXTENSIONS):
            continue  # Thumbs.db and friends
        m = _NAME.match(entry.name)
        if m is None:
            raise DatasetLayoutError(f'{dataset}: {entry.path}: file name is not PID_cCAM... '
                                     '(e.g. 0002_c1s1_000451_03.jpg)')
        pid, cam = int(m.group(1)), int(m.group(2))
        if pid == -1:
            continue
        if cam < 1 or (max_cam and cam > max_cam):
            raise DatasetLayoutError(f'{dataset}: {entry.path}: camera {cam} outside 1..{max_cam or "N"}')
        items.append(ReIDItem(entry.path, pid, cam - 1))
    if not items:
        raise DatasetLayoutError(f'{dataset}: no images in {directory}')
    return items


def _market_style(root: Union[str, os.PathLike], name: str, candidates, layout: str, max_cam: int,
                  junk_pids=()) -> ReIDDataset:
    base = find_dataset_dir(root, candidates, _SPLITS, name, layout)
    train, query, gallery = (read_market_style_dir(base / s, name, max_cam) for s in _SPLITS)
    return ReIDDataset(name, relabel(train), query, gallery, junk_pids=junk_pids, root=base)


def market1501(root: Union[str, os.PathLike], max_cam: int = 6) -> ReIDDataset:
    """Market1501 (Zheng et al., ICCV 2015): 751 training identities, 3,368 queries, 19,732 gallery images.

    ``root`` may be the version folder itself, its parent, or a folder holding ``market1501/``; both the
    ``Market-1501-v15.09.15`` and the old flat layout are found. The synthetic dataset uses this reader with
    its own camera count (``max_cam=0`` skips the check).
    """
    return _market_style(root, 'market1501', ['', 'Market-1501-v15.09.15', 'market1501/Market-1501-v15.09.15',
                                              'market1501'], MARKET1501_LAYOUT, max_cam, junk_pids=(0, -1))


def dukemtmcreid(root: Union[str, os.PathLike]) -> ReIDDataset:
    """DukeMTMC-reID (Ristani et al. 2016; Zheng et al. 2017): 702 training ids, 8 cameras."""
    return _market_style(root, 'dukemtmcreid', ['', 'DukeMTMC-reID', 'dukemtmcreid/DukeMTMC-reID', 'dukemtmcreid'],
                         DUKE_LAYOUT, 8)
