"""Re-ID dataset splits as plain lists of (path, pid, camid, dsetid) items, and ways to combine them."""
from __future__ import annotations

import importlib
import json
import os
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ...files import atomic_write_json

__all__ = ['ReIDItem', 'ReIDDataset', 'DatasetLayoutError', 'SplitFileError', 'find_dataset_dir', 'relabel',
           'IMAGE_EXTENSIONS', 'identity_splits', 'check_split_id', 'optional_import']

# Image files the dataset readers and `python -m osnet_zoo.extract` pick up from folders.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff', '.ppm', '.pgm')


class ReIDItem(NamedTuple):
    """One image: its file, identity (relabelled 0..N-1 in training splits), camera (0-based) and dataset id."""

    path: str
    pid: int
    camid: int
    dsetid: int = 0


class DatasetLayoutError(FileNotFoundError):
    """A dataset root that is missing, incomplete or not in the expected layout (the message shows it)."""


class SplitFileError(DatasetLayoutError):
    """A saved split file beside a dataset that is damaged or does not match the images (the message names it)."""


def optional_import(module: str, dataset: str, extra: str, why: str) -> ModuleType:
    """``import module`` for a dataset that needs an optional dependency, or an ImportError saying how to
    install it (``pip install "osnet-zoo[extra]"``)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f'{dataset} needs {module} {why}: pip install "osnet-zoo[{extra}]"') from None


def find_dataset_dir(root: Union[str, os.PathLike], candidates: Sequence[str], required: Sequence[str],
                     name: str, layout: str) -> Path:
    """The first of ``root/<candidate>`` (``''`` = root itself) holding every ``required`` entry.

    Raises DatasetLayoutError naming what is missing and showing the expected ``layout``.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetLayoutError(f'{name}: dataset root {root} does not exist. Expected layout:\n{layout}')
    tried = []
    for cand in candidates:
        d = root / cand if cand else root
        missing = [r for r in required if not (d / r).exists()]
        if not missing:
            return d
        if d.is_dir():
            tried.append(f'  {d}: missing {", ".join(missing)}')
    detail = '\n'.join(tried) if tried else f'  none of {[str(root / c) for c in candidates]} exists'
    raise DatasetLayoutError(f'{name}: no complete dataset found under {root}.\n{detail}\nExpected layout:\n{layout}')


def relabel(items: Iterable[ReIDItem], offset: int = 0) -> List[ReIDItem]:
    """Identities mapped to offset..offset+N-1 in sorted order of the original ids."""
    items = list(items)
    mapping = {pid: offset + i for i, pid in enumerate(sorted({it.pid for it in items}))}
    return [it._replace(pid=mapping[it.pid]) for it in items]


class ReIDDataset:
    """Train / query / gallery splits of one dataset (or of several, combined).

    Training identities are relabelled 0..num_train_pids-1; query and gallery keep the dataset's own ids
    (the evaluation protocol compares them). ``junk_pids`` are ids that are not identities (Market1501's
    distractors 0 and junk -1): ``combineall`` leaves them out of training.
    """

    def __init__(self, name: str, train: List[ReIDItem], query: List[ReIDItem], gallery: List[ReIDItem],
                 junk_pids: Tuple[int, ...] = (), root: Optional[Path] = None,
                 extra_train: Optional[List[ReIDItem]] = None):
        self.name = name
        self.train, self.query, self.gallery = train, query, gallery
        self.junk_pids = tuple(junk_pids)
        self.root = root
        # images that join training only with combineall, already in the training label space (MSMT17's val)
        self.extra_train = list(extra_train or [])

    @property
    def num_train_pids(self) -> int:
        """Number of distinct training identities."""
        return len({it.pid for it in self.train})

    @property
    def num_train_cams(self) -> int:
        """Number of distinct cameras in the training split."""
        return len({it.camid for it in self.train})

    def combineall(self) -> 'ReIDDataset':
        """Train on everything: query and gallery identities join the training set, relabelled after the
        training ones (junk ids left out). Query and gallery stay as they are."""
        train = self.train + self.extra_train
        test_ids = [it for it in self.query + self.gallery if it.pid not in self.junk_pids]
        train += relabel(test_ids, offset=max((it.pid for it in train), default=-1) + 1)
        return ReIDDataset(f'{self.name}+all', train, self.query, self.gallery, self.junk_pids, self.root)

    @staticmethod
    def multi_source(datasets: Sequence['ReIDDataset'], name: Optional[str] = None) -> 'ReIDDataset':
        """Training sets of several datasets as one: identities (and cameras) offset per source so they never
        collide, ``dsetid`` = position of the source. Query and gallery are those of the first source."""
        if not datasets:
            raise ValueError('multi_source needs at least one dataset')
        train: List[ReIDItem] = []
        pid_offset = cam_offset = 0
        for dsetid, ds in enumerate(datasets):
            relabelled = relabel(ds.train)
            cams = {c: cam_offset + i for i, c in enumerate(sorted({it.camid for it in relabelled}))}
            train += [ReIDItem(it.path, it.pid + pid_offset, cams[it.camid], dsetid) for it in relabelled]
            pid_offset += ds.num_train_pids
            cam_offset += len(cams)
        return ReIDDataset(name or '+'.join(ds.name for ds in datasets), train, datasets[0].query,
                           datasets[0].gallery, datasets[0].junk_pids, datasets[0].root)

    def summary(self) -> str:
        """The name, then one line per split (train, query, gallery): identities, images, cameras."""
        rows = []
        for split in ('train', 'query', 'gallery'):
            items = getattr(self, split)
            rows.append(f'  {split:<8}{len({it.pid for it in items}):>8} ids{len(items):>9} images'
                        f'{len({it.camid for it in items}):>6} cameras')
        return f'{self.name}\n' + '\n'.join(rows)

    def __repr__(self) -> str:
        counts = Counter(split for split in ('train', 'query', 'gallery') for _ in getattr(self, split))
        return (f'ReIDDataset({self.name!r}, train={counts["train"]}, query={counts["query"]}, '
                f'gallery={counts["gallery"]}, train_pids={self.num_train_pids})')


