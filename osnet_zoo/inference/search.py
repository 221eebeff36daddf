"""Top-k search of query features against a gallery, however large (the library of ``python -m osnet_zoo.search``).

The distance is evaluate's default, the cosine distance ``1 - <q/|q|, g/|g|>`` (:mod:`osnet_zoo.metrics.distance`):
every index ranks by the inner product of L2-normalised features, and reports ``1 - inner product``, so the
exact index gives the ranking of ``pairwise_distance(q, g, 'cosine')`` (on L2-normalised features the squared
euclidean distance, ``2 - 2 <q, g>``, ranks the same).

The gallery is read in chunks of rows (an ``extract`` features file is memory-mapped,
:func:`osnet_zoo.inference.sharded.map_features`), so it never has to fit a dense distance matrix:

* ``exact`` (default): faiss's flat inner-product index when faiss is installed (``pip install
  "osnet-zoo[search]"``), else a chunked numpy product keeping each query's best ``k`` per chunk (the same
  answer, slower); both hold the gallery's rows once (faiss) or one chunk at a time (numpy).
* ``ivf``: faiss ``IndexIVFFlat``: k-means on a sample of the gallery into ``nlist`` lists; a query searches
  the ``nprobe`` lists nearest to it. More ``nprobe``: better recall, slower (benchmarks/RESULTS.md: recall@10
  0.99 at nprobe = nlist / 8 on a million re-ID-shaped features, only at nprobe = nlist on uniform noise).
* ``hnsw``: faiss ``IndexHNSWFlat``: a graph with ``hnsw_m`` links per node, built with ``ef_construction``
  candidates, searched with ``ef_search``. More ``ef_search``: better recall, slower.

The approximate indexes need faiss; without it they are an error naming the extra. Results are per query:
``indices`` into the gallery (-1 where an approximate index found fewer than ``k``) and distances, nearest
first (ties by gallery order).
"""
from __future__ import annotations

import csv
import importlib
import io
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from ..data import read_image
from ..files import atomic_write_json, atomic_write_text
from ..metrics.plots import GREEN, GREY, RED, ranked_rows_picture, save_png, stack, title_band
from .extractor import FeatureExtractor

__all__ = ['INDEXES', 'ENGINES', 'IndexOptions', 'GalleryIndex', 'SearchResult', 'SearchItem', 'load_faiss',
           'build_index', 'search_gallery', 'embed_images', 'check_features_source', 'result_rows',
           'write_results', 'ranked_lists_figure']

INDEXES = ('exact', 'ivf', 'hnsw')
ENGINES = ('auto', 'faiss', 'numpy')
DISTANCE = 'cosine'
UNKNOWN = (60, 110, 200)  # the frame of a match whose identity is not known (no listing)
_INSTALL = 'pip install "osnet-zoo[search]"'
_SCORES_PER_CHUNK = 1 << 25  # queries x gallery rows of inner products held at once by the numpy search
_QUERY_BLOCK = 1024  # queries per faiss search call: a progress bar moves, and a block still fills BLAS


class SearchItem(NamedTuple):
    """An image of a search: its path, and its identity and camera when a listing gave them (else None)."""

    path: str
    pid: Optional[Any] = None
    camid: Optional[int] = None


@dataclass(frozen=True)
class IndexOptions:
    """How the gallery is indexed (the module docstring says what each knob does).

    ``nlist`` None: ``sqrt(N)`` lists; ``nprobe`` None: ``nlist / 8`` of them searched; ``train_size`` None:
    ``64 * nlist`` rows (at most N) train the k-means; ``chunk_rows``: gallery rows read (and normalised) at a
    time.
    """

    kind: str = 'exact'
    engine: str = 'auto'
    nlist: Optional[int] = None
    nprobe: Optional[int] = None
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    train_size: Optional[int] = None
    chunk_rows: int = 65536
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INDEXES:
            raise ValueError(f'--index {self.kind!r}: expected one of {", ".join(INDEXES)}')
        if self.engine not in ENGINES:
            raise ValueError(f'--engine {self.engine!r}: expected one of {", ".join(ENGINES)}')
        if self.kind != 'exact' and self.engine == 'numpy':
            raise ValueError(f'--index {self.kind} is a faiss index; --engine numpy has only the exact search')
        for name in ('nlist', 'nprobe', 'hnsw_m', 'ef_construction', 'ef_search', 'train_size', 'chunk_rows'):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f'--{name.replace("_", "-")} must be a whole number >= 1, got {value!r}')


