"""A re-ID dataset of the user's own images: a CSV listing, or one folder layout (docs/data.md, "Your own data").

The listing is a CSV file with the header ``path,pid,camid,split`` (any order; other columns are ignored):

* ``path``: the image, relative to the CSV's folder (an absolute path is allowed);
* ``pid``: the person, any string; training identities are relabelled 0..N-1, query and gallery identities
  share one numbering, so that a person in the query matches the same person in the gallery;
* ``camid``: the camera, an integer (the re-ID protocol leaves out gallery images of the query's own person
  seen by the query's own camera);
* ``split``: ``train``, ``query`` or ``gallery``.

The folder layout, for who has only folders::

    ROOT/train/<person>/<images>          ROOT/query/<person>/<images>        ROOT/gallery/<person>/<images>

with the camera, optionally, as a subfolder ``<person>/c<N>/`` (or ``cam<N>``) or a ``c<N>`` token in the file
name (``0001_c2_f01.jpg``, ``front-cam3.png``). Without cameras, training images are camera 0, query images
camera 0 and gallery images camera 1: every gallery image of the query's person counts as a match.
:func:`folder_rows` turns a folder into listing rows, :func:`write_listing` writes them as a CSV
(``python -m osnet_zoo.data to-csv``). A folder of people not split yet (``ROOT/<person>/<images>``, cameras the
same way) becomes a listing with :func:`split_people`: a seeded share of the people is held out for testing,
each of them with one query image per camera that has two or more of their images and the rest in the gallery.
Every bad row is a :class:`ListingError` naming the file and the line.
"""
from __future__ import annotations

import csv
import io
import os
import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, TextIO, Tuple, Union

from PIL import Image, UnidentifiedImageError

from ...files import atomic_write_text
from .base import IMAGE_EXTENSIONS, DatasetLayoutError, ReIDDataset, ReIDItem

__all__ = ['read_listing', 'read_folder', 'dataset_from_rows', 'read_dataset_path', 'is_dataset_path', 'folder_rows',
           'write_listing', 'split_people', 'ListingRow', 'ListingError', 'LISTING_COLUMNS', 'LISTING_SPLITS',
           'FOLDER_LAYOUT']

LISTING_COLUMNS = ('path', 'pid', 'camid', 'split')
LISTING_SPLITS = ('train', 'query', 'gallery')
# without a camera in the folder layout: query and gallery differ, so no gallery image is left out
DEFAULT_CAMERAS = {'train': 0, 'query': 0, 'gallery': 1}

FOLDER_LAYOUT = """\
  ROOT/train/<person>/<images>      (training identities; two or more images each)
  ROOT/query/<person>/<images>      (the people to look for)
  ROOT/gallery/<person>/<images>    (where to look; every query person needs images here)
  camera, optional: ROOT/<split>/<person>/c<N>/<images>, or a c<N> token in the file name (0001_c2_01.jpg)"""

_CAMERA_DIR = re.compile(r'^c(?:am)?(\d+)$', re.IGNORECASE)
_CAMERA_TOKEN = re.compile(r'(?:^|[_\-. ])c(?:am)?(\d+)(?=$|[_\-. s])', re.IGNORECASE)


class ListingError(DatasetLayoutError):
    """A listing (CSV) or folder that cannot be a dataset: the message names the file and the row."""


class ListingRow(NamedTuple):
    """One image of a listing: its path (absolute), person, camera and split, and where it was listed."""

    path: str
    pid: str
    camid: int
    split: str
    where: str  # 'listing.csv line 7' or the image's path: what an error names


def is_dataset_path(name: str) -> bool:
    """Whether the dataset name ``name`` is meant as a path: an existing file or folder, a ``.csv`` file name, or
    a name with a path separator."""
    return (name.lower().endswith('.csv') or os.sep in name or (os.altsep or os.sep) in name
            or os.path.exists(os.path.expanduser(name)))


def read_dataset_path(path: Union[str, os.PathLike]) -> ReIDDataset:
    """The dataset a path names: a CSV listing (:func:`read_listing`) or a folder (:func:`read_folder`)."""
    p = Path(os.path.expanduser(os.fspath(path)))
    if p.is_dir():
        return read_folder(p)
    if not p.exists():
        raise ListingError(f'dataset {os.fspath(path)}: no such CSV listing or folder (a listing has the header '
                           f'{",".join(LISTING_COLUMNS)}; a folder the layout of docs/data.md)')
    return read_listing(p)


