"""Readers for the re-ID benchmarks' on-disk layouts, and the synthetic default."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from .base import (
    IMAGE_EXTENSIONS, DatasetLayoutError, ReIDDataset, ReIDItem, SplitFileError, find_dataset_dir, relabel,
)
from .cuhk01 import cuhk01, extract_cuhk01_zip
from .cuhk03 import cuhk03, extract_cuhk03_images
from .cifar import cifar10, cifar100
from .grid import grid
from .imagenet import imagenet
from .labelled import TASKS, LabelledDataset, LabelledSplit
from .listing import (
    FOLDER_LAYOUT, LISTING_COLUMNS, LISTING_SPLITS, ListingError, dataset_from_rows, folder_rows, is_dataset_path,
    read_dataset_path, read_folder, read_listing, split_people, write_listing,
)
from .market1501 import dukemtmcreid, market1501
from .msmt17 import msmt17
from .pa100k import pa100k
from .protocols import PROTOCOLS, ProtocolRun, aggregate_runs, format_aggregate, protocol_runs
from .registry import (
    DATASETS, ENTRY_POINT_GROUP, available_datasets, dataset_builder, dataset_file_tag, dataset_reference,
    is_known_dataset, register_dataset, unknown_dataset_message,
)
from .viper import viper

__all__ = ['DATASETS', 'build_dataset', 'split_dataset_names', 'ReIDDataset', 'ReIDItem', 'DatasetLayoutError',
           'SplitFileError',
           'market1501', 'dukemtmcreid', 'msmt17', 'cuhk03', 'extract_cuhk03_images', 'viper', 'grid', 'cuhk01',
           'extract_cuhk01_zip', 'PROTOCOLS', 'ProtocolRun', 'protocol_runs', 'aggregate_runs', 'format_aggregate',
           'relabel', 'find_dataset_dir', 'IMAGE_EXTENSIONS', 'LABELLED_DATASETS', 'LabelledDataset', 'LabelledSplit',
           'TASKS', 'pa100k', 'cifar10', 'cifar100', 'imagenet', 'read_listing', 'read_folder', 'read_dataset_path',
           'folder_rows', 'write_listing', 'dataset_from_rows', 'is_dataset_path', 'ListingError', 'LISTING_COLUMNS',
           'FOLDER_LAYOUT', 'LISTING_SPLITS', 'split_people',
           'ENTRY_POINT_GROUP', 'register_dataset', 'dataset_builder', 'available_datasets', 'is_known_dataset',
           'unknown_dataset_message', 'dataset_reference', 'dataset_file_tag']


# The other tasks of the OSNet paper (ICCV 2019 Secs. 4.2-4.4): attributes and category recognition.
LABELLED_DATASETS: Dict[str, Callable[..., LabelledDataset]] = {
    'pa100k': pa100k,
    'cifar10': cifar10,
    'cifar100': cifar100,
    'imagenet': imagenet,
}


def split_dataset_names(name: Union[str, Sequence[str]]) -> List[str]:
    """A list of dataset names, or a comma-separated string of them (a path that exists stays whole)."""
    if not isinstance(name, str):
        return list(name)
    if os.path.exists(os.path.expanduser(name)):
        return [name]
    return [n.strip() for n in name.split(',')]


def build_dataset(name: Union[str, Sequence[str]], root: Union[str, os.PathLike], combineall: bool = False,
                  per_dataset: Optional[Mapping[str, Mapping[str, Any]]] = None, **kwargs) -> ReIDDataset:
    """A dataset by name, read from ``root``: a reader of ``DATASETS`` (built-in or ``register_dataset``), a
    reader an installed package declares in the ``osnet_zoo.datasets`` entry-point group, or a path to a CSV
    listing or a dataset folder (:mod:`.listing`; ``root`` is not used, relative paths are from the current
    folder).

    ``name`` may be a list (or a comma-separated string) of several: their training sets are combined with
    identities relabelled per source (``dsetid`` = position), query/gallery from the first. ``combineall``
    adds each source's query and gallery identities to its training set first. ``per_dataset`` maps a
    name to options for that reader only (e.g. ``{'viper': {'split_id': 3, 'direction': 'b2a'}}``);
    ``kwargs`` go to every reader (not to listings).
    """
    datasets = []
    for n in split_dataset_names(name):
        builder = dataset_builder(n)
        if builder is not None:
            ds = builder(root, **kwargs, **dict((per_dataset or {}).get(n, {})))
        elif is_dataset_path(n):
            ds = read_dataset_path(n)
        else:
            raise KeyError(unknown_dataset_message(n))
        datasets.append(ds.combineall() if combineall else ds)
    return datasets[0] if len(datasets) == 1 else ReIDDataset.multi_source(datasets)
