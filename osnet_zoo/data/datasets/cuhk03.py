"""CUHK03 (Li et al., CVPR 2014) under the new 767/700 protocol (Zhong et al., CVPR 2017), detected or labeled.

The images come inside ``cuhk-03.mat`` (MATLAB v7.3, i.e. HDF5: read with h5py); the protocol's split is in
``cuhk03_new_protocol_config_{detected,labeled}.mat`` (MATLAB v5: read with scipy). On first use the crops
are written once as PNG files named like the protocol's file list (``1_001_1_01.png``: camera pair, identity,
view, image), each written atomically, so an interrupted extraction resumes where it stopped.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import List, Union

import numpy as np

from ...files import atomic_path, atomic_write_text
from .base import DatasetLayoutError, ReIDDataset, ReIDItem, find_dataset_dir, relabel

__all__ = ['cuhk03', 'extract_cuhk03_images']

CUHK03_LAYOUT = """\
  ROOT/cuhk03/                           (or ROOT/ itself)
      cuhk03_release/cuhk-03.mat                       (the released images, MATLAB v7.3)
      cuhk03_new_protocol_config_detected.mat          (the new protocol's split, detected boxes)
      cuhk03_new_protocol_config_labeled.mat           (the same, hand-labelled boxes)
  Images are extracted on first use to ROOT/cuhk03/images_detected/ and images_labeled/."""


def _need(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f'CUHK03 needs {module} to read the released .mat files: pip install "osnet-zoo[cuhk03]"'
                          ) from None


def extract_cuhk03_images(mat_path: Union[str, os.PathLike], out_dir: Union[str, os.PathLike],
                          image_type: str = 'detected') -> int:
    """Write every crop of ``cuhk-03.mat`` (``image_type``: 'detected' or 'labeled') as a PNG in ``out_dir``.

    Existing files are kept (resumable); returns the number of images in the archive. A marker file
    ``.complete`` is written at the end.
    """
    h5py = _need('h5py')
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    try:
        mat = h5py.File(mat_path, 'r')
    except OSError as e:
        raise DatasetLayoutError(f'cuhk03: cannot read {mat_path} as a MATLAB v7.3 (HDF5) file: {e}') from e
    with mat:
        if image_type not in mat:
            raise DatasetLayoutError(f'cuhk03: {mat_path} has no {image_type!r} entry (keys: {list(mat.keys())})')
        for pair, pair_ref in enumerate(mat[image_type][0]):
            cells = mat[pair_ref]  # HDF5 keeps MATLAB's (num_ids, 10) cell array transposed: (10, num_ids)
            for pid in range(cells.shape[1]):
                for img_no, ref in enumerate(cells[:, pid]):
                    img = mat[ref][()]
                    if img.ndim != 3 or img.size == 0:
                        continue  # an empty cell: this identity has fewer than 10 images
                    view = 1 if img_no < 5 else 2  # images 1-5 from one camera of the pair, 6-10 the other
                    path = out_dir / f'{pair + 1}_{pid + 1:03d}_{view}_{img_no + 1:02d}.png'
                    count += 1
                    if path.exists():
                        continue
                    with atomic_path(path) as tmp:
                        Image.fromarray(np.ascontiguousarray(img.transpose(2, 1, 0)).astype(np.uint8)).save(tmp, 'PNG')
    atomic_write_text(out_dir / '.complete', f'{count}\n')
    return count


def _split_items(split: dict, key: str, image_dir: Path, config: Path) -> List[ReIDItem]:
    try:
        idx = np.asarray(split[key]).astype(np.int64).ravel() - 1  # MATLAB is 1-based
        labels = np.asarray(split['labels']).astype(np.int64).ravel()
        files = np.asarray(split['filelist']).ravel()
    except KeyError as e:
        raise DatasetLayoutError(f'cuhk03: {config} has no {e.args[0]!r} entry; is it a new-protocol config?'
                                 ) from None
    items = []
    for i in idx:
        name = str(np.asarray(files[i]).ravel()[0])
        path = image_dir / name
        if not path.exists():
            raise DatasetLayoutError(f'cuhk03: {config} lists {name}, which is not in {image_dir} '
                                     '(delete the folder to extract again)')
        items.append(ReIDItem(str(path), int(labels[i]), int(name.split('_')[2]) - 1))
    return items


def cuhk03(root: Union[str, os.PathLike], labeled: bool = False) -> ReIDDataset:
    """CUHK03 new protocol: 767 training and 700 test identities, 2 views per camera pair.

    ``labeled=True`` uses the hand-labelled boxes, otherwise the detected ones. Query and gallery camera ids
    are the view (0 or 1); identities are unique across camera pairs.
    """
    kind = 'labeled' if labeled else 'detected'
    config_name = f'cuhk03_new_protocol_config_{kind}.mat'
    base = find_dataset_dir(root, ['cuhk03', ''], ('cuhk03_release/cuhk-03.mat', config_name), 'cuhk03',
                            CUHK03_LAYOUT)
    image_dir = base / f'images_{kind}'
    if not (image_dir / '.complete').exists():
        extract_cuhk03_images(base / 'cuhk03_release' / 'cuhk-03.mat', image_dir, kind)
    scipy_io = _need('scipy.io')
    try:
        split = scipy_io.loadmat(str(base / config_name))
    except Exception as e:  # scipy raises several types for broken files
        raise DatasetLayoutError(f'cuhk03: cannot read {base / config_name} as a MATLAB v5 file: {e}') from e
    train = relabel(_split_items(split, 'train_idx', image_dir, base / config_name))
    query = _split_items(split, 'query_idx', image_dir, base / config_name)
    gallery = _split_items(split, 'gallery_idx', image_dir, base / config_name)
    return ReIDDataset(f'cuhk03_{kind}', train, query, gallery, root=base)