@dataclass
class SearchResult:
    """Per query, the ``k`` nearest gallery rows: ``indices`` (Q, k) int64 (-1: none found) and ``distances``
    (Q, k) float32 cosine distances (inf where none), nearest first."""

    indices: np.ndarray
    distances: np.ndarray
    index: str = ''  # what searched (GalleryIndex.describe())
    notes: List[str] = field(default_factory=list)  # what the caller should be told (k clamped, no faiss)


def load_faiss(required_for: Optional[str] = None) -> Optional[ModuleType]:
    """The faiss module, or None when it is not installed; ``required_for``: an ImportError naming the extra
    instead of None."""
    try:
        return importlib.import_module('faiss')
    except ImportError:
        if required_for:
            raise ImportError(f'{required_for} needs faiss, an optional dependency: {_INSTALL}') from None
        return None


def _normalised(rows: np.ndarray) -> np.ndarray:
    """A float32 copy of ``rows`` with each row scaled to unit length (a zero row stays zero)."""
    out = np.array(rows, dtype=np.float32, copy=True)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def _check_features(x: np.ndarray, name: str) -> None:
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f'{name}: expected a non-empty (N, D) array of features, got shape {tuple(x.shape)}')
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f'{name}: expected floating-point features, got {x.dtype}')


def _chunks(n: int, rows: int) -> Iterator[Tuple[int, int]]:
    for start in range(0, n, rows):
        yield start, min(n, start + rows)


