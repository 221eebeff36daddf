"""GRID (Loy et al., CVPR 2009; the QMUL underground re-ID set): 250 paired identities and 775 distractors.

The release's ``probe/`` holds one image of each identity 0001..0250, ``gallery/`` their true matches plus
775 images that match no probe (identity 0000). The 10 splits of the protocol are those of the release's
``features_and_partitions.mat``: ``trainIdxAll`` is a 1x10 cell array of structs whose ``personIdx`` field
(the third; torchreid's reader takes it by position) lists the 125 training identities of each split. The other
125 identities' probe images are the queries, and the
gallery holds their gallery images plus every distractor (a fixed part of the test set, as the release's
README asks). Reading the .mat file needs scipy.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, List, Union

import numpy as np

from .base import (
    DatasetLayoutError, ReIDDataset, ReIDItem, check_split_id, find_dataset_dir, optional_import, relabel,
)

__all__ = ['grid', 'read_grid_partitions']

_NAME = re.compile(r'^(\d{4})_(\d+)_.*\.jpe?g$', re.IGNORECASE)
_MAT = 'features_and_partitions.mat'

GRID_LAYOUT = """\
  ROOT/grid/underground_reid/            (or ROOT/underground_reid/, or ROOT/ itself)
      probe/0001_1_25004_107_32_130.jpeg ...   (IIII_C_...: identity 0001..0250, camera 1..8)
      gallery/0001_2_25023_116_134_129.jpeg ...(the probes' true matches, plus identity 0000: distractors)
      features_and_partitions.mat              (trainIdxAll: the 10 splits' training identities)"""


def _read_folder(directory: Path) -> List[ReIDItem]:
    items = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if not entry.name.lower().endswith(('.jpeg', '.jpg')):
            continue
        m = _NAME.match(entry.name)
        if m is None:
            raise DatasetLayoutError(f'grid: {entry.path}: file name is not IIII_C_....jpeg (identity, camera)')
        cam = int(m.group(2))
        if cam < 1:
            raise DatasetLayoutError(f'grid: {entry.path}: camera {cam} outside 1..8')
        items.append(ReIDItem(entry.path, int(m.group(1)), cam - 1))
    if not items:
        raise DatasetLayoutError(f'grid: no images in {directory}. Expected layout:\n{GRID_LAYOUT}')
    return items


def _person_ids(fold, mat_path: Path, index: int) -> List[int]:
    """The training identities of one element of ``trainIdxAll`` (a 1x1 cell holding a struct, or a struct)."""
    record = fold
    while isinstance(record, np.ndarray) and record.dtype == object and record.size == 1:
        record = record.ravel()[0]  # cell wrappers
    if isinstance(record, np.ndarray) and record.dtype.names and record.size == 1:
        record = record.ravel()[0]
    names = getattr(getattr(record, 'dtype', None), 'names', None)
    if not names:
        raise DatasetLayoutError(f'grid: {mat_path}: trainIdxAll element {index} is not a struct')
    # by name when the struct has a personIdx field, else by position (the third, as torchreid reads it)
    field = 'personIdx' if 'personIdx' in names else (names[2] if len(names) > 2 else None)
    if field is None:
        raise DatasetLayoutError(f'grid: {mat_path}: trainIdxAll element {index} has no personIdx field '
                                 f'(fields: {list(names)})')
    values = np.asarray(record[field]).ravel()
    if values.size == 0 or not np.all(np.isfinite(values.astype(np.float64))) or np.any(values != np.round(values)):
        raise DatasetLayoutError(f'grid: {mat_path}: trainIdxAll element {index}.{field} is not a list of identities')
    return [int(v) for v in values]


def read_grid_partitions(mat_path: Union[str, os.PathLike]) -> List[List[int]]:
    """The training identities of each split in ``features_and_partitions.mat`` (``trainIdxAll``)."""
    mat_path = Path(mat_path)
    scipy_io = optional_import('scipy.io', 'GRID', 'grid', f'to read {_MAT}')
    try:
        mat = scipy_io.loadmat(str(mat_path))
    except Exception as e:  # scipy raises several types for broken files
        raise DatasetLayoutError(f'grid: cannot read {mat_path} as a MATLAB file: {e}') from None
    if 'trainIdxAll' not in mat:
        raise DatasetLayoutError(f'grid: {mat_path} has no trainIdxAll entry (keys: '
                                 f'{sorted(k for k in mat if not k.startswith("__"))})')
    folds = np.asarray(mat['trainIdxAll']).ravel()
    return [_person_ids(f, mat_path, i) for i, f in enumerate(folds)]


def grid(root: Union[str, os.PathLike], split_id: int = 0) -> ReIDDataset:
    """GRID, split ``split_id`` (0..9) of ``features_and_partitions.mat``.

    Training holds the probe and gallery images of the split's training identities (relabelled 0..N-1);
    queries are the other identities' probe images, the gallery their gallery images plus the distractors
    (identity 0, never a match). Camera ids are the file names' 1..8 minus one.
    """
    base = find_dataset_dir(root, ['grid/underground_reid', 'underground_reid', 'grid', ''],
                            ('probe', 'gallery', _MAT), 'grid', GRID_LAYOUT)
    partitions = read_grid_partitions(base / _MAT)
    split_id = check_split_id(split_id, len(partitions), 'grid')
    probe, gallery = _read_folder(base / 'probe'), _read_folder(base / 'gallery')
    probe_by_id: Dict[int, ReIDItem] = {}
    for it in probe:
        if it.pid == 0 or it.pid in probe_by_id:
            raise DatasetLayoutError(f'grid: {it.path}: probe identities are 0001..0250, one image each')
        probe_by_id[it.pid] = it
    gallery_ids = {it.pid for it in gallery}
    unmatched = sorted(set(probe_by_id) - gallery_ids)
    if unmatched:
        raise DatasetLayoutError(f'grid: {probe_by_id[unmatched[0]].path}: identity {unmatched[0]} has no image in '
                                 f'{base / "gallery"} ({len(unmatched)} unmatched probes)')
    strays = sorted(gallery_ids - set(probe_by_id) - {0})
    if strays:
        raise DatasetLayoutError(f'grid: {base / "gallery"} holds identity {strays[0]}, which has no probe image '
                                 '(unpaired gallery images are identity 0000)')
    train_ids = partitions[split_id]
    bad = sorted(set(train_ids) - set(probe_by_id))
    if bad or len(set(train_ids)) != len(train_ids) or len(train_ids) >= len(probe_by_id):
        raise DatasetLayoutError(f'grid: {base / _MAT}: trainIdxAll split {split_id} is not a set of training '
                                 f'identities among the {len(probe_by_id)} probes'
                                 + (f' (identity {bad[0]} has no probe image)' if bad else ''))
    train_set = set(train_ids)
    train = relabel([it for it in probe + gallery if it.pid in train_set])
    query = [it for it in probe if it.pid not in train_set]
    test_gallery = [it for it in gallery if it.pid not in train_set]
    return ReIDDataset('grid', train, query, test_gallery, junk_pids=(0,), root=base)
