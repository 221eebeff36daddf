"""Readers for the re-ID benchmarks' on-disk layouts, and the synthetic default."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

from .base import (
    IMAGE_EXTENSIONS, DatasetLayoutError, ReIDDataset, ReIDItem, SplitFileError, find_dataset_dir, relabel,
)
from .cuhk01 import cuhk01, extract_cuhk01_zip
from .cuhk03 import cuhk03, extract_cuhk03_images
from .cifar import cifar10, cifar100
from .grid import grid
from .imagenet import imagenet
from .labelled import TASKS, LabelledDataset, LabelledSplit
from .market1501 import dukemtmcreid, market1501
from .msmt17 import msmt17
from .pa100k import pa100k
from .protocols import PROTOCOLS, ProtocolRun, aggregate_runs, format_aggregate, protocol_runs
from .synthetic import synthetic_reid
from .viper import viper

__all__ = ['DATASETS', 'build_dataset', 'ReIDDataset', 'ReIDItem', 'DatasetLayoutError', 'SplitFileError',
           'market1501', 'dukemtmcreid', 'msmt17', 'cuhk03', 'extract_cuhk03_images', 'viper', 'grid', 'cuhk01',
           'extract_cuhk01_zip', 'PROTOCOLS', 'ProtocolRun', 'protocol_runs', 'aggregate_runs', 'format_aggregate',
           'relabel', 'find_dataset_dir', 'IMAGE_EXTENSIONS', 'LABELLED_DATASETS', 'LabelledDataset', 'LabelledSplit',
           'TASKS', 'pa100k', 'cifar10', 'cifar100', 'imagenet']


def _synthetic(domain: int) -> Callable[..., ReIDDataset]:
    def build(root: Union[str, os.PathLike], **kwargs) -> ReIDDataset:
        return synthetic_reid(root, domain=domain, **kwargs)
    return build


DATASETS: Dict[str, Callable[..., ReIDDataset]] = {
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

# The other tasks of the OSNet paper (ICCV 2019 Secs. 4.2-4.4): attributes and category recognition.
LABELLED_DATASETS: Dict[str, Callable[..., LabelledDataset]] = {
    'pa100k': pa100k,
    'cifar10': cifar10,
    'cifar100': cifar100,
    'imagenet': imagenet,
}


def build_dataset(name: Union[str, Sequence[str]], root: Union[str, os.PathLike], combineall: bool = False,
                  per_dataset: Optional[Mapping[str, Mapping[str, Any]]] = None, **kwargs) -> ReIDDataset:
    """A dataset by name (see ``DATASETS``), read from ``root``.

    ``name`` may be a list (or a comma-separated string) of several: their training sets are combined with
    identities relabelled per source (``dsetid`` = position), query/gallery from the first. ``combineall``
    adds each source's query and gallery identities to its training set first. ``per_dataset`` maps a
    name to options for that reader only (e.g. ``{'viper': {'split_id': 3, 'direction': 'b2a'}}``);
    ``kwargs`` go to every reader.
    """
    names = [n.strip() for n in name.split(',')] if isinstance(name, str) else list(name)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise KeyError(f'unknown dataset {unknown[0]!r}; available: {sorted(DATASETS)}')
    datasets = []
    for n in names:
        ds = DATASETS[n](root, **kwargs, **dict((per_dataset or {}).get(n, {})))
        datasets.append(ds.combineall() if combineall else ds)
    return datasets[0] if len(datasets) == 1 else ReIDDataset.multi_source(datasets)
