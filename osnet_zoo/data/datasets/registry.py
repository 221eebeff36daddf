"""Where a dataset name leads: the built-in readers, readers registered from Python
(:func:`register_dataset`), readers of other installed packages (the ``osnet_zoo.datasets`` entry-point group),
and paths (a CSV listing or a folder, :mod:`.listing`).

A reader is a callable ``builder(root, **options) -> ReIDDataset``: ``root`` is the ``--root`` folder
(datasets live under it), ``options`` the reader's own (most take none). A package makes its reader usable
by name from every command by declaring, in its ``pyproject.toml``::

    [project.entry-points."osnet_zoo.datasets"]
    mydata = "mypackage.readers:mydata"
"""
from __future__ import annotations

import os
import re
from importlib.metadata import EntryPoint, entry_points
from typing import Callable, Dict, List, Optional, Sequence, Union

from .base import ReIDDataset
from .cuhk01 import cuhk01
from .cuhk03 import cuhk03
from .grid import grid
from .listing import is_dataset_path
from .market1501 import dukemtmcreid, market1501
from .msmt17 import msmt17
from .synthetic import synthetic_reid
from .viper import viper

__all__ = ['DATASETS', 'ENTRY_POINT_GROUP', 'register_dataset', 'dataset_builder', 'available_datasets',
           'is_known_dataset', 'unknown_dataset_message', 'dataset_reference', 'dataset_file_tag']

ENTRY_POINT_GROUP = 'osnet_zoo.datasets'
Builder = Callable[..., ReIDDataset]


def _synthetic(domain: int) -> Builder:
    def build(root: Union[str, os.PathLike], **kwargs) -> ReIDDataset:
        return synthetic_reid(root, domain=domain, **kwargs)
    return build


# The re-ID readers by name; register_dataset adds to it.
DATASETS: Dict[str, Builder] = {
    'market1501': market1501,
    'dukemtmcreid': dukemtmcreid,
    'msmt17': msmt17,
    'cuhk03': cuhk03,
    'cuhk03_detected': lambda root, **kw: cuhk03(root, labeled=False, **kw),
    'cuhk03_labeled': lambda root, **kw: cuhk03(root, labeled=True, **kw),
    # the small benchmarks: split_id=0..9 (and direction='a2b'|'b2a' for VIPeR); see protocol_runs
    'viper': viper,
    'grid': grid,
    'cuhk01': cuhk01,
    'synthetic': _synthetic(0),
    'synthetic_b': _synthetic(1),
}
_BUILT_IN = frozenset(DATASETS)
_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_.\-]*$')


def register_dataset(name: str, builder: Builder, overwrite: bool = False) -> None:
    """Make ``builder(root, **options) -> ReIDDataset`` the reader of dataset ``name`` in this process (every
    function that takes a dataset name; for the command lines, declare an entry point instead). A built-in
    name is refused; an already registered one too unless ``overwrite``."""
    if not isinstance(name, str) or not _NAME.match(name) or name.lower().endswith('.csv'):
        raise ValueError(f'register_dataset: {name!r} is not a dataset name (letters, digits, _ . -, '
                         'not a path and not ending in .csv)')
    if not callable(builder):
        raise TypeError(f'register_dataset({name!r}, ...): the builder {builder!r} is not callable')
    if name in _BUILT_IN:
        raise ValueError(f'register_dataset: {name!r} is a built-in dataset; choose another name')
    if name in DATASETS and not overwrite:
        raise ValueError(f'register_dataset: {name!r} is already registered; pass overwrite=True to replace it')
    DATASETS[name] = builder


def _entry_points() -> Dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load(ep: EntryPoint) -> Builder:
    try:
        builder = ep.load()
    except Exception as e:  # any failure of another package's import is that package's, named here
        raise RuntimeError(f'dataset {ep.name!r}: cannot load its reader {ep.value} (entry point of group '
                          f'{ENTRY_POINT_GROUP}): {type(e).__name__}: {e}') from e
    if not callable(builder):
        raise ValueError(f'dataset {ep.name!r}: the entry point {ep.value} (group {ENTRY_POINT_GROUP}) is not a '
                        'callable builder(root, **options)')

    def build(root: Union[str, os.PathLike], **options) -> ReIDDataset:
        ds = builder(root, **options)
        if not isinstance(ds, ReIDDataset):
            raise ValueError(f'dataset {ep.name!r}: its reader {ep.value} returned {type(ds).__name__}, '
                            'not an osnet_zoo ReIDDataset')
        return ds
    return build


def dataset_builder(name: str) -> Optional[Builder]:
    """The reader of dataset ``name``: built-in or registered, else an installed package's entry point;
    None when no reader has that name (a path, or an unknown name)."""
    if name in DATASETS:
        return DATASETS[name]
    ep = _entry_points().get(name)
    return _load(ep) if ep is not None else None


def available_datasets() -> List[str]:
    """The re-ID dataset names: built-in, registered and declared by installed packages' entry points."""
    return sorted(set(DATASETS) | set(_entry_points()))


def is_known_dataset(name: str) -> bool:
    """Whether ``name`` names a re-ID reader or an existing listing / folder."""
    if name in DATASETS or name in _entry_points():
        return True
    return is_dataset_path(name) and os.path.exists(os.path.expanduser(name))


def unknown_dataset_message(name: str, option: str = 'dataset', others: Sequence[str] = ()) -> str:
    """The one line for a dataset name that leads nowhere: the names there are (``others`` too, e.g. the
    attribute and category datasets) and the path forms."""
    if is_dataset_path(name):
        return (f'{option} {name!r}: no such CSV listing or folder (paths are relative to the current folder; '
                'see docs/data.md, "Your own data")')
    names = available_datasets() + sorted(others)
    return (f'{option} {name!r}: unknown dataset; available: {", ".join(names)} (entry points of group '
            f'{ENTRY_POINT_GROUP} included), or a path to a CSV listing or a dataset folder (docs/data.md)')


def dataset_reference(name: str) -> str:
    """How a run records dataset ``name``: a reader's name as it is, a path (listing or folder) made absolute,
    so that resuming or evaluating the run from another folder reads the same data."""
    if name in DATASETS or not is_dataset_path(name) or name in _entry_points():
        return name
    return os.path.abspath(os.path.expanduser(name))


def dataset_file_tag(name: str) -> str:
    """``name`` as a part of a file name: a reader's name as it is, a path as its file or folder name without
    the suffix (``/data/shop/listing.csv`` -> ``listing``), other characters as ``_``."""
    if is_dataset_path(name) and name not in DATASETS:
        name = os.path.splitext(os.path.basename(os.path.normpath(name)))[0] or 'dataset'
    return re.sub(r'[^A-Za-z0-9_.\-]', '_', name)
