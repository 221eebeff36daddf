"""MSMT17 (Wei et al., CVPR 2018), V1 and V2: image lists with labels; the camera is in the file name."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Union

from .base import DatasetLayoutError, ReIDDataset, ReIDItem, find_dataset_dir, relabel

__all__ = ['msmt17']

_LISTS = ('list_train.txt', 'list_val.txt', 'list_query.txt', 'list_gallery.txt')
_DIRS = {'MSMT17_V1': ('train', 'test'), 'MSMT17_V2': ('mask_train_v2', 'mask_test_v2')}

MSMT17_LAYOUT = """\
  ROOT/MSMT17_V1/                        (or ROOT/msmt17/MSMT17_V1/, or ROOT/ itself; V2: MSMT17_V2 with
      train/0000/0000_000_01_0303morning_0015_0.jpg ...      mask_train_v2/ and mask_test_v2/)
      test/0000/0000_000_01_0303morning_0008_0.jpg ...
      list_train.txt  list_val.txt  list_query.txt  list_gallery.txt
          (one image a line: "0000/0000_000_01_0303morning_0015_0.jpg 0"; camera = 3rd field of the name)"""


def _read_list(list_path: Path, image_dir: Path) -> List[ReIDItem]:
    items = []
    with open(list_path, encoding='utf-8') as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                rel, pid = parts[0], int(parts[1])
                cam = int(os.path.basename(rel).split('_')[2])
            except (IndexError, ValueError):
                raise DatasetLayoutError(f'msmt17: {list_path}:{lineno}: expected "DIR/PID_SEQ_CAM_..._N.jpg LABEL", '
                                         f'got {line.strip()!r}') from None
            items.append(ReIDItem(str(image_dir / rel), pid, cam - 1))
    if not items:
        raise DatasetLayoutError(f'msmt17: {list_path} lists no images')
    missing = next((it.path for it in items if not os.path.exists(it.path)), None)
    if missing:
        raise DatasetLayoutError(f'msmt17: {list_path} lists {missing}, which does not exist')
    return items


def msmt17(root: Union[str, os.PathLike], version: Optional[str] = None) -> ReIDDataset:
    """MSMT17: 1,041 training identities (list_train; list_val joins only with ``combineall``), 11,659
    queries, 82,161 gallery images, 15 cameras. ``version`` 'MSMT17_V1' or 'MSMT17_V2' (default: whichever
    is found, V2 first)."""
    versions = [version] if version else ['MSMT17_V2', 'MSMT17_V1']
    errors = []
    for ver in versions:
        if ver not in _DIRS:
            raise ValueError(f'msmt17: unknown version {ver!r}; expected one of {list(_DIRS)}')
        train_dir, test_dir = _DIRS[ver]
        try:
            base = find_dataset_dir(root, [ver, f'msmt17/{ver}', ''], (train_dir, test_dir) + _LISTS, 'msmt17',
                                    MSMT17_LAYOUT)
        except DatasetLayoutError as e:
            errors.append(str(e))
            continue
        train = _read_list(base / 'list_train.txt', base / train_dir)
        val = _read_list(base / 'list_val.txt', base / train_dir)
        query = _read_list(base / 'list_query.txt', base / test_dir)
        gallery = _read_list(base / 'list_gallery.txt', base / test_dir)
        # list_val holds more images of training identities: same label space, used only by combineall
        joint = relabel(train + val)
        return ReIDDataset('msmt17', joint[:len(train)], query, gallery, root=base, extra_train=joint[len(train):])
    raise DatasetLayoutError(errors[-1] if len(errors) == 1 else '\n'.join(errors))