class GalleryIndex:
    """The gallery's features, indexed for top-k inner-product search (:func:`build_index` makes one).

    ``gallery`` may be an ``np.memmap``: it is read ``options.chunk_rows`` rows at a time, each chunk
    L2-normalised before it is added (or, by the numpy engine, searched)."""

    def __init__(self, gallery: np.ndarray, options: IndexOptions, faiss: Optional[ModuleType],
                 index: Any = None):
        self.gallery, self.options, self.faiss, self.index = gallery, options, faiss, index

    @property
    def size(self) -> int:
        return int(self.gallery.shape[0])

    @property
    def dim(self) -> int:
        return int(self.gallery.shape[1])

    def describe(self) -> str:
        """``exact (faiss IndexFlatIP)``, ``ivf (faiss, nlist 4000, nprobe 64)``, ..."""
        o = self.options
        if self.index is None:
            return f'exact (numpy, chunks of {o.chunk_rows} rows)'
        if o.kind == 'ivf':
            return f'ivf (faiss IndexIVFFlat, nlist {self.index.nlist}, nprobe {self._nprobe()})'
        if o.kind == 'hnsw':
            return (f'hnsw (faiss IndexHNSWFlat, M {o.hnsw_m}, efConstruction {o.ef_construction}, '
                    f'efSearch {o.ef_search})')
        return 'exact (faiss IndexFlatIP)'

    def search(self, queries: np.ndarray, k: int, progress: bool = False) -> SearchResult:
        """The ``k`` nearest gallery rows of each query (``k`` larger than the gallery: all of it, with a note)."""
        _check_features(np.asarray(queries), 'queries')
        if queries.shape[1] != self.dim:
            raise ValueError(f'the queries have {queries.shape[1]}-d features, the gallery {self.dim}-d: '
                             'they come from different models')
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f'--topk must be a whole number >= 1, got {k!r}')
        notes = []
        if k > self.size:
            notes.append(f'--topk {k} is more than the gallery\'s {self.size} images: every query lists all '
                         f'{self.size}')
            k = self.size
        q = _normalised(queries)
        if self.index is None:
            indices, scores = _numpy_topk(self.gallery, q, k, self.options.chunk_rows, progress)
        else:
            self._set_search_knobs()
            blocks = [self.index.search(q[a:b], k) for a, b in tqdm(
                list(_chunks(len(q), _QUERY_BLOCK)), desc='search', unit='block', disable=not progress,
                dynamic_ncols=True)]
            scores, indices = (np.concatenate(parts) for parts in zip(*blocks))
        distances = np.where(indices >= 0, 1.0 - scores, np.inf).astype(np.float32)
        short = int((indices < 0).any(axis=1).sum())
        if short:
            knob = '--nprobe' if self.options.kind == 'ivf' else '--ef-search'
            notes.append(f'{self.describe()} found fewer than {k} matches for {short} of {len(q)} queries '
                         f'(raise {knob})')
        return SearchResult(indices.astype(np.int64), distances, self.describe(), notes)

    def _nprobe(self) -> int:
        nlist = self.index.nlist
        return min(self.options.nprobe or max(1, nlist // 8), nlist)

    def _set_search_knobs(self) -> None:
        if self.options.kind == 'ivf':
            self.index.nprobe = self._nprobe()
        elif self.options.kind == 'hnsw':
            self.index.hnsw.efSearch = self.options.ef_search


def _numpy_topk(gallery: np.ndarray, q: np.ndarray, k: int, chunk_rows: int,
                progress: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product without faiss: the gallery in chunks, each query's best ``k`` kept across
    chunks (ties: the lower gallery index first)."""
    rows = max(1, min(chunk_rows, _SCORES_PER_CHUNK // max(1, len(q))))
    best_i = np.zeros((len(q), 0), np.int64)
    best_s = np.zeros((len(q), 0), np.float32)
    for start, stop in tqdm(list(_chunks(len(gallery), rows)), desc='search', unit='chunk', disable=not progress,
                            dynamic_ncols=True):
        scores = q @ _normalised(gallery[start:stop]).T
        kk = min(k, stop - start)
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        cand_i = np.concatenate([best_i, part + start], axis=1)
        cand_s = np.concatenate([best_s, np.take_along_axis(scores, part, axis=1)], axis=1)
        order = np.lexsort((cand_i, -cand_s), axis=1)[:, :k]
        best_i, best_s = np.take_along_axis(cand_i, order, 1), np.take_along_axis(cand_s, order, 1)
    return best_i, best_s


def _sample_rows(gallery: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` distinct gallery rows drawn at random (seeded), normalised, read in ascending order."""
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(gallery), size=min(count, len(gallery)), replace=False))
    return _normalised(gallery[picks])


def _faiss_index(faiss: ModuleType, gallery: np.ndarray, o: IndexOptions, log: Callable[[str], None]) -> Any:
    """An empty faiss index of ``o.kind`` for the gallery, trained when it needs training."""
    n, d = gallery.shape
    if o.kind == 'exact':
        return faiss.IndexFlatIP(d)
    if o.kind == 'hnsw':
        index = faiss.IndexHNSWFlat(d, o.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = o.ef_construction
        return index
    nlist = min(n, o.nlist or max(1, int(round(math.sqrt(n)))))
    sample = _sample_rows(gallery, max(nlist, o.train_size or 64 * nlist), o.seed)
    log(f'training {nlist} IVF lists on {len(sample)} gallery rows')
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = o.seed
    index.cp.min_points_per_centroid = 1  # a small gallery's few rows per list are not worth a warning
    index.train(sample)
    return index


def build_index(gallery: np.ndarray, options: IndexOptions = IndexOptions(), progress: bool = False,
                log: Callable[[str], None] = print) -> GalleryIndex:
    """Index ``gallery`` ((N, D) float features, an ``np.memmap`` welcome) for :meth:`GalleryIndex.search`.

    ``options.engine``: 'auto' uses faiss when it is installed, else (exact index only) the chunked numpy
    search, and ``log``s a one-line notice; 'faiss' requires faiss; 'numpy' never uses it. The approximate
    indexes without faiss are an ImportError naming the extra."""
    _check_features(gallery, 'gallery')
    needs = f'--index {options.kind}' if options.kind != 'exact' else ('--engine faiss' if options.engine == 'faiss'
                                                                      else None)
    faiss = None if options.engine == 'numpy' else load_faiss(needs)
    if faiss is None:
        if options.engine == 'auto':
            log(f'faiss is not installed: exact search in numpy chunks (same answer, slower; {_INSTALL})')
        return GalleryIndex(gallery, options, None)
    index = _faiss_index(faiss, gallery, options, log)
    for start, stop in tqdm(list(_chunks(len(gallery), options.chunk_rows)), desc=f'index ({options.kind})',
                            unit='chunk', disable=not progress, dynamic_ncols=True):
        index.add(_normalised(gallery[start:stop]))
    return GalleryIndex(gallery, options, faiss, index)


def search_gallery(queries: np.ndarray, gallery: np.ndarray, k: int, options: IndexOptions = IndexOptions(),
                   progress: bool = False, log: Callable[[str], None] = print) -> SearchResult:
    """The ``k`` nearest gallery rows of each query: :func:`build_index` then :meth:`GalleryIndex.search`."""
    return build_index(gallery, options, progress, log).search(np.asarray(queries), k, progress)


def embed_images(extractor: FeatureExtractor, paths: Sequence[str], workers: int = 4, desc: str = 'embed',
                 progress: bool = True) -> np.ndarray:
    """(len(paths), D) float32 L2-normalised features of image files, decoded on ``workers`` threads a few
    batches ahead, with a progress bar. An unreadable image is an error naming it."""
    feats: List[np.ndarray] = []
    block = 4 * extractor.batch_size
    with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(total=len(paths), desc=desc, unit='img',
                                                           disable=not progress, dynamic_ncols=True) as bar:
        for start, stop in _chunks(len(paths), block):
            images = list(pool.map(read_image, paths[start:stop]))
            for indices, f in extractor.iter_batches(images, normalize=True):
                feats.append(f.float().cpu().numpy())
                bar.update(len(indices))
    return np.concatenate(feats) if feats else np.zeros((0, extractor.feature_dim or 0), np.float32)


def _same_checkpoint(recorded: str, ours: Optional[str]) -> bool:
    if not recorded or not ours:
        return not recorded and not ours
    if os.path.exists(recorded) and os.path.exists(ours):
        return os.path.samefile(recorded, ours)
    return os.path.normpath(recorded) == os.path.normpath(ours)


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: a recorded (JSON) preprocessing compares equal to the live one."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def check_features_source(path: os.PathLike, meta: Mapping[str, Any], dim: int, extractor: FeatureExtractor,
                          checkpoint: Optional[str]) -> None:
    """Refuse a features file (``extract``'s, its metadata ``meta``) that another model, checkpoint or
    preprocessing made, or of another feature size, than the queries' ``extractor``: one line naming both."""
    if extractor.feature_dim and dim != extractor.feature_dim:
        raise ValueError(f'{path} holds {dim}-d features, the model {extractor.model_name} makes '
                         f'{extractor.feature_dim}-d ones: extract the gallery with the same model')
    where = f'{path} was extracted with'
    advice = 'extract the gallery again with this model, or search with the one that made it'
    if meta.get('model') and meta['model'] != extractor.model_name:
        raise ValueError(f'{where} --model {meta["model"]}, this search uses {extractor.model_name}: {advice}')
    if not _same_checkpoint(str(meta.get('checkpoint') or ''), checkpoint):
        raise ValueError(f'{where} --checkpoint {meta.get("checkpoint") or "(none: pretrained or random weights)"}, '
                         f'this search uses {checkpoint or "(none)"}: {advice}')
    recorded = meta.get('preprocessing')
    if recorded and _plain(recorded) != _plain(extractor.preprocessing):
        raise ValueError(f'{where} the preprocessing {_plain(recorded)}, this search uses '
                         f'{_plain(extractor.preprocessing)}: {advice}')


def result_rows(result: SearchResult, queries: Sequence[SearchItem],
                gallery: Sequence[SearchItem]) -> List[Dict[str, Any]]:
    """One dict per (query, rank): query, rank (1-based), gallery, distance, gallery_pid, gallery_camid
    (None where unknown); ranks an approximate index did not fill are left out."""
    rows = []
    for qi, (indices, distances) in enumerate(zip(result.indices, result.distances)):
        for rank, (g, d) in enumerate(((int(g), float(d)) for g, d in zip(indices, distances) if g >= 0), start=1):
            item = gallery[g]
            rows.append(dict(query=queries[qi].path, rank=rank, gallery=item.path, distance=d,
                             gallery_pid=item.pid, gallery_camid=item.camid))
    return rows


CSV_COLUMNS = ('query', 'rank', 'gallery', 'distance', 'gallery_pid', 'gallery_camid')


def write_results(rows: Sequence[Mapping[str, Any]], queries: Sequence[SearchItem], output: os.PathLike,
                  info: Mapping[str, Any]) -> Tuple[Path, Path]:
    """``output/results.json`` (``info``, then per query its path, identity and ranked matches) and
    ``output/results.csv`` (one line per match: :data:`CSV_COLUMNS`), each written atomically."""
    out = Path(output)
    by_query: Dict[str, List[Dict[str, Any]]] = {q.path: [] for q in queries}
    for r in rows:
        by_query[r['query']].append({k: r[k] for k in CSV_COLUMNS[1:]})
    document = dict(info, queries=[dict(query=q.path, pid=q.pid, camid=q.camid, matches=by_query[q.path])
                                   for q in queries])
    atomic_write_json(out / 'results.json', document, indent=1)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator='\n')
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(['' if r[c] is None else (f'{r[c]:.6f}' if c == 'distance' else r[c]) for c in CSV_COLUMNS])
    atomic_write_text(out / 'results.csv', text.getvalue())
    return out / 'results.json', out / 'results.csv'