def _camid(value: str, where: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ListingError(f'{where}: camid {value!r} is not an integer (a camera number, e.g. 0 or 3)') from None


def _row(record: Dict[str, Optional[str]], base: Path, where: str) -> ListingRow:
    """One CSV record as a row; a bad field is a ListingError naming ``where``."""
    path, pid, camid, split = ((record.get(c) or '').strip() for c in LISTING_COLUMNS)
    if split not in LISTING_SPLITS:
        raise ListingError(f'{where}: split {split!r} is not one of {", ".join(LISTING_SPLITS)}')
    if not pid:
        raise ListingError(f'{where}: pid is empty (any string naming the person)')
    if not path:
        raise ListingError(f'{where}: path is empty (an image file, relative to the listing\'s folder)')
    return ListingRow(os.path.normpath(base / os.path.expanduser(path)), pid, _camid(camid, where), split, where)


def _read_rows(stream: TextIO, listing: Path) -> List[ListingRow]:
    reader = csv.DictReader(stream)
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in LISTING_COLUMNS if c not in header]
    if missing:
        raise ListingError(f'{listing}: missing column {", ".join(missing)} (header {",".join(header) or "empty"}; '
                           f'expected {",".join(LISTING_COLUMNS)})')
    reader.fieldnames = header
    rows = []
    for record in reader:
        if not any((v or '').strip() for k, v in record.items() if k is not None):
            continue  # a blank line
        rows.append(_row(record, listing.parent, f'{listing} line {reader.line_num}'))
    return rows


def read_listing(path: Union[str, os.PathLike]) -> ReIDDataset:
    """The dataset of the CSV listing ``path`` (see the module's docstring), checked row by row: a missing
    column, an unknown split, a camid that is not an integer, an image that does not exist or is not an image,
    a query person without a gallery image, a training person with one image is a :class:`ListingError`
    naming the file and the line."""
    listing = Path(os.path.expanduser(os.fspath(path))).absolute()
    try:
        f = open(listing, newline='', encoding='utf-8-sig')
    except FileNotFoundError:
        raise ListingError(f'{listing}: no such CSV listing') from None
    try:
        with f:
            rows = _read_rows(f, listing)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ListingError(f'{listing}: not a CSV text file ({e})') from None
    return dataset_from_rows(rows, listing.stem, listing, listing.parent)


def _check_images(rows: Sequence[ListingRow], source: Path) -> None:
    """Every row's file exists and is an image (its header is read, not the pixels)."""
    bad = []
    for row in rows:
        if not os.path.isfile(row.path):
            bad.append(f'{row.where}: image {row.path} does not exist')
            continue
        try:
            with Image.open(row.path):
                pass
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            bad.append(f'{row.where}: {row.path} is not an image ({type(e).__name__})')
    if bad:
        more = f' ({len(bad) - 1} more bad images in {source})' if len(bad) > 1 else ''
        raise ListingError(bad[0] + more)


def _check_training(rows: Sequence[ListingRow], source: Path) -> None:
    """Two or more images per training person (the identity loss and the P x K sampler need pairs)."""
    counts = Counter(r.pid for r in rows if r.split == 'train')
    single = [r for r in rows if r.split == 'train' and counts[r.pid] == 1]
    if single:
        shown = ', '.join(f'{r.pid!r} ({r.where})' for r in single[:5]) + (', ...' if len(single) > 5 else '')
        raise ListingError(f'{source}: {len(single)} of {len(counts)} training identities have one image only: '
                           f'{shown}; give each two or more images, or list them as query/gallery')


def _check_queries(rows: Sequence[ListingRow], source: Path) -> None:
    """Every query person has gallery images; a query whose gallery images all come from its own camera (which
    the protocol leaves out) is counted on stderr, and when that is every query it is an error."""
    gallery: Dict[str, set] = defaultdict(set)
    for r in rows:
        if r.split == 'gallery':
            gallery[r.pid].add(r.camid)
    queries = [r for r in rows if r.split == 'query']
    absent = [r for r in queries if r.pid not in gallery]
    if absent:
        people = sorted({r.pid for r in absent})
        raise ListingError(f'{absent[0].where}: query identity {absent[0].pid!r} has no image in the gallery '
                           f'({len(people)} query identities lack one: {", ".join(map(repr, people[:5]))}'
                           f'{", ..." if len(people) > 5 else ""})')
    own_camera = [r for r in queries if gallery[r.pid] == {r.camid}]
    if queries and len(own_camera) == len(queries):
        raise ListingError(f'{source}: every query has gallery images of its person from its own camera only, which '
                           f'the re-ID protocol leaves out (first: {own_camera[0].where}); give the gallery images '
                           'other camids')
    if own_camera:
        print(f'{source}: {len(own_camera)} of {len(queries)} queries have gallery images of their person from '
              f'their own camera only; the re-ID protocol leaves these queries out (first: {own_camera[0].where})',
              file=sys.stderr)


