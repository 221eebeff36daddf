"""Synthetic copies of the small re-ID benchmarks' released layouts (VIPeR, GRID, CUHK01), at any size.

The people and cameras are those of :mod:`osnet_zoo.data.datasets.synthetic` (same renderer); only the folder
layout, the file names and the number of images per identity follow each dataset, so the real readers
(:func:`~osnet_zoo.data.datasets.viper`, :func:`~osnet_zoo.data.datasets.grid`,
:func:`~osnet_zoo.data.datasets.cuhk01`) read them unchanged. Identity counts are parameters: tests write a
handful of identities, not 632. Each writer builds its folder under a temporary name and renames it at the
end (a dataset folder is always complete) and is reproducible from ``seed``.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Tuple, Union

import numpy as np
from PIL import Image

from ..files import atomic_write_json
from .datasets.base import optional_import
from .datasets.synthetic import _camera, _identity, _render, building_dir

__all__ = ['make_synthetic_viper', 'make_synthetic_grid', 'make_synthetic_cuhk01', 'SMALL_DATASET_WRITERS']

_MARKER = 'synthetic_small.json'
_VIPER_ANGLES = (0, 45, 90, 135, 180)


def _cast(seed: int, stream: int, num_ids: int, num_cameras: int) -> Tuple[np.random.Generator, List[Dict],
                                                                           List[Dict]]:
    """A generator, ``num_cameras`` camera styles and ``num_ids`` people, reproducible from ``seed``."""
    rng = np.random.default_rng([seed, stream])
    cameras = [_camera(rng, 0) for _ in range(num_cameras)]
    return rng, cameras, [_identity(rng) for _ in range(num_ids)]


def _check_ids(num_ids: int, dataset: str, limit: int) -> None:
    if not 2 <= num_ids <= limit:
        raise ValueError(f'synthetic {dataset}: num_ids must be in 2..{limit} (half train, half test), got {num_ids}')


def _mark(tmp: Path, dataset: str, **config) -> None:
    atomic_write_json(tmp / _MARKER, {'dataset': dataset, 'config': config})


def make_synthetic_viper(root: Union[str, os.PathLike], num_ids: int = 40, seed: int = 0,
                         height: int = 128, width: int = 48) -> Path:
    """Write ``ROOT/viper/VIPeR/{cam_a,cam_b}/III_ANGLE.bmp``: one image per camera for each of ``num_ids``
    identities, numbered with gaps as the release is. Returns ``ROOT/viper``."""
    _check_ids(num_ids, 'viper', 1000)
    out = Path(root).expanduser() / 'viper'
    with building_dir(out, _MARKER) as tmp:
        rng, cameras, people = _cast(seed, 1, num_ids, 2)
        pids = sorted(rng.choice(1000, size=num_ids, replace=False).tolist())
        cam_dirs = [tmp / 'VIPeR' / 'cam_a', tmp / 'VIPeR' / 'cam_b']
        for cam_dir in cam_dirs:
            cam_dir.mkdir(parents=True)
        for pid, person in zip(pids, people):
            for c, cam_dir in enumerate(cam_dirs):
                angle = _VIPER_ANGLES[int(rng.integers(len(_VIPER_ANGLES)))]
                _render(person, cameras[c], rng, height, width).save(cam_dir / f'{pid:03d}_{angle}.bmp')
        _mark(tmp, 'viper', num_ids=num_ids, seed=seed, height=height, width=width)
    return out


def make_synthetic_grid(root: Union[str, os.PathLike], num_ids: int = 40, num_distractors: int = 20,
                        num_splits: int = 10, seed: int = 0, height: int = 128, width: int = 64) -> Path:
    """Write ``ROOT/grid/underground_reid/``: ``probe/`` with one image of each of ``num_ids`` identities
    (``IIII_C_FFFFF.jpeg``, identities 1..num_ids), ``gallery/`` with their images from another of the 8
    cameras plus ``num_distractors`` unpaired images (identity 0000), and ``features_and_partitions.mat``
    whose ``trainIdxAll`` (and ``testIdxAll``) cell array holds ``num_splits`` structs, ``personIdx`` the
    ``num_ids // 2`` training identities of each split. Needs scipy. Returns ``ROOT/grid``."""
    _check_ids(num_ids, 'grid', 9999)
    scipy_io = optional_import('scipy.io', 'the synthetic GRID', 'grid', 'to write features_and_partitions.mat')
    out = Path(root).expanduser() / 'grid'
    with building_dir(out, _MARKER) as tmp:
        base = tmp / 'underground_reid'
        for folder in ('probe', 'gallery'):
            (base / folder).mkdir(parents=True)
        rng, cameras, people = _cast(seed, 2, num_ids + num_distractors, 8)
        frame = 0

        def save(person: Dict, folder: str, pid: int, cam: int) -> None:
            nonlocal frame
            frame += 1
            img = _render(person, cameras[cam], rng, height, width)
            img.save(base / folder / f'{pid:04d}_{cam + 1}_{frame:05d}.jpeg', quality=92)

        for pid, person in enumerate(people[:num_ids], 1):
            probe_cam, gallery_cam = rng.choice(8, size=2, replace=False).tolist()
            save(person, 'probe', pid, probe_cam)
            save(person, 'gallery', pid, gallery_cam)
        for person in people[num_ids:]:
            save(person, 'gallery', 0, int(rng.integers(8)))

        def fold(person_ids: np.ndarray) -> Dict[str, np.ndarray]:
            # MATLAB doubles, 1-based; image indices as the release numbers its feature rows (gallery 2k-1, probe 2k)
            ids = person_ids.astype(np.float64)[None, :]
            return {'probeImIdx': 2 * ids, 'galleryImIdx': 2 * ids - 1, 'personIdx': ids}

        train_folds = np.empty((1, num_splits), dtype=object)
        test_folds = np.empty((1, num_splits), dtype=object)
        for s in range(num_splits):
            order = rng.permutation(np.arange(1, num_ids + 1))
            train_folds[0, s] = fold(order[:num_ids // 2])
            test_folds[0, s] = fold(order[num_ids // 2:])
        scipy_io.savemat(str(base / 'features_and_partitions.mat'),
                         {'trainIdxAll': train_folds, 'testIdxAll': test_folds})
        _mark(tmp, 'grid', num_ids=num_ids, num_distractors=num_distractors, num_splits=num_splits, seed=seed,
              height=height, width=width)
    return out


def make_synthetic_cuhk01(root: Union[str, os.PathLike], num_ids: int = 40, seed: int = 0, as_zip: bool = False,
                          height: int = 160, width: int = 60) -> Path:
    """Write ``ROOT/cuhk01/campus/PPPPIII.png``: four images of each of ``num_ids`` identities, images 1-2
    from one camera and 3-4 from the other. ``as_zip=True`` writes them into ``ROOT/cuhk01/CUHK01.zip``
    (holding ``campus/``) instead, as the release comes. Returns ``ROOT/cuhk01``."""
    _check_ids(num_ids, 'cuhk01', 9999)
    out = Path(root).expanduser() / 'cuhk01'
    with building_dir(out, _MARKER) as tmp:
        campus = tmp / 'campus'
        campus.mkdir()
        rng, cameras, people = _cast(seed, 3, num_ids, 2)
        for pid, person in enumerate(people, 1):
            for n in range(1, 5):
                _render(person, cameras[(n - 1) // 2], rng, height, width).save(campus / f'{pid:04d}{n:03d}.png')
        if as_zip:
            with zipfile.ZipFile(tmp / 'CUHK01.zip', 'w') as zf:
                for path in sorted(campus.iterdir()):
                    zf.write(path, f'campus/{path.name}')
                    path.unlink()
            campus.rmdir()
        _mark(tmp, 'cuhk01', num_ids=num_ids, seed=seed, as_zip=as_zip, height=height, width=width)
    return out


SMALL_DATASET_WRITERS: Dict[str, Callable[..., Path]] = {
    'viper': make_synthetic_viper,
    'grid': make_synthetic_grid,
    'cuhk01': make_synthetic_cuhk01,
}
