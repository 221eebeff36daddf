"""Resumable, sharded feature extraction of many images into one safetensors file (the library of
``python -m osnet_zoo.extract``).

The images are processed in shards; each finished shard is written atomically to ``<out>.parts/`` so
that an interrupted run (Ctrl-C, a killed job, ``max_shards``) continues where it stopped when rerun
with the same arguments. When every shard is done they are joined into ``out``: a safetensors file with
``features`` (N, D) float32 and, in its metadata, the image paths (row order) and how they were made.
Read it back with :func:`load_features`.

Under ``torchrun`` (torch.distributed initialised) every rank runs :func:`extract_features`: rank r computes
every world-size-th shard, rank 0 merges (docs/cluster.md).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from safetensors import safe_open
from tqdm import tqdm

from .. import distributed as du
from ..data import ImageReadError, find_images, read_image
from ..files import atomic_save_safetensors, atomic_write_text
from .extractor import FeatureExtractor
from .quantize import CALIBRATION_SIZE

__all__ = ['extract_features', 'load_features', 'map_features']

# safetensors caps its JSON header at 100 MB; longer path lists go to a sidecar file
_MAX_METADATA_PATHS_BYTES = 32_000_000
_FORMAT = 'osnet_zoo.features/1'


def _read_shard(path: Path) -> Tuple[torch.Tensor, List[str], List[str]]:
    with safe_open(str(path), framework='pt') as f:
        meta = f.metadata() or {}
        feats = f.get_tensor('features')
    return feats, json.loads(meta['paths']), json.loads(meta.get('skipped', '[]'))


def load_features(path: str | os.PathLike) -> Tuple[torch.Tensor, List[str], Dict[str, Any]]:
    """Read an ``extract`` output: (features (N, D) float32, paths (N), metadata dict)."""
    path = Path(path)
    with safe_open(str(path), framework='pt') as f:
        meta = dict(f.metadata() or {})
        feats = f.get_tensor('features')
    paths, info = _read_metadata(path, meta, feats.shape[0])
    return feats, paths, info


def map_features(path: str | os.PathLike) -> Tuple[np.ndarray, List[str], Dict[str, Any]]:
    """As :func:`load_features`, with the features memory-mapped read-only (an (N, D) float32 ``np.memmap``):
    no row is read from disk before it is used, so a gallery larger than the memory can be searched."""
    path = Path(path)
    header, data_start = _safetensors_header(path)
    entry = header.get('features')
    if not isinstance(entry, dict) or entry.get('dtype') != 'F32' or len(entry.get('shape') or ()) != 2:
        raise ValueError(f'{path} is not an osnet_zoo features file (no 2-D float32 "features" tensor).')
    (rows, dim), (begin, end) = entry['shape'], entry['data_offsets']
    if end - begin != rows * dim * 4 or data_start + end > path.stat().st_size:
        raise ValueError(f'{path} is damaged: its "features" tensor ({rows} x {dim}) does not fit the file.')
    features = (np.memmap(path, np.float32, 'r', offset=data_start + begin, shape=(rows, dim)) if rows * dim
                else np.zeros((rows, dim), np.float32))
    paths, info = _read_metadata(path, dict(header.get('__metadata__') or {}), rows)
    return features, paths, info


def _safetensors_header(path: Path) -> Tuple[Dict[str, Any], int]:
    """A safetensors file's JSON header and where its data starts (8 bytes of header length, then the header)."""
    try:
        with open(path, 'rb') as f:
            length = int.from_bytes(f.read(8), 'little')
            if not 2 <= length <= 100_000_000:
                raise ValueError(f'header length {length}')
            header = json.loads(f.read(length))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f'{path} is not an osnet_zoo features file (not safetensors: {e}).') from None
    if not isinstance(header, dict):
        raise ValueError(f'{path} is not an osnet_zoo features file (not safetensors).')
    return header, 8 + length