def _numbering(pids: Iterable[str]) -> Dict[str, int]:
    """Person strings to 0..N-1, in sorted order (numbers as numbers: '2' before '10')."""
    return {p: i for i, p in enumerate(sorted(set(pids), key=lambda p: (not p.isdigit(), int(p) if p.isdigit()
                                                                          else 0, p)))}


def dataset_from_rows(rows: Sequence[ListingRow], name: str, source: Path, root: Path) -> ReIDDataset:
    """The checked :class:`ReIDDataset` of listing rows (``source``, the listing or folder, named in errors):
    training people numbered 0..N-1, query and gallery people by one shared numbering."""
    if not rows:
        raise ListingError(f'{source}: lists no images')
    _check_images(rows, source)
    _check_training(rows, source)
    _check_queries(rows, source)
    train_ids = _numbering(r.pid for r in rows if r.split == 'train')
    test_ids = _numbering(r.pid for r in rows if r.split != 'train')
    splits: Dict[str, List[ReIDItem]] = {s: [] for s in LISTING_SPLITS}
    for r in rows:
        pid = (train_ids if r.split == 'train' else test_ids)[r.pid]
        splits[r.split].append(ReIDItem(r.path, pid, r.camid))
    return ReIDDataset(name, splits['train'], splits['query'], splits['gallery'], root=root)


def _camera(path: Path, person_dir: Path, split: str) -> Optional[int]:
    """The camera of an image of the folder layout: a ``c<N>`` subfolder, else a ``c<N>`` token in the file
    name, else None."""
    for part in path.relative_to(person_dir).parts[:-1]:
        m = _CAMERA_DIR.match(part)
        if m:
            return int(m.group(1))
    m = _CAMERA_TOKEN.search(path.stem)
    return int(m.group(1)) if m else None


def _person_images(folder: Path, split: str) -> Tuple[List[ListingRow], List[Path], List[str]]:
    """The images of ``folder/<person>/`` as rows of ``split``, the other files found there (not images by their
    suffix), and the names of images lying in ``folder`` itself, outside any person's folder."""
    rows, others = [], []
    for person_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(p for p in person_dir.rglob('*') if p.is_file()):
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                others.append(path)
                continue
            cam = _camera(path, person_dir, split)
            rows.append(ListingRow(str(path), person_dir.name, -1 if cam is None else cam, split, str(path)))
    loose = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    return rows, others, loose


def _split_images(root: Path, split: str) -> Tuple[List[ListingRow], List[Path]]:
    """The images of ``root/split/<person>/``, and the other files found there (not images by their suffix)."""
    folder = root / split
    rows, others, loose = _person_images(folder, split)
    if loose:
        raise ListingError(f'{folder / loose[0]}: an image directly in {split}/ has no person; put it in '
                           f'{split}/<person>/ ({len(loose)} such images). Expected layout:\n{FOLDER_LAYOUT}')
    return rows, others


def folder_rows(root: Union[str, os.PathLike]) -> List[ListingRow]:
    """The listing rows of a folder in the layout of :data:`FOLDER_LAYOUT` (absolute paths). Cameras are all
    given or all absent (then train 0, query 0, gallery 1); a mix is an error naming an image without one."""
    root = Path(os.path.expanduser(os.fspath(root))).absolute()
    present = [s for s in LISTING_SPLITS if (root / s).is_dir()]
    if not present:
        people = sum(1 for p in root.iterdir() if p.is_dir()) if root.is_dir() else 0
        hint = (f'; it holds {people} folders, one per person? `python -m osnet_zoo.data to-csv {root}` splits '
                'them into train, query and gallery' if people else '')
        raise ListingError(f'{root}: no train/, query/ or gallery/ folder{hint}. Expected layout:\n{FOLDER_LAYOUT}')
    found = [_split_images(root, s) for s in present]
    return _cameras_all_or_none([r for split_rows, _ in found for r in split_rows],
                                [p for _, split_others in found for p in split_others], root)


def _cameras_all_or_none(rows: List[ListingRow], others: List[Path], root: Path) -> List[ListingRow]:
    """``rows`` with the default cameras where the folder gives none; files that are not images counted on
    stderr; a ListingError when some images have a camera and others not."""
    if others:  # Thumbs.db, notes: counted, not read
        print(f'{root}: {len(others)} files that are not images ({", ".join(IMAGE_EXTENSIONS)}) left out '
              f'(first: {others[0]})', file=sys.stderr)
    with_camera = [r for r in rows if r.camid >= 0]
    if with_camera and len(with_camera) < len(rows):
        first = next(r for r in rows if r.camid < 0)
        raise ListingError(f'{first.path}: no camera (c<N> subfolder or file-name token), while '
                           f'{len(with_camera)} of {len(rows)} images of {root} have one; give all or none')
    if not with_camera:
        rows = [r._replace(camid=DEFAULT_CAMERAS[r.split]) for r in rows]
    return rows


