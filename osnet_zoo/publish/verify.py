"""Re-hashing what the caches hold (``python -m osnet_zoo.weights verify``): the osnet-zoo cache's conversions
and kept originals against their source.json, the manifest and the trust-on-first-use lock file, and the
Hugging Face cache's files of the manifest's repos against the manifest's digests and their blob names."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from huggingface_hub import scan_cache_dir
from huggingface_hub.errors import CacheNotFound
from tqdm import tqdm

from .. import cli
from ..weights import cache
from ..weights.cache import cache_root
from ..weights.io import CheckpointError, check_regular_file, file_sha256
from ..weights.manifest import WeightsManifest

__all__ = ['WEIGHTS_SUFFIXES', 'verify_caches', 'verify_osnet_zoo_cache', 'verify_hf_cache', 'broken_cache_entries']


def verify_caches(manifest: WeightsManifest, cache_dir: str) -> int:
    """Re-hash the osnet-zoo cache (against source.json, the manifest and the lock file) and the Hugging Face
    cache ``cache_dir``'s files of the manifest's Hub repos, printing a table of each; returns 0 when all
    match, 1 when any mismatches, 2 when there is no cache at all."""
    ours = verify_osnet_zoo_cache(manifest)
    try:
        hf_cache = scan_cache_dir(cache_dir)
    except CacheNotFound:
        if ours is not None:
            return ours
        root = cache_root()
        ours_text = (f'the osnet-zoo cache {root} holds no converted tag and no lock file' if root.is_dir()
                     else f'no osnet-zoo cache at {root}')
        print(f'No Hugging Face cache at {cache_dir} (no such folder) and {ours_text}: nothing to verify.',
              file=sys.stderr)
        return 2
    return max(verify_hf_cache(manifest, cache_dir, hf_cache), ours or 0)


WEIGHTS_SUFFIXES = ('.safetensors', '.pth', '.pth.tar', '.pt', '.bin')


def broken_cache_entries(cache_dir: Path, repos: set, manifest: WeightsManifest) -> dict:
    """``{snapshot path: reason}`` for each weights entry of the manifest's repos in the cache that is not a
    regular file: a dangling link to a missing blob, a folder, a device or a FIFO (never read: reading
    ``/dev/zero`` or a FIFO would not end)."""
    broken = {}
    for repo_id in sorted(repos):
        for snapshot in sorted((cache_dir / f'models--{repo_id.replace("/", "--")}' / 'snapshots').glob('*')):
            for path in sorted(snapshot.rglob('*')):
                name = path.relative_to(snapshot).as_posix()
                if manifest.find_file(repo_id, name) is None and not name.endswith(WEIGHTS_SUFFIXES):
                    continue
                try:
                    check_regular_file(path, 'cached file')
                except CheckpointError as e:
                    broken[path] = cli.error_message(e)
    return broken


def verify_osnet_zoo_cache(manifest: WeightsManifest) -> Optional[int]:
    """Re-hash the osnet-zoo cache (conversions, kept originals) against source.json, the manifest and the lock
    file; None when there is no such cache."""
    root = cache_root()
    lock = cache.read_lock(root)
    if not lock and not any(root.glob(f'*/{cache.SOURCE_FILE}')):
        return None
    rows, bad = [], 0
    for meta in sorted(root.glob(f'*/{cache.SOURCE_FILE}')):
        name = meta.parent.name
        hit = cache.cached(root, name)
        if hit is None:
            continue
        src, problems = hit.source, []
        actual = file_sha256(hit.weights)
        if actual != src.get('weights_sha256'):
            problems.append(f'{cache.WEIGHTS_FILE} sha256 {actual}, written as {src.get("weights_sha256")}')
        if hit.original is not None and file_sha256(hit.original) != src.get('sha256'):
            problems.append(f'original {hit.original.name} differs from the downloaded file')
        entry = manifest.get(name)
        recorded = entry.upstream.get('sha256') if entry is not None else None
        locked = lock.get(name, {}).get('sha256')
        if recorded:
            how = 'verified'
            if recorded != src.get('sha256') and src.get('kind') != 'osnet-zoo':
                problems.append(f'converted from sha256 {src.get("sha256")}, the manifest records {recorded}')
        elif src.get('status') in ('first use', 'trusted'):
            how = 'first use, locked'
            if locked != src.get('sha256'):
                problems.append(f'converted from sha256 {src.get("sha256")}, the lock file records {locked}')
        else:
            how = src.get('status') or '?'
        bad += bool(problems)
        rows.append([name, src.get('kind', '?'), src.get('sha256', '?'),
                     'MISMATCH: ' + '; '.join(problems) if problems else f'ok ({how})'])
    print(f'osnet-zoo cache {root} (lock file {root / cache.LOCK_FILE}: {len(lock)} trusted on first use)')
    if rows:
        print(cli.format_table(rows, ['tag', 'source', 'sha256 (as published)', 'status']))
    print(f'{len(rows)} cached tags checked, {bad} mismatched.\n')
    if bad:
        print('Delete the folder of a mismatched tag and load (or `download`) it again.', file=sys.stderr)
    return 1 if bad else 0


def verify_hf_cache(manifest: WeightsManifest, cache_dir: str, hf_cache: Any) -> int:
    """Re-hash the Hugging Face cache's files of the manifest's repos."""
    repos = {loc.repo_id for e in manifest for loc in (e.ours, e.upstream_file) if loc is not None}
    # entries scan_cache_dir cannot list (a dangling blob link drops the whole repo from its scan; a folder
    # is not a file): reported as broken, never as "no cached file"
    broken = broken_cache_entries(Path(cache_dir), repos, manifest)
    todo = []
    for repo in hf_cache.repos:
        if repo.repo_type != 'model' or repo.repo_id not in repos:
            continue
        for rev in repo.revisions:
            for f in rev.files:
                known = manifest.find_file(repo.repo_id, f.file_name)
                if f.file_path in broken:
                    continue
                if known is not None or f.file_name.endswith(WEIGHTS_SUFFIXES):
                    todo.append((repo.repo_id, rev.commit_hash, f, known))
    if not todo and not broken:
        print(f'{cache_dir}: no cached file of the manifest\'s repos ({len(repos)} repos).')
        return 0
    rows = [['-', str(path), '-', '-', f'BROKEN: {reason}'] for path, reason in broken.items()]
    bad = len(rows)
    for repo_id, commit, f, known in tqdm(todo, desc='verifying', unit='file', disable=not sys.stderr.isatty()):
        actual = file_sha256(f.blob_path, progress=sys.stderr.isatty())
        size = f.blob_path.stat().st_size
        problems = []
        if known is None:
            status = 'not in manifest'
        else:
            entry, loc = known
            if loc.sha256 and actual != loc.sha256:
                problems.append(f'sha256 expected {loc.sha256}')
            if loc.size is not None and size != loc.size:
                problems.append(f'size expected {loc.size}')
            status = 'MISMATCH: ' + '; '.join(problems) if problems else ('ok' if loc.sha256 else 'no digest recorded')
        # LFS blobs are named after their sha256: a blob whose content disagrees with its name is damaged
        if len(f.blob_path.name) == 64 and f.blob_path.name != actual and not problems:
            problems.append('content differs from its blob name')
            status = 'MISMATCH: content differs from its blob name (truncated or modified)'
        bad += bool(problems)
        name = known[0].name if known else '-'
        rows.append([name, f'{repo_id}@{commit[:8]}/{f.file_name}', f'{size:,}', actual, status])
    print(cli.format_table(rows, ['entry', 'cached file', 'bytes', 'sha256', 'status']))
    print(f'\n{len(rows)} files checked, {bad} mismatched (cache {cache_dir}, manifest {manifest.path}).')
    if bad:
        print('Delete mismatched files (`hf cache delete`, or rm the blob) and load again online to re-download.',
              file=sys.stderr)
    return 1 if bad else 0