def _read_metadata(path: Path, meta: Dict[str, str], rows: int) -> Tuple[List[str], Dict[str, Any]]:
    """The paths (N) and the metadata of a features file, its format and row count checked."""
    if meta.get('format') != _FORMAT:
        raise ValueError(f'{path} is not an osnet_zoo features file (metadata format {meta.get("format")!r}).')
    if 'paths' in meta:
        paths = json.loads(meta.pop('paths'))
    else:
        sidecar = path.with_name(meta['paths_file'])
        paths = json.loads(sidecar.read_text())['paths']
    info = {k: json.loads(v) if k in ('preprocessing', 'skipped', 'normalized', 'num_images') else v
            for k, v in meta.items()}
    if len(paths) != rows:
        raise ValueError(f'{path}: {rows} feature rows but {len(paths)} paths.')
    return paths, info


def _run_key(paths: Sequence[str], settings: Dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps([list(paths), settings], sort_keys=True).encode())
    return h.hexdigest()


def _prefetch(pool: ThreadPoolExecutor, items: Sequence[Any], fn, window: int) -> Iterator[Any]:
    """``map(fn, items)`` on the pool, in order, with at most ``window`` results in flight (bounded memory)."""
    futures = []
    it = iter(items)
    for item in it:
        futures.append(pool.submit(fn, item))
        if len(futures) >= window:
            break
    while futures:
        result = futures.pop(0).result()
        nxt = next(it, None)
        if nxt is not None:
            futures.append(pool.submit(fn, nxt))
        yield result


def _shard_matches(path: Path, shard_paths: Sequence[str]) -> bool:
    """A finished shard is reused when it covers exactly these images (kept or skipped as unreadable)."""
    try:
        _, kept, skipped = _read_shard(path)
    except Exception:  # a damaged shard is recomputed
        return False
    return sorted(kept + skipped) == sorted(shard_paths)


def _load_or_skip(path: str, skip_bad: bool):
    try:
        return read_image(path)
    except (OSError, ValueError) as e:
        if skip_bad:
            return None
        reason = ' '.join(str(e.__cause__ or e).split())
        raise ImageReadError(f'unreadable image {path} ({reason}); pass --skip-bad to leave unreadable images '
                             'out (they are listed in the output metadata), or list every bad file first with '
                             'osnet_zoo.data.verify_images') from None