def split_people(root: Union[str, os.PathLike], test_fraction: float = 0.5,
                 seed: int = 0) -> Tuple[List[ListingRow], Dict[str, List[str]]]:
    """The listing rows of a folder of people not split yet, ``root/<person>/<images>`` (cameras as in
    :data:`FOLDER_LAYOUT`), split by person: ``test_fraction`` of the people who can be tested, drawn with ``seed``,
    get one query image per camera (drawn too) and the rest in the gallery; the others train.

    A person can be tested with images from two or more cameras (without cameras: two or more images, the query
    camera 0 and the gallery camera 1); a person with one image can neither train nor be tested and is left out.
    Returns the rows and the people of each outcome (``train``, ``test``, ``left_out``)."""
    root = Path(os.path.expanduser(os.fspath(root))).absolute()
    if not 0 < test_fraction < 1:
        raise ListingError(f'--test-fraction {test_fraction}: the share of people held out for testing must be '
                           'between 0 and 1 (exclusive)')
    if not root.is_dir():
        raise ListingError(f'{root}: no such folder')
    rows, others, loose = _person_images(root, 'train')
    if loose:
        raise ListingError(f'{root / loose[0]}: an image directly in the folder has no person; put it in '
                           f'<person>/ ({len(loose)} such images)')
    if not rows:
        raise ListingError(f'{root}: no train/, query/ or gallery/ folder, and no person folders with images '
                           f'({", ".join(IMAGE_EXTENSIONS)}). Expected a folder of people not split yet, '
                           f'ROOT/<person>/<images>, or the layout:\n{FOLDER_LAYOUT}')
    cameras_given = any(r.camid >= 0 for r in rows)
    rows = _cameras_all_or_none(rows, others, root)
    by_person: Dict[str, List[ListingRow]] = defaultdict(list)
    for r in rows:
        by_person[r.pid].append(r)
    left_out = sorted(p for p, images in by_person.items() if len(images) < 2)
    testable = sorted(p for p, images in by_person.items()
                      if len(images) >= 2 and (not cameras_given or len({r.camid for r in images}) >= 2))
    kept = len(by_person) - len(left_out)
    draw = random.Random(seed)
    test = sorted(draw.sample(testable, min(len(testable), round(test_fraction * kept))))
    train = sorted(p for p in by_person if p not in left_out and p not in test)
    if not test or not train:
        raise ListingError(f'{root}: {kept} people with two or more images, {len(testable)} of them testable (two or '
                           f'more {"cameras" if cameras_given else "images"}): too few to split '
                           f'{test_fraction:g} of them into a test set and train on the rest')
    out = [r for p in train for r in by_person[p]]
    for person in test:
        images = by_person[person]
        per_camera = {cam: [r.path for r in images if r.camid == cam] for cam in sorted({r.camid for r in images})}
        # a query from each camera that keeps a gallery image, so every query has gallery images of its person
        # from other cameras; where no camera has two images (or there are no cameras), one query
        queries = {draw.choice(paths) for paths in per_camera.values() if len(paths) >= 2 and cameras_given}
        if not queries:
            queries = {draw.choice(draw.choice(list(per_camera.values())))}
        for r in images:
            split = 'query' if r.path in queries else 'gallery'
            out.append(r._replace(split=split, camid=r.camid if cameras_given else DEFAULT_CAMERAS[split]))
    if left_out:
        print(f'{root}: {len(left_out)} people with one image left out (they can neither train nor be found): '
              f'{", ".join(left_out[:10])}{", ..." if len(left_out) > 10 else ""}', file=sys.stderr)
    return out, dict(train=train, test=test, left_out=left_out)


def read_folder(root: Union[str, os.PathLike]) -> ReIDDataset:
    """The dataset of a folder in the layout of :data:`FOLDER_LAYOUT`, checked as a listing is."""
    path = Path(os.path.expanduser(os.fspath(root))).absolute()
    return dataset_from_rows(folder_rows(path), path.name, path, path)


def write_listing(rows: Sequence[ListingRow], path: Union[str, os.PathLike]) -> Path:
    """Write ``rows`` as a CSV listing at ``path`` (atomically), image paths relative to its folder where they
    can be. Returns the path."""
    out = Path(os.path.expanduser(os.fspath(path))).absolute()
    text = io.StringIO(newline='')
    writer = csv.writer(text, lineterminator='\n')
    writer.writerow(LISTING_COLUMNS)
    for r in rows:
        try:
            rel = os.path.relpath(r.path, out.parent)
        except ValueError:  # another drive (Windows): keep it absolute
            rel = r.path
        writer.writerow([Path(rel).as_posix(), r.pid, r.camid, r.split])
    atomic_write_text(out, text.getvalue())
    return out