_SPLIT_FORMAT = 1


def _check_splits(data, path: Path, dataset: str, identities: List[int], num_train: int,
                  num_splits: int) -> List[Dict[str, List[int]]]:
    def bad(why: str) -> SplitFileError:
        return SplitFileError(f'{dataset}: split file {path} {why}; delete it to make the splits again')

    if not isinstance(data, dict) or data.get('format') != _SPLIT_FORMAT or data.get('dataset') != dataset:
        raise bad(f'is not a format-{_SPLIT_FORMAT} {dataset} split file of osnet_zoo')
    if data.get('identities') != identities:
        have = data.get('identities')
        raise bad(f'was made for other identities ({len(have) if isinstance(have, list) else "?"} in the file, '
                  f'{len(identities)} in the images)')
    splits = data.get('splits')
    if not isinstance(splits, list) or len(splits) != num_splits:
        raise bad(f'does not hold {num_splits} splits')
    every = set(identities)
    for i, split in enumerate(splits):
        train = split.get('train') if isinstance(split, dict) else None
        test = split.get('test') if isinstance(split, dict) else None
        if (not isinstance(train, list) or not isinstance(test, list) or len(train) != num_train
                or len(set(train)) != len(train) or len(set(test)) != len(test) or set(train) & set(test)
                or set(train) | set(test) != every):
            raise bad(f'split {i} is not a partition of the identities into {num_train} train / '
                      f'{len(identities) - num_train} test')
    return splits


def identity_splits(path: Union[str, os.PathLike], dataset: str, identities: Iterable[int], num_train: int,
                    num_splits: int = 10, seed: int = 0) -> List[Dict[str, List[int]]]:
    """Random train/test partitions of ``identities``, made once and kept in the JSON file ``path``.

    When ``path`` exists it is read and checked against the images (same identities, ``num_splits``
    partitions with ``num_train`` training identities each); a damaged or mismatched file is a
    :class:`SplitFileError` naming it. Otherwise the partitions are drawn from
    ``numpy.random.default_rng(seed)`` and written atomically, so every machine uses the same ones.
    Returns ``[{'train': [ids], 'test': [ids]}, ...]`` (sorted original identities).
    """
    path = Path(path)
    ids = sorted(int(i) for i in identities)
    if not 0 < num_train < len(ids):
        raise ValueError(f'{dataset}: cannot split {len(ids)} identities into {num_train} train and the rest test')
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding='utf-8'))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SplitFileError(f'{dataset}: cannot read split file {path} ({e}); delete it to make the splits '
                                 'again') from None
        return _check_splits(data, path, dataset, ids, num_train, num_splits)
    rng = np.random.default_rng(seed)
    pool = np.asarray(ids)
    splits = []
    for _ in range(num_splits):
        order = rng.permutation(len(pool))
        splits.append({'train': sorted(pool[order[:num_train]].tolist()),
                       'test': sorted(pool[order[num_train:]].tolist())})
    atomic_write_json(path, {'format': _SPLIT_FORMAT, 'dataset': dataset, 'seed': seed, 'num_train': num_train,
                             'identities': ids, 'splits': splits}, indent=None)
    return splits


def check_split_id(split_id: int, num_splits: int, dataset: str) -> int:
    """``split_id`` as an int in 0..num_splits-1, or a ValueError naming the option."""
    if isinstance(split_id, bool) or not isinstance(split_id, (int, np.integer)) or not 0 <= split_id < num_splits:
        raise ValueError(f'{dataset}: split_id must be an integer in 0..{num_splits - 1}, got {split_id!r}')
    return int(split_id)