def _validate_sizes(batch_size: int, shard_size: int) -> None:
    for option, value in (('--batch-size', batch_size), ('--shard-size', shard_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{option} must be a whole number >= 1, got {value!r}.')


def _extract_shard(extractor: FeatureExtractor, pool: ThreadPoolExecutor, shard_paths: Sequence[str],
                   skip_bad: bool, bar: tqdm) -> Tuple[torch.Tensor, List[str], List[str]]:
    """(features, kept paths, skipped paths) of one shard, decoding ahead on the pool."""
    kept: List[str] = []
    skipped: List[str] = []

    def readable_images() -> Iterator[Any]:
        loaded = _prefetch(pool, shard_paths, lambda p: _load_or_skip(p, skip_bad), 4 * extractor.batch_size)
        for p, img in zip(shard_paths, loaded):
            if img is None:
                skipped.append(p)
                bar.update(1)
                continue
            kept.append(p)
            yield img

    feats = []
    for indices, f in extractor.iter_batches(readable_images()):
        feats.append(f.float().cpu())
        bar.update(len(indices))
    tensor = torch.cat(feats) if feats else torch.zeros(0, extractor.feature_dim or 0)
    return tensor, kept, skipped


def extract_features(
        sources: Sequence[str],
        out: str | os.PathLike,
        model: str = 'osnet_x1_0',
        pretrained: bool = True,
        checkpoint_path: Optional[str] = None,
        device: Optional[str] = None,
        precision: str = 'fp32',
        batch_size: int = 64,
        shard_size: int = 2048,
        normalize: bool = True,
        skip_bad: bool = False,
        workers: int = 4,
        max_shards: Optional[int] = None,
        optimize: bool = False,
        backend: str = 'auto',
        progress: bool = True,
        threads: Optional[int] = None,
        spin: bool = False,
        calibration: Optional[str] = None,
        calibration_size: int = CALIBRATION_SIZE,
) -> bool:
    """Extract features of the images in ``sources`` into ``out`` (resumable; see the module docstring).

    Under ``torchrun`` (torch.distributed initialised) every rank calls it: rank r computes the shards i
    with ``i % world_size == r`` and writes them to ``<out>.parts/`` under their global index, so the parts
    (and the merged output, written by rank 0 once every rank is done) are those of a one-process run,
    whatever the world size; a rerun, with any world size, skips the finished shards. An error on one rank
    stops every rank (see :func:`osnet_zoo.distributed.fail_together`).

    ``threads`` / ``spin`` are the extractor's (:class:`FeatureExtractor`; the ``workers`` decoding threads
    count against its default ``threads``). ``calibration`` / ``calibration_size``: the calibration images of
    ``precision='int8'`` (:class:`FeatureExtractor`).

    Returns True when ``out`` is complete, False when ``max_shards`` (per rank) stopped the run early.
    """
    out = Path(out)
    parts = out.with_name(out.name + '.parts')
    # the key covers what determines a shard's features; the images and the bad-image handling are checked
    # per shard, so a rerun with --skip-bad, or after a bad file was removed, keeps the shards still valid
    settings = dict(model=model, pretrained=pretrained, checkpoint=str(checkpoint_path) if checkpoint_path else None,
                    precision=precision, normalize=normalize, shard_size=shard_size, backend=backend)
    if precision == 'int8':  # the quantized model depends on its calibration images
        settings.update(calibration=str(calibration) if calibration else None, calibration_size=calibration_size)
    # everything is checked on every rank before anything is created on disk
    with du.fail_together():
        _validate_sizes(batch_size, shard_size)
        listing = find_images(sources) if du.is_main_process() else None
    paths: List[str] = du.broadcast_object(listing)  # rank 0's listing: every rank shards the same list
    extractor = None
    with du.fail_together():
        plan = _plan_shards(parts, _run_key([], settings), paths, shard_size, progress)
        if plan.todo and (max_shards is None or max_shards > 0):
            # build the model before creating anything on disk: a bad --model or checkpoint leaves no folder
            if not pretrained and checkpoint_path is None:
                torch.manual_seed(0)  # random weights, but the same on every rank and in a resumed run
            extractor = FeatureExtractor(model, device=device, precision=precision, batch_size=batch_size,
                                         normalize=normalize, pretrained=pretrained,
                                         checkpoint_path=checkpoint_path, optimize=optimize, backend=backend,
                                         fixed_batch=True, threads=threads, spin=spin, workers=workers,
                                         calibration=calibration, calibration_size=calibration_size)
    if du.is_main_process() and not plan.state_file.is_file():
        parts.mkdir(parents=True, exist_ok=True)
        atomic_write_text(plan.state_file,
                          json.dumps(dict(key=plan.key, num_images=len(paths), **settings), indent=1))
    du.barrier()
    stopped_early = _run_shards(extractor, plan, paths, shard_size, workers, max_shards, skip_bad, progress)
    if du.any_rank(stopped_early):
        return False
    with du.fail_together():
        if du.is_main_process():
            _merge_shards(plan.shard_files, plan.state_file, out, model, checkpoint_path, precision, normalize)
            shutil.rmtree(parts)
    return True


@dataclass
class _ShardPlan:
    """The shards of a run: every shard's file, this rank's (``mine``) and those of them still to compute."""
    key: str
    state_file: Path
    shard_files: List[Path]
    mine: List[int]
    todo: List[int]


def _plan_shards(parts: Path, key: str, paths: Sequence[str], shard_size: int, progress: bool) -> _ShardPlan:
    """This rank's shards of ``paths`` and which of them a partial run in ``parts`` has not finished; a
    partial run with other settings (another ``key``) is an error naming its folder."""
    rank, world = du.get_rank(), du.get_world_size()
    state_file = parts / 'run.json'
    if parts.is_dir() and state_file.is_file():
        state = _read_run_state(state_file)
        if state.get('key') != key:
            raise RuntimeError(
                f'{parts} holds a partial run with other settings (model {state.get("model")!r}, '
                f'{state.get("num_images")} images). Delete that folder to start over, or pass another --out.')
    num_shards = (len(paths) + shard_size - 1) // shard_size
    shard_files = [parts / f'shard_{i:06d}.safetensors' for i in range(num_shards)]
    mine = list(range(rank, num_shards, world))
    todo = [i for i in mine
            if not shard_files[i].is_file() or not _shard_matches(shard_files[i], _shard(paths, i, shard_size))]
    if len(todo) < len(mine) and progress:
        print(f'Reusing {len(mine) - len(todo)} finished shard(s) from {parts}'
              + (f' (rank {rank})' if world > 1 else ''))
    return _ShardPlan(key, state_file, shard_files, mine, todo)


def _run_shards(extractor: Optional[FeatureExtractor], plan: _ShardPlan, paths: Sequence[str], shard_size: int,
                workers: int, max_shards: Optional[int], skip_bad: bool, progress: bool) -> bool:
    """Extract and write this rank's unfinished shards; True when ``max_shards`` stopped it early."""
    my_images = sum(len(_shard(paths, i, shard_size)) for i in plan.mine)
    bar = tqdm(total=my_images, initial=my_images - sum(len(_shard(paths, i, shard_size)) for i in plan.todo),
               unit='img', desc='extract', disable=not progress or not du.is_main_process(), dynamic_ncols=True)
    try:
        with du.fail_together(), ThreadPoolExecutor(max(1, workers)) as pool:
            for n, i in enumerate(plan.todo):
                if max_shards is not None and n >= max_shards:
                    return True
                tensor, kept, skipped = _extract_shard(extractor, pool, _shard(paths, i, shard_size), skip_bad, bar)
                atomic_save_safetensors({'features': tensor}, plan.shard_files[i],
                                        {'paths': json.dumps(kept), 'skipped': json.dumps(skipped),
                                         'preprocessing': json.dumps(extractor.preprocessing)})
    finally:
        bar.close()  # an error line must not land on the progress bar's line
    return False


def _read_run_state(state_file: Path) -> Dict[str, Any]:
    """``<out>.parts/run.json``, which a partial run wrote; a damaged or edited one is an error naming it."""
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError) as e:
        state = e
    if not isinstance(state, dict):
        raise RuntimeError(f'{state_file} is not the state of a partial run ({" ".join(str(state).split())[:80]}); '
                           f'delete the folder {state_file.parent} to start over.')
    return state


def _shard(paths: Sequence[str], index: int, shard_size: int) -> Sequence[str]:
    return paths[index * shard_size:(index + 1) * shard_size]


def _merge_shards(shard_files: Sequence[Path], state_file: Path, out: Path, model: str,
                  checkpoint_path: Optional[str], precision: str, normalize: bool) -> None:
    """Join the finished shards, in input order, into ``out``."""
    all_feats, all_paths, all_skipped = [], [], []
    preprocessing = None
    for f in shard_files:
        with safe_open(str(f), framework='pt') as handle:
            shard_meta = handle.metadata() or {}
        preprocessing = preprocessing or json.loads(shard_meta.get('preprocessing', 'null'))
        feats, shard_paths, skipped = _read_shard(f)
        all_feats.append(feats)
        all_paths.extend(shard_paths)
        all_skipped.extend(skipped)
    features = torch.cat(all_feats)
    # parts written before shards carried their preprocessing keep it in run.json
    preprocessing = preprocessing or _read_run_state(state_file).get('preprocessing')
    metadata = {
        'format': _FORMAT, 'model': model, 'checkpoint': str(checkpoint_path or ''), 'precision': precision,
        'normalized': json.dumps(normalize), 'num_images': json.dumps(len(all_paths)),
        'preprocessing': json.dumps(preprocessing), 'skipped': json.dumps(all_skipped),
    }
    paths_json = json.dumps(all_paths)
    if len(paths_json) <= _MAX_METADATA_PATHS_BYTES:
        metadata['paths'] = paths_json
    else:
        sidecar = out.with_name(out.name + '.paths.json')
        atomic_write_text(sidecar, json.dumps({'paths': all_paths}))
        metadata['paths_file'] = sidecar.name
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors({'features': features}, out, metadata)