def _frame(query: SearchItem, match: SearchItem) -> Tuple[int, int, int]:
    if query.pid is None or match.pid is None:
        return UNKNOWN
    return GREEN if match.pid == query.pid else RED


def ranked_lists_figure(result: SearchResult, queries: Sequence[SearchItem], gallery: Sequence[SearchItem],
                        path: os.PathLike, max_queries: int = 8, topk: int = 10, title: str = 'Search') -> Path:
    """A PNG of the first ``max_queries`` queries, each followed by its ``topk`` nearest gallery images with
    their rank and cosine distance (the ranked-list drawer of evaluate's pictures); frames green / red where a
    listing gives both identities, blue where one is unknown."""
    rows = []
    for qi in range(min(max_queries, len(queries))):
        found = [(int(g), float(d)) for g, d in zip(result.indices[qi], result.distances[qi]) if g >= 0]
        rows.append((queries[qi], [(gallery[g], d, _frame(queries[qi], gallery[g])) for g, d in found[:topk]]))
    canvas = ranked_rows_picture(rows, max(1, min(topk, result.indices.shape[1])))
    frames = {colour for _, ranked in rows for _, _, colour in ranked}
    swatches = [(GREY, 'query')] + [(c, text) for c, text in ((GREEN, 'same identity'), (RED, 'another identity'),
                                                              (UNKNOWN, 'identity not known')) if c in frames]
    lines = ['Each row: a query, then its nearest gallery images left to right; under each: #rank and d, the '
             'cosine distance to the query (smaller = nearer), and the identity and camera where a listing gives them.',
             f'Index: {result.index}.']
    return save_png(stack(title_band(canvas.width, title, lines, swatches), canvas), path)
