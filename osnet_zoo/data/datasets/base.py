"""Re-ID dataset splits as plain lists of (path, pid, camid, dsetid) items, and ways to combine them."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

__all__ = ['ReIDItem', 'ReIDDataset', 'DatasetLayoutError', 'find_dataset_dir', 'relabel', 'IMAGE_EXTENSIONS']

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
        return len({it.pid for it in self.train})

    @property
    def num_train_cams(self) -> int:
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
