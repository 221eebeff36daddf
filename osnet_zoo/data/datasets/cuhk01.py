"""CUHK01 (Li et al., ACCV 2012): 971 identities, two images from each of two camera views.

The protocol of the OSNet papers (Table 4): 10 random splits into 485 training and 486 test identities;
the test identities' images from the first view (images 1-2) are the queries, those from the second view
(images 3-4) the gallery. The splits are drawn once and saved beside the images as ``cuhk01_splits.json``.
The release's ``CUHK01.zip`` is extracted once on first use, resumably: files go to ``campus.partial/``,
each written atomically, and the folder becomes ``campus/`` only when every image is there.
"""
from __future__ import annotations

import os
import re
import shutil
import zipfile
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Dict, List, Union

from ...files import atomic_path
from .base import (
    DatasetLayoutError, ReIDDataset, ReIDItem, check_split_id, find_dataset_dir, identity_splits, relabel,
)

__all__ = ['cuhk01', 'extract_cuhk01_zip', 'CUHK01_NUM_SPLITS']

CUHK01_NUM_SPLITS = 10
_NAME = re.compile(r'^(\d{4})(\d{3})\.png$', re.IGNORECASE)
SPLIT_FILE = 'cuhk01_splits.json'

CUHK01_LAYOUT = """\
  ROOT/cuhk01/                           (or ROOT/ itself)
      campus/0001001.png 0001002.png ... (PPPPIII.png: 4-digit identity, 3-digit image; 1-2 one view, 3-4 the other)
      CUHK01.zip                         (or just the release's zip, holding campus/: extracted on first use)
      cuhk01_splits.json                 (written on first use: the 10 random 485/486 splits)"""


def extract_cuhk01_zip(zip_path: Union[str, os.PathLike], campus_dir: Union[str, os.PathLike]) -> int:
    """Extract the ``PPPPIII.png`` images of ``zip_path`` into ``campus_dir`` (flat), once.

    Images go to ``campus_dir`` + ``.partial`` first, each written atomically; files already there with the
    right size are kept, so an interrupted extraction resumes. The folder is renamed to ``campus_dir`` at the
    end. Returns the number of images.
    """
    zip_path, campus_dir = Path(zip_path), Path(campus_dir)
    partial = campus_dir.with_name(campus_dir.name + '.partial')
    try:
        zf = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as e:
        raise DatasetLayoutError(f'cuhk01: cannot read {zip_path} as a zip file: {e}') from None
    with zf:
        # only the images, by their own name: no other member (and no ../ path) is ever written
        members: Dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            name = PurePosixPath(info.filename).name
            if info.is_dir() or not _NAME.match(name) or info.filename.startswith('__MACOSX/'):
                continue
            if name in members:
                raise DatasetLayoutError(f'cuhk01: {zip_path} holds {name} twice ({members[name].filename}, '
                                         f'{info.filename})')
            members[name] = info
        if not members:
            raise DatasetLayoutError(f'cuhk01: {zip_path} holds no PPPPIII.png images. Expected layout:\n'
                                     f'{CUHK01_LAYOUT}')
        partial.mkdir(parents=True, exist_ok=True)
        for name, info in sorted(members.items()):
            dest = partial / name
            if dest.exists() and dest.stat().st_size == info.file_size:
                continue
            with zf.open(info) as src, atomic_path(dest) as tmp, open(tmp, 'wb') as dst:
                shutil.copyfileobj(src, dst)
    try:
        os.replace(partial, campus_dir)
    except OSError:
        if not campus_dir.is_dir():
            raise
        # another process finished the same extraction first
    return len(members)


def _read_campus(campus: Path) -> Dict[int, List[ReIDItem]]:
    """identity -> its images (camid 0 for images 1-2, 1 for 3-4); a name off the pattern is an error."""
    by_id: Dict[int, List[ReIDItem]] = defaultdict(list)
    for entry in sorted(os.scandir(campus), key=lambda e: e.name):
        if not entry.name.lower().endswith('.png'):
            continue
        m = _NAME.match(entry.name)
        if m is None:
            raise DatasetLayoutError(f'cuhk01: {entry.path}: file name is not PPPPIII.png (e.g. 0001001.png)')
        pid, image = int(m.group(1)), int(m.group(2))
        if not 1 <= image <= 4:
            raise DatasetLayoutError(f'cuhk01: {entry.path}: image number {image} outside 1..4')
        by_id[pid].append(ReIDItem(entry.path, pid, (image - 1) // 2))
    if not by_id:
        raise DatasetLayoutError(f'cuhk01: no images in {campus}. Expected layout:\n{CUHK01_LAYOUT}')
    for pid, items in by_id.items():
        views = {it.camid for it in items}
        if views != {0, 1}:
            raise DatasetLayoutError(f'cuhk01: identity {pid:04d} has no image from view {2 - min(views)} '
                                     f'(images {"3-4" if 0 in views else "1-2"}) in {campus}')
    return by_id


def cuhk01(root: Union[str, os.PathLike], split_id: int = 0) -> ReIDDataset:
    """CUHK01, split ``split_id`` (0..9) of the 10 random splits (half the identities, rounded down, train).

    Training holds all images of the training identities (relabelled 0..N-1); queries are the test
    identities' first-view images, the gallery their second-view images (identities as in the file names).
    """
    split_id = check_split_id(split_id, CUHK01_NUM_SPLITS, 'cuhk01')
    base = None
    for cand in ('cuhk01', ''):
        d = Path(root).expanduser() / cand if cand else Path(root).expanduser()
        if not (d / 'campus').is_dir() and (d / 'CUHK01.zip').is_file():
            extract_cuhk01_zip(d / 'CUHK01.zip', d / 'campus')
        if (d / 'campus').is_dir():
            base = d
            break
    if base is None:
        base = find_dataset_dir(root, ['cuhk01', ''], ['campus'], 'cuhk01', CUHK01_LAYOUT)  # raises, with the layout
    by_id = _read_campus(base / 'campus')
    ids = sorted(by_id)
    split = identity_splits(base / SPLIT_FILE, 'cuhk01', ids, len(ids) // 2, CUHK01_NUM_SPLITS)[split_id]
    train = relabel(it for pid in split['train'] for it in by_id[pid])
    test = [it for pid in split['test'] for it in by_id[pid]]
    return ReIDDataset('cuhk01', train, [it for it in test if it.camid == 0], [it for it in test if it.camid == 1],
                       root=base)
