"""Pretrained weights through timm's own pretrained path, with sha256 checks and no unpickling.

timm resolves *where* the weights are (tag, ``pretrained_cfg_overlay``, ``hf-hub:`` names); this module
fetches the file with huggingface_hub (honouring ``cache_dir``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE``),
checks its size and sha256 against the weights manifest *before* reading it, reads it with
``read_checkpoint`` (safetensors, or ``torch.load(weights_only=True)`` with a numpy-scalar allowlist) and
hands the tensors to timm's loader, which maps them with ``checkpoint_filter_fn`` (strict: every backbone
key, every shape) and adapts the classifier and ``in_chans`` as for any timm model.

A registry tag loads from its sources in order (``WeightsEntry.download_sources``, ``fetch_pretrained``): our
published safetensors; the authors' Hub file at its recorded revision; the authors' Hub file without one;
Google Drive (gdown). A file whose sha256 the manifest does not record is trusted on first use (its digest
is locked in the osnet-zoo cache, ``cache.py``; ``OSNET_ZOO_STRICT_WEIGHTS=1`` refuses such sources). A
downloaded reference file is converted once to safetensors in the osnet-zoo cache; later loads read only
that file, without a network request. The caches are looked at first; the network is tried only when
nothing is cached, and a Hub or Drive host that cannot be reached is detected with one request (no retries)
and remembered for the process.

This module imports nothing from ``osnet_zoo.models``.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union
from urllib.parse import urlsplit

import requests
import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
)
from timm.models import resolve_pretrained_cfg

from . import cache
from .cache import (
    PretrainedWeightsError, WeightsIntegrityError, WeightsTrustError, WeightsUnavailableError, cache_root, strict_mode,
)
from ..files import atomic_path
from .io import CheckpointError, check_regular_file, classifier_rows, file_sha256, read_checkpoint, unwrap_state_dict
from .manifest import (
    HubFile, WeightsEntry, WeightsManifest, WeightsSource, active_manifest_path, gdrive_url, load_manifest,
)

__all__ = ['PretrainedWeightsError', 'WeightsIntegrityError', 'WeightsUnavailableError', 'fetch_hub_file',
           'check_file', 'resolve_pretrained', 'forget_loaded_state_dict', 'hub_offline_reason', 'hf_cache_dir',
           'manual_download_message', 'describe_source', 'fetch_pretrained', 'Fetched', 'FitCheck',
           'strict_refusal', 'manual_fallback']

_logger = logging.getLogger(__name__)

# what timm tries for a Hub repo without hf_hub_filename (its HF_SAFE_WEIGHTS_NAME, then HF_WEIGHTS_NAME)
_DEFAULT_HUB_FILES = ('model.safetensors', 'pytorch_model.bin')
_SOURCE_KEYS = ('source', 'file', 'url', 'hf_hub_id', 'hf_hub_filename')
_PROBE_TIMEOUT_S = 5.0
# why the Hub could not be reached, once a probe failed in this process (None: not known to be unreachable)
_unreachable: Dict[str, str] = {}


def _hub_client_errors() -> Tuple[type, ...]:
    """The HTTP client errors huggingface_hub passes on (a redirect loop, a host that stops answering): its
    client is requests (0.x), httpx (1.x) or httpx2 (2.x), whichever the installed release uses."""
    errors: List[type] = [requests.RequestException]
    for client in ('httpx', 'httpx2'):
        try:
            errors.append(importlib.import_module(client).HTTPError)
        except ImportError:
            pass
    return tuple(errors)


_HUB_CLIENT_ERRORS = _hub_client_errors()


def hub_offline_reason() -> Optional[str]:
    """Why huggingface_hub works offline, in words that are true (None when it is not offline)."""
    value = os.environ.get('HF_HUB_OFFLINE')
    if value is not None and value.strip().upper() in ('1', 'ON', 'YES', 'TRUE'):
        return f'HF_HUB_OFFLINE={value} is set in the environment'
    if hf_constants.HF_HUB_OFFLINE:
        return 'huggingface_hub was imported with HF_HUB_OFFLINE set (its offline mode stays on in this process)'
    return None


def hf_cache_dir(cache_dir: Optional[Union[str, os.PathLike]]) -> str:
    """``cache_dir`` if given, else ``$HF_HUB_CACHE`` or huggingface_hub's default cache."""
    if cache_dir is not None:
        return str(cache_dir)
    return os.environ.get('HF_HUB_CACHE') or hf_constants.HF_HUB_CACHE


def _hub_unreachable_reason() -> Optional[str]:
    """One request to the Hub endpoint, without retries: the reason it cannot be reached, or None.

    huggingface_hub retries a failed connection 5 times with back-off (about 25 s per file); probing once
    first lets a user without network get the real reason in seconds. The answer is kept for the process.
    """
    endpoint = hf_constants.ENDPOINT
    if endpoint not in _unreachable:
        try:
            connect, read = cache.network_timeouts()
            requests.head(endpoint, timeout=(connect, min(read, _PROBE_TIMEOUT_S)))
            _unreachable[endpoint] = ''
        except requests.RequestException as e:
            _unreachable[endpoint] = f'{endpoint} cannot be reached ({type(e).__name__}: {_first_line(e)})'
    return _unreachable[endpoint] or None


# ---------------------------------------------------------------------------------------------------- checks

def check_file(path: Union[str, os.PathLike], expected: HubFile, name: str, manifest_path: Optional[Path]) -> str:
    """Check size and sha256 of ``path`` against ``expected`` (from the manifest) and return the sha256.

    Raises:
        WeightsIntegrityError: naming the file, the expected and actual digest, and what to do.
    """
    # a device or FIFO (a cache entry linked to /dev/zero) would be hashed forever: refused before reading
    path = check_regular_file(path, f'Pretrained weights for {name}: the cached file')
    actual_size = path.stat().st_size
    actual = file_sha256(path)
    bad_size = expected.size is not None and actual_size != expected.size
    bad_digest = expected.sha256 is not None and actual != expected.sha256
    if bad_size or bad_digest:
        raise WeightsIntegrityError(_integrity_message(
            name, path, expected, actual, actual_size, manifest_path,
            problem='is truncated, corrupt, or not the published checkpoint'))
    if expected.sha256 is None:
        _logger.warning(
            'No sha256 is recorded for %s (%s) in %s: loaded without a digest check. Its sha256 is %s (%d bytes); '
            'record it in the manifest once you trust the file.', name, expected.describe(), manifest_path, actual,
            actual_size)
    return actual


def _integrity_message(name: str, path: Path, expected: HubFile, actual: Optional[str], actual_size: Optional[int],
                       manifest_path: Optional[Path], problem: str) -> str:
    resolved = path.resolve() if path.exists() else path
    size_note = f', {expected.size:,} bytes' if expected.size is not None else ''
    return (
        f'Pretrained weights for {name}: the file {problem}.\n'
        f'  file:     {path}' + (f' -> {resolved}' if resolved != path else '') + '\n'
        f'  from:     {expected.describe()} on the Hugging Face Hub\n'
        f'  expected: sha256 {expected.sha256 or "(not recorded)"}{size_note} (manifest {manifest_path})\n'
        f'  actual:   sha256 {actual or "(unreadable)"}'
        + (f', {actual_size:,} bytes' if actual_size is not None else '') + '\n'
        f'What to do: delete the cached copy (rm "{resolved}", or `hf cache delete`) and load again with network '
        'access to download it afresh; `python -m osnet_zoo.weights verify` re-checks the whole cache. If you '
        'converted or published these weights yourself, record them with `python -m osnet_zoo.weights convert '
        '... --update-manifest` (or point OSNET_ZOO_MANIFEST at your manifest).')


# ---------------------------------------------------------------------------------------------------- fetching

class _Missing(Exception):
    """A location that cannot provide the file (carries the reason)."""


def fetch_hub_file(location: HubFile, cache_dir: Optional[Union[str, os.PathLike]] = None,
                   local_only: bool = False) -> Path:
    """Find ``location`` in the Hugging Face cache or download it there, and return its path.

    Raises:
        _Missing: the file is not cached and cannot be downloaded (the reason is in the message).
    """
    if not local_only:
        _answers(_url(location.repo_id, location.filename, location.revision))
    try:
        with _hub_timeouts() as read:
            return Path(hf_hub_download(
                location.repo_id, location.filename, revision=location.revision, cache_dir=cache_dir,
                local_files_only=local_only, library_name='osnet_zoo', etag_timeout=read))
    except LocalEntryNotFoundError as e:
        raise _Missing(f'not in the Hugging Face cache ({hf_cache_dir(cache_dir)})') from e
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise _Missing(f'not on the Hub ({type(e).__name__}: {_first_line(e)})') from e
    except (HfHubHTTPError, OSError) as e:
        raise _Missing(f'download failed ({type(e).__name__}: {_first_line(e)})') from e
    except _HUB_CLIENT_ERRORS as e:  # a redirect loop, a host that stops answering: what huggingface_hub passes on
        raise _Missing(f'download of {_url(location.repo_id, location.filename, location.revision)} failed '
                       f'({type(e).__name__}: {_first_line(e)})') from e


@contextlib.contextmanager
def _hub_timeouts() -> Iterator[float]:
    """huggingface_hub's download timeout set to our read timeout while a file is fetched (it reads the
    module constant at each request; the metadata request takes ``etag_timeout``, the read timeout yielded)."""
    _, read = cache.network_timeouts()
    previous = hf_constants.HF_HUB_DOWNLOAD_TIMEOUT
    hf_constants.HF_HUB_DOWNLOAD_TIMEOUT = read
    try:
        yield read
    finally:
        hf_constants.HF_HUB_DOWNLOAD_TIMEOUT = previous


def _answers(url: str) -> None:
    """One HEAD request to ``url`` within our timeouts, without retries: a host that accepts the connection
    and never answers, or redirects in a loop, is a _Missing naming the URL at once. (huggingface_hub retries
    a timed-out metadata request five times with a 60 s timeout: minutes for a silent host.)"""
    connect, read = cache.network_timeouts()
    try:
        requests.head(url, timeout=(connect, read), allow_redirects=True)
    except requests.TooManyRedirects:
        raise _Missing(f'{url} redirects in a loop (more than {cache.MAX_REDIRECTS} redirects)') from None
    except requests.Timeout as e:
        raise _Missing(f'{url} did not answer within the timeouts ({connect:g} s to connect, {read:g} s to read; '
                       f'{cache.CONNECT_TIMEOUT_ENV}, {cache.READ_TIMEOUT_ENV}) ({type(e).__name__})') from None
    except requests.RequestException as e:
        raise _Missing(f'{url} cannot be reached ({type(e).__name__}: {_first_line(e)})') from None


def _url(repo_id: str, filename: str, revision: Optional[str]) -> str:
    return hf_hub_url(repo_id, filename, revision=revision)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _fetch_first(name: str, candidates: List[HubFile], entry: Optional[WeightsEntry], cache_dir: Any,
                 manifest: WeightsManifest) -> Tuple[Path, HubFile, str]:
    """The first candidate in the cache, else the first that downloads; checked against its digest.

    A file that is present but fails its check is an error, never a reason to try the next location."""
    tried: List[Tuple[HubFile, str]] = []
    for loc in candidates:
        try:
            path = fetch_hub_file(loc, cache_dir, local_only=True)
        except _Missing as e:
            tried.append((loc, str(e)))
            continue
        return path, loc, check_file(path, loc, name, manifest.path)
    why_not = hub_offline_reason() or _hub_unreachable_reason()
    if why_not is None:
        tried = []
        for loc in candidates:
            try:
                path = fetch_hub_file(loc, cache_dir)
            except _Missing as e:
                tried.append((loc, str(e)))
                continue
            if tried:
                _logger.info('%s: using %s (%s)', name, loc.describe(),
                             '; '.join(f'{t.describe()}: {r}' for t, r in tried))
            return path, loc, check_file(path, loc, name, manifest.path)
    raise WeightsUnavailableError(_unavailable_message(name, tried, entry, why_not, cache_dir))


def _unavailable_message(name: str, tried: List[Tuple[Any, str]], entry: Optional[WeightsEntry],
                         why_not: Optional[str], cache_dir: Any) -> str:
    if why_not is not None:
        lines = [f'Pretrained weights for {name} are not in the Hugging Face cache ({hf_cache_dir(cache_dir)})'
                 + (f' nor in the osnet-zoo cache ({cache_root()})' if entry is not None else '')
                 + f' and cannot be downloaded: {why_not}.']
    else:
        lines = [f'Pretrained weights for {name} are not available:']
    for loc, reason in tried:
        size = f', {loc.size:,} bytes' if loc.size is not None else ''
        lines.append(f'  - {loc.describe()}: {reason}; expected sha256 {loc.sha256 or "not recorded"}{size}, '
                     'actual: no file')
    if why_not is not None and why_not.startswith('HF_HUB_OFFLINE'):
        todo = ('unset HF_HUB_OFFLINE and load once with network access so that the file is cached (or prefetch '
                'it where there is network: python -m osnet_zoo.weights download TAG)')
    elif any('cannot be reached' in reason for _, reason in tried) or \
            (why_not is not None and 'cannot be reached' in why_not):
        todo = ('check the network or proxy (HF_ENDPOINT, OSNET_ZOO_GDRIVE_URL, HTTPS_PROXY) and load again; to use '
                'the cache only, set HF_HUB_OFFLINE=1')
    else:
        todo = 'load again with network access'
    lines.append(f'What to do: {todo}; or copy the file here and load it with timm.create_model({name!r}, '
                 'pretrained=True, pretrained_cfg_overlay=dict(file=PATH)).')
    if entry is not None and entry.gdrive_url:
        lines.append(manual_download_message(entry))  # the Drive link is in its download step
    return '\n'.join(lines)


def manual_download_message(entry: WeightsEntry) -> str:
    """The exact steps that load a tag by hand (download, check, load), for refusals and failures."""
    up = entry.upstream
    fname = up.get('filename') or f'{entry.name}.pth'
    digest = up.get('sha256')
    get = entry.gdrive_url or ''
    if entry.upstream_file is not None:
        get = f'hf download {up["hf_hub_id"]} {fname} --local-dir .' + (f'   (or {get})' if get else '')
    else:
        get += f'   (save it as {fname})'
    check = (f'sha256sum {fname}   # must print {digest}' if digest else
             f'sha256sum {fname}   # no digest is recorded for this file: compare with a source you trust')
    size = f' ({up["size"]:,} bytes)' if up.get('size') else ''
    return (
        f'  1. download: {get}{size}\n'
        f'  2. check:    {check}\n'
        f"  3. load:     timm.create_model('{entry.name}', pretrained=True, "
        f"pretrained_cfg_overlay=dict(file='{fname}'))")


def manual_fallback(entry: WeightsEntry) -> str:
    """``manual_download_message`` on one line, for the one-line download errors."""
    steps = manual_download_message(entry).splitlines()
    return 'Manual fallback: ' + '; '.join(' '.join(line.split()) for line in steps)


def strict_refusal(entry: WeightsEntry, refused: List[WeightsSource]) -> str:
    """Why strict mode loads nothing for ``entry``, and how to load it by hand."""
    where = ', '.join(f'{s.describe()} ({s.kind})' for s in refused) or 'no source'
    return (f'Pretrained weights for {entry.name}: {cache.STRICT_ENV}=1 allows only sources the manifest pins (a Hub '
            f'revision or a recorded sha256), and no revision or sha256 is recorded for {where}.\n'
            + manual_download_message(entry) + '\n'
            'Unset the variable to download it and trust it on first use (its sha256 is then locked in '
            f'{cache_root() / cache.LOCK_FILE}); a maintainer who holds the file records its digest with '
            '`python -m osnet_zoo.weights verify --record FILE` (see docs/weights.md).')


# ---------------------------------------------------------------------------------------------------- sources

# a fit check: why these tensors are not a checkpoint of the entry's architecture, or None (models/osnet.py)
FitCheck = Callable[[WeightsEntry, Dict[str, torch.Tensor]], Optional[str]]


@dataclass
class Fetched:
    """A tag's weights found in a cache or downloaded: the file to read and where it came from."""
    name: str
    source: WeightsSource
    path: Path  # our cache's model.safetensors, or a Hub file (ours, or the authors' when caching failed)
    sha256: str  # of the file as published (the source file)
    status: str  # 'verified' (manifest sha256), 'pinned' (Hub revision), 'first use' (locked now), 'trusted' (lock)
    downloaded: bool
    revision: Optional[str] = None  # the Hub commit (resolved for an unpinned file)
    url: Optional[str] = None
    state_dict: Optional[Dict[str, torch.Tensor]] = None  # the tensors, when already read

    def recorded(self) -> Dict[str, Any]:
        """The source keys the model's pretrained_cfg shows: the Hub file at its revision, or the Drive link."""
        if self.source.file is not None:
            rev = self.revision or self.source.file.revision
            return dict(hf_hub_id=self.source.file.repo_id + (f'@{rev}' if rev else ''),
                        hf_hub_filename=self.source.file.filename, url=None)
        return dict(hf_hub_id=None, hf_hub_filename=None, url=gdrive_url(self.source.gdrive_id or ''))


def fetch_pretrained(entry: WeightsEntry, manifest: WeightsManifest, cache_dir: Any = None,
                     check: Optional[FitCheck] = None, quiet: Optional[bool] = None) -> Fetched:
    """Find ``entry``'s weights in a cache, else download them from its sources in order
    (``entry.download_sources()``).

    Cached first, with no network: our published safetensors in the Hugging Face cache, else the tag's
    conversion in the osnet-zoo cache (``cache.py``) when it was converted from an acceptable file (the
    manifest's sha256 or Hub revision, else the lock file's), else the authors' pinned Hub file in the
    Hugging Face cache. Then, unless ``HF_HUB_OFFLINE`` is set, each source is downloaded in turn until one
    answers; a downloaded file is checked (HTML page, sha256 and size, lock file, safe read, ``check``),
    converted once into the osnet-zoo cache and trusted on first use where the manifest records no digest.

    Raises:
        WeightsUnavailableError: strict mode refuses every source, or none could provide the file.
        WeightsIntegrityError: a file fails a check (never a reason to try the next source).

    ``quiet``: no Drive progress bar (default: quiet unless stderr is a terminal).
    """
    if quiet is None:
        quiet = not sys.stderr.isatty()
    sources = entry.download_sources()
    if strict_mode():
        refused = [s for s in sources if not s.pinned]
        sources = [s for s in sources if s.pinned]
        if not sources:
            raise WeightsUnavailableError(strict_refusal(entry, refused))
    root = cache_root()
    tried: List[Tuple[WeightsSource, str]] = []
    for source in sources:
        found = _cached_source(entry, source, root, cache_dir, manifest, check, tried)
        if found is not None:
            return found
    why_not = hub_offline_reason()
    if why_not is None:
        tried = []
        for source in sources:
            try:
                return _download_source(entry, source, root, cache_dir, manifest, check, quiet)
            except _Missing as e:
                tried.append((source, str(e)))
    raise WeightsUnavailableError(_unavailable_message(entry.name, tried, entry, why_not, cache_dir))


def _hub_file_in_cache(source: WeightsSource, cache_dir: Any,
                       tried: List[Tuple[WeightsSource, str]]) -> Optional[Path]:
    """The source's Hub file from the local Hugging Face cache (no request), or None with the reason in ``tried``."""
    try:
        return fetch_hub_file(source.file, cache_dir, local_only=True)
    except _Missing as e:
        tried.append((source, str(e)))
        return None


def _cached_source(entry: WeightsEntry, source: WeightsSource, root: Path, cache_dir: Any,
                   manifest: WeightsManifest, check: Optional[FitCheck],
                   tried: List[Tuple[WeightsSource, str]]) -> Optional[Fetched]:
    if source.kind == 'osnet-zoo':
        path = _hub_file_in_cache(source, cache_dir, tried)
        if path is None:
            return None
        return Fetched(entry.name, source, path, check_file(path, source.file, entry.name, manifest.path),
                       'verified', downloaded=False)
    found = _converted(entry, source, root)
    if found is not None:
        return found
    if source.kind == 'hub':
        path = _hub_file_in_cache(source, cache_dir, tried)
        if path is None:
            return None
        digest = check_file(path, source.file, entry.name, manifest.path)
        return _cache_hub_file(entry, source, path, digest, root, check, downloaded=False)
    tried.append((source, f'not in the osnet-zoo cache ({root})'))
    return None


def _converted(entry: WeightsEntry, source: WeightsSource, root: Path) -> Optional[Fetched]:
    """The tag's conversion in the osnet-zoo cache, when it was converted from a file ``source`` accepts."""
    hit = cache.cached(root, entry.name)
    if hit is None or hit.source.get('kind') != source.kind:
        return None
    src = hit.source
    if source.file is not None and (src.get('repo_id'), src.get('filename')) != (source.file.repo_id,
                                                                                source.file.filename):
        return None
    if (source.kind == 'hub' and src.get('revision') != source.file.revision) or \
            (source.kind == 'gdrive' and src.get('gdrive_id') != source.gdrive_id):
        return None
    if source.sha256 is not None:
        status = 'verified'
        accepted = src.get('sha256') == source.sha256
    elif source.kind == 'hub':
        status, accepted = 'pinned', True
    else:
        record = cache.lock_record(root, entry.name)
        status = 'trusted'
        accepted = record is not None and record['sha256'] == src.get('sha256')
    if not accepted:
        return None
    hit.verify()
    return Fetched(entry.name, source, hit.weights, src['sha256'], status, downloaded=False,
                   revision=src.get('revision'), url=src.get('url'))


def _download_source(entry: WeightsEntry, source: WeightsSource, root: Path, cache_dir: Any,
                     manifest: WeightsManifest, check: Optional[FitCheck], quiet: bool) -> Fetched:
    """Download one source (see ``fetch_pretrained``) with the fetcher of its kind (``FETCHERS``). Raises
    _Missing when it cannot provide the file."""
    if source.file is not None:
        why_not = _hub_unreachable_reason()
        if why_not is not None:
            raise _Missing(why_not)
    return FETCHERS[source.kind](_Download(entry, source, root, cache_dir, manifest, check, quiet))


@dataclass(frozen=True)
class _Download:
    """One source of one tag to download, and what the download needs."""
    entry: WeightsEntry
    source: WeightsSource
    root: Path  # the osnet-zoo cache
    cache_dir: Any  # the Hugging Face cache
    manifest: WeightsManifest
    check: Optional[FitCheck]
    quiet: bool


def _fetch_published(job: _Download) -> Fetched:
    """Our safetensors on the Hub: already converted, read from the Hugging Face cache as they are."""
    path = fetch_hub_file(job.source.file, job.cache_dir)
    return Fetched(job.entry.name, job.source, path, check_file(path, job.source.file, job.entry.name,
                                                                job.manifest.path), 'verified', downloaded=True)


def _fetch_hub(job: _Download, folder: Path) -> Fetched:
    """The authors' Hub file at its recorded revision, converted into the osnet-zoo cache."""
    path = fetch_hub_file(job.source.file, job.cache_dir)
    digest = check_file(path, job.source.file, job.entry.name, job.manifest.path)
    return _cache_hub_file(job.entry, job.source, path, digest, job.root, job.check, downloaded=True, locked=True)


def _fetch_hub_unpinned(job: _Download, folder: Path) -> Fetched:
    """The authors' Hub file without a recorded revision: checked, trusted on first use, converted."""
    path, revision = _fetch_unpinned(job.source.file, job.manifest, job.cache_dir)
    url = hf_hub_url(job.source.file.repo_id, job.source.file.filename, revision=revision)
    digest, size, status, tensors = _accept(job.entry, job.source, path, url, job.root, job.check)
    return _store(job.entry, job.source, path, digest, size, status, tensors, job.root, url, revision)


def _fetch_gdrive(job: _Download, folder: Path) -> Fetched:
    """The authors' Drive file (or ``$OSNET_ZOO_GDRIVE_URL``'s mirror): downloaded beside its conversion,
    checked, converted; an unreachable host is remembered, so the next tag fails fast."""
    entry, source, name = job.entry, job.source, job.entry.name
    url = cache.gdrive_download_url(source.gdrive_id)
    host = urlsplit(url).netloc
    if _unreachable.get(host):  # one failed connection per host: this file's URL, not the first one's
        raise _Missing(f'{url}: not requested: {host} {_unreachable[host]} (found with an earlier file)')
    original = folder / cache.ORIGINALS / source.filename
    try:
        with atomic_path(original) as tmp:
            cache.download_url(url, tmp, quiet=job.quiet)
            digest, size, status, tensors = _accept(entry, source, tmp, url, job.root, job.check)
    except WeightsUnavailableError as e:
        if 'cannot be reached' in str(e):
            _unreachable[host] = str(e)
        raise _Missing(f'{url}: {e}') from None
    except WeightsIntegrityError as e:
        if isinstance(e, WeightsTrustError) or str(e).startswith(name):
            raise
        raise WeightsIntegrityError(f'{name}: {url}: {e}. {manual_fallback(entry)}') from None
    fetched = _store(entry, source, original, digest, size, status, tensors, job.root, url, None)
    if not cache.keep_originals():
        original.unlink(missing_ok=True)
    return fetched


def _converting(fetch: Callable[[_Download, Path], Fetched]) -> Callable[[_Download], Fetched]:
    """A fetcher whose file is converted into the osnet-zoo cache: it runs under the tag's lock (its folder),
    unless another process finished the conversion meanwhile."""
    def locked(job: _Download) -> Fetched:
        with cache.tag_lock(job.root, job.entry.name) as folder:
            found = _converted(job.entry, job.source, job.root)
            return found if found is not None else fetch(job, folder)
    return locked


# One fetcher per kind of source (manifest.WeightsSource.kind); a new kind is one function and one row.
FETCHERS: Dict[str, Callable[[_Download], Fetched]] = {
    'osnet-zoo': _fetch_published,
    'hub': _converting(_fetch_hub),
    'hub-unpinned': _converting(_fetch_hub_unpinned),
    'gdrive': _converting(_fetch_gdrive),
}


def _fetch_unpinned(file: HubFile, manifest: WeightsManifest, cache_dir: Any) -> Tuple[Path, Optional[str]]:
    """The authors' file without a recorded revision: at the manifest's most-pinned revision of that repo if
    the file is there, else at ``main``. Returns the path and the commit it resolved to."""
    pinned = manifest.most_pinned_revision(file.repo_id)
    for revision in [r for r in (pinned, 'main') if r]:
        _answers(_url(file.repo_id, file.filename, revision))
        try:
            with _hub_timeouts() as read:
                path = Path(hf_hub_download(file.repo_id, file.filename, revision=revision, cache_dir=cache_dir,
                                            library_name='osnet_zoo', etag_timeout=read))
        except (EntryNotFoundError, RevisionNotFoundError):
            continue  # not in that revision: try main
        except RepositoryNotFoundError as e:
            raise _Missing(f'not on the Hub ({type(e).__name__}: {_first_line(e)})') from e
        except (HfHubHTTPError, OSError) as e:
            raise _Missing(f'download failed ({type(e).__name__}: {_first_line(e)})') from e
        except _HUB_CLIENT_ERRORS as e:
            raise _Missing(f'download of {_url(file.repo_id, file.filename, revision)} failed '
                           f'({type(e).__name__}: {_first_line(e)})') from e
        commit = path.parent.name  # huggingface_hub's snapshots/<commit>/<filename>
        return path, commit if re.fullmatch(r'[0-9a-f]{40}', commit) else revision
    raise _Missing(f'not on the Hub at revision {pinned} nor at main')


def _accept(entry: WeightsEntry, source: WeightsSource, path: Path, url: str, root: Path,
            check: Optional[FitCheck]) -> Tuple[str, int, str, Dict[str, torch.Tensor]]:
    """Check a downloaded file before anything is recorded: an HTML page, the manifest's sha256 and size or
    the lock file's sha256, a safe read, and ``check``. Returns ``(sha256, size, status, tensors)``."""
    name = entry.name
    title = cache.html_title(path)
    if title is not None:
        raise WeightsIntegrityError(
            f'{name}: {url} sent an HTML page ("{title}") instead of the weights file: Google Drive does this '
            f'when the daily download quota is exceeded or the file cannot be downloaded; nothing was cached. '
            f'{manual_fallback(entry)}')
    digest, size = file_sha256(path), path.stat().st_size
    if source.sha256 is not None or source.size is not None:
        if (source.sha256 is not None and digest != source.sha256) or \
                (source.size is not None and size != source.size):
            raise WeightsIntegrityError(
                f'{name}: the file from {url} has sha256 {digest} ({size:,} bytes), not the manifest\'s '
                f'{source.sha256 or "(not recorded)"}'
                + (f' ({source.size:,} bytes)' if source.size is not None else '')
                + f': truncated or not the reference file, refused and not cached. {manual_fallback(entry)}')
        status = 'verified' if source.sha256 is not None else 'first use'
    else:
        status = 'first use'
    if status == 'first use':
        record = cache.lock_record(root, name)
        if record is not None:
            if record['sha256'] != digest:
                raise cache.trust_error(name, record, digest, url, root / cache.LOCK_FILE)
            status = 'trusted'
    try:
        tensors = unwrap_state_dict(read_checkpoint(path))
    except CheckpointError as e:
        raise WeightsIntegrityError(f'{name}: the file from {url} is not a readable checkpoint '
                                    f'({" ".join(str(e).split())[:300]}); nothing was cached. '
                                    f'{manual_fallback(entry)}') from None
    problem = check(entry, tensors) if check is not None else None
    if problem:
        raise WeightsIntegrityError(f'{name}: the file from {url} is not a checkpoint of {entry.architecture} '
                                    f'({problem}); nothing was cached. {manual_fallback(entry)}')
    return digest, size, status, tensors


def _store(entry: WeightsEntry, source: WeightsSource, path: Path, digest: str, size: int, status: str,
           tensors: Dict[str, torch.Tensor], root: Path, url: str, revision: Optional[str]) -> Fetched:
    """Record a first use in the lock file, keep the original, convert to the osnet-zoo cache."""
    name = entry.name
    if status == 'first use':
        record = dict(sha256=digest, size=size, url=url, revision=revision, source=source.kind,
                      filename=source.filename)
        if cache.record_first_use(root, name, record):
            _logger.warning('%s: no sha256 is recorded for %s in the weights manifest; trusting it on first use: '
                            'sha256 %s (%d bytes) is now locked in %s.', name, url, digest, size,
                            root / cache.LOCK_FILE)
    folder = root / name
    if source.kind != 'gdrive':
        cache.keep_original(folder, path, source.filename)
    meta = dict(kind=source.kind, sha256=digest, size=size, url=url, revision=revision, status=status,
                filename=source.filename, gdrive_id=source.gdrive_id,
                repo_id=source.file.repo_id if source.file is not None else None)
    stored = cache.store(root, name, tensors, meta, _timm_config(entry, tensors))
    return Fetched(name, source, stored.weights, digest, status, downloaded=True, revision=revision, url=url,
                   state_dict=tensors)


def _cache_hub_file(entry: WeightsEntry, source: WeightsSource, path: Path, digest: str, root: Path,
                    check: Optional[FitCheck], downloaded: bool, locked: bool = False) -> Fetched:
    """The authors' pinned Hub file, verified: converted once into the osnet-zoo cache so that no pickle is
    read twice. A cache that cannot be written only costs that: the verified file is loaded as before.
    ``locked``: the caller holds the tag's download lock."""
    url = hf_hub_url(source.file.repo_id, source.file.filename, revision=source.file.revision)
    status = 'verified' if source.sha256 else 'pinned'
    fetched = Fetched(entry.name, source, path, digest, status, downloaded=downloaded,
                      revision=source.file.revision, url=url)
    try:
        tensors = unwrap_state_dict(read_checkpoint(path))
    except CheckpointError:
        return fetched  # _read_verified reports it, naming the file and its digest
    problem = check(entry, tensors) if check is not None else None
    if problem:
        raise WeightsIntegrityError(f'{entry.name}: {source.describe()} ({path}) is not a checkpoint of '
                                    f'{entry.architecture}: {problem}')
    try:
        with contextlib.nullcontext() if locked else cache.tag_lock(root, entry.name):
            return _store(entry, source, path, digest, path.stat().st_size, status, tensors, root, url,
                          source.file.revision)
    except OSError as e:
        _logger.warning('%s: could not cache a safetensors copy in %s (%s); loading %s.', entry.name, root,
                        _first_line(e), path)
        fetched.state_dict = tensors
        return fetched


def _timm_config(entry: WeightsEntry, tensors: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """timm's config.json for a cache folder: the registry cfg of the tag, the file's class count."""
    cfg = timm.models.get_pretrained_cfg(entry.name)
    keep = ('tag', 'input_size', 'interpolation', 'crop_pct', 'crop_mode', 'mean', 'std', 'pool_size',
            'first_conv', 'classifier', 'license', 'description', 'paper_ids')
    pretrained = {k: v for k, v in (cfg.to_dict() if cfg is not None else {}).items() if k in keep}
    rows = classifier_rows(tensors)
    return dict(architecture=entry.architecture, num_classes=rows,
                pretrained_cfg=dict(pretrained, num_classes=rows))


# ---------------------------------------------------------------------------------------------------- resolving

def _source_of(cfg: Dict[str, Any]) -> str:
    # the same priority as timm's loader: explicit hf-hub / local-dir source, state_dict, file, hub id, url
    if cfg.get('source') in ('hf-hub', 'local-dir'):
        return cfg['source']
    for key, source in (('state_dict', 'state_dict'), ('file', 'file'), ('hf_hub_id', 'hf-hub'), ('url', 'url')):
        if cfg.get(key):
            return source
    return ''


def _registry_entry(cfg: Dict[str, Any], variant: str, manifest: WeightsManifest) -> Optional[WeightsEntry]:
    """The manifest entry when ``cfg`` still points where the registry tag points (no overlay moved it)."""
    tag = cfg.get('tag')
    entry = manifest.get(f'{variant}.{tag}') if tag else None
    registry = timm.models.get_pretrained_cfg(f'{variant}.{tag}') if tag else None
    if entry is None or registry is None:
        return None
    if (cfg.get('hf_hub_id'), cfg.get('hf_hub_filename'), cfg.get('url') or None) == \
            (registry.hf_hub_id, registry.hf_hub_filename, registry.url or None):
        return entry
    return None


def _candidates(cfg: Dict[str, Any], variant: str, manifest: WeightsManifest) -> List[HubFile]:
    """The Hub files of an explicit ``hf_hub_id`` (an overlay or ``hf-hub:`` name), each with the digest the
    manifest records for it where it knows the file."""
    repo_id, _, revision = cfg['hf_hub_id'].partition('@')
    filename = cfg.get('hf_hub_filename')
    out = []
    for fn in ([filename] if filename else _DEFAULT_HUB_FILES):
        known = manifest.find_file(repo_id, fn)
        if known is not None:
            loc = known[1]
            out.append(HubFile(repo_id, fn, revision or loc.revision, loc.sha256, loc.size, loc.kind))
        else:
            out.append(HubFile(repo_id, fn, revision or None, kind='other'))
    return out


def _read_verified(path: Path, loc: Optional[HubFile], digest: Optional[str], name: str,
                   manifest: WeightsManifest) -> Dict[str, Any]:
    try:
        return unwrap_state_dict(read_checkpoint(path), str(path))
    except CheckpointError as e:
        if loc is None:  # the user's own file: read_checkpoint's message names it
            raise
        raise WeightsIntegrityError(
            _integrity_message(name, path, loc, digest, path.stat().st_size, manifest.path,
                               problem=f'cannot be read ({e})')) from e


def describe_source(recorded: Optional[Dict[str, Any]]) -> Optional[str]:
    """Where loaded weights came from, for error messages: a file path or ``repo@revision/filename``."""
    if not recorded:
        return None
    if recorded.get('file'):
        return str(recorded['file'])
    if recorded.get('hf_hub_id'):
        return f"{recorded['hf_hub_id']}/{recorded.get('hf_hub_filename') or ''}".rstrip('/')
    return None


def resolve_pretrained(
        variant: str,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
        cache_dir: Optional[Union[str, os.PathLike]] = None,
        check: Optional[FitCheck] = None,
) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """Resolve the pretrained cfg as timm does, then fetch, verify and read the weights it points to.

    Returns ``(load_cfg, recorded)``: ``load_cfg`` goes to ``build_model_with_cfg`` as ``pretrained_cfg``
    and carries the verified tensors as its ``state_dict`` source, with ``num_classes`` set to the file's
    classifier size (so timm keeps the classifier exactly when the model's size matches it); ``recorded``
    holds the source keys that the model's ``pretrained_cfg`` should show afterwards (see
    ``forget_loaded_state_dict``). Sources timm reads safely itself (an in-memory state_dict, a url that is
    not a manifest Drive link, a local-dir) are left to timm: ``recorded`` is then None.

    Raises:
        WeightsUnavailableError: the tag has no pinned location (the message says how to load it), or no
            location could provide the file (offline, unreachable, not cached).
        WeightsIntegrityError: the file fails its size / sha256 check or cannot be read.
    """
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg, pretrained_cfg_overlay).to_dict()
    source = _source_of(cfg)
    name = f"{variant}.{cfg['tag']}" if cfg.get('tag') else variant
    if source not in ('hf-hub', 'file', 'url'):
        return cfg, None
    manifest = load_manifest(active_manifest_path())
    recorded = {k: cfg.get(k) for k in _SOURCE_KEYS}
    if source == 'file':
        path = Path(cfg['file']).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f'Pretrained weights for {name}: file not found: {path} '
                                          '(pretrained_cfg_overlay=dict(file=...) must name an existing file).')
        state_dict = _read_verified(path, None, None, name, manifest)
        _note_local_file(path, manifest.get(name))
    else:
        # a registry tag: its sources in order (entry.download_sources()), cached first
        entry = _registry_entry(cfg, variant, manifest)
        if entry is not None:
            fetched = fetch_pretrained(entry, manifest, cache_dir, check)
            state_dict = fetched.state_dict
            if state_dict is None:
                state_dict = _read_verified(fetched.path, fetched.source.file or HubFile('', fetched.source.filename),
                                            fetched.sha256, name, manifest)
            recorded.update(fetched.recorded())
            _logger.info('%s: loaded %s from %s (sha256 %s, %s)', name, fetched.source.describe(), fetched.path,
                         fetched.sha256, fetched.status)
        elif source == 'url':
            return cfg, None  # a url of the user's: timm's own loader
        else:
            path, loc, digest = _fetch_first(name, _candidates(cfg, variant, manifest), None, cache_dir, manifest)
            state_dict = _read_verified(path, loc, digest, name, manifest)
            recorded.update(hf_hub_id=loc.repo_id + (f'@{loc.revision}' if loc.revision else ''),
                            hf_hub_filename=loc.filename, url=None)
            _logger.info('%s: loaded %s (sha256 %s%s)', name, loc.describe(), digest,
                         ', verified' if loc.sha256 else ', not recorded in the manifest')
    load_cfg = {k: v for k, v in cfg.items() if k not in _SOURCE_KEYS}
    load_cfg['state_dict'] = state_dict
    load_cfg['num_classes'] = classifier_rows(state_dict)
    return load_cfg, recorded


def build_pretrained(build: Callable[..., Any], model_cls: type, variant: str, pretrained: bool,
                     check: Optional[FitCheck] = None, **kwargs: Any) -> Any:
    """``build(model_cls, variant, pretrained, **kwargs)`` (timm's ``build_model_with_cfg``) with the weights of
    ``pretrained=True`` fetched, verified and read here first (``resolve_pretrained``; ``check`` refuses a file
    that does not fit its manifest entry); a loading error names where the weights came from, and the loaded
    tensors are dropped from the model's ``pretrained_cfg`` afterwards."""
    recorded = None
    if pretrained:
        kwargs['pretrained_cfg'], recorded = resolve_pretrained(
            variant, kwargs.pop('pretrained_cfg', None), kwargs.pop('pretrained_cfg_overlay', None),
            cache_dir=kwargs.get('cache_dir'), check=check)
    try:
        model = build(model_cls, variant, pretrained, **kwargs)
    except CheckpointError as e:
        source = describe_source(recorded)
        if source is None:
            raise
        raise CheckpointError(f'Pretrained weights for {variant} from {source}: {e}') from e
    if recorded is not None:
        forget_loaded_state_dict(model, recorded)
    return model


def _note_local_file(path: Path, entry: Optional[WeightsEntry]) -> None:
    """A user's file is theirs to load; say whether it is the reference file of the tag it is loaded as."""
    digest = entry.upstream.get('sha256') if entry is not None else None
    if not digest:
        _logger.info('%s: loading the local file %s', entry.name if entry else 'weights', path)
        return
    actual = file_sha256(path)
    if actual == digest:
        _logger.info('%s: %s is the reference file (sha256 %s verified)', entry.name, path, digest)
    else:
        _logger.warning('%s: %s has sha256 %s, not the reference file\'s %s (%s): loading it as your own weights.',
                        entry.name, path, actual, digest, entry.upstream.get('filename'))


def forget_loaded_state_dict(model: Any, recorded: Dict[str, Any]) -> None:
    """Drop the tensors from ``model.pretrained_cfg`` (and its ``default_cfg`` alias) after loading and put
    back where they came from, so the cfg stays small and serialisable."""
    cfgs = {id(c): c for c in (getattr(model, 'pretrained_cfg', None), getattr(model, 'default_cfg', None))
            if isinstance(c, dict)}
    for cfg in cfgs.values():
        cfg.pop('state_dict', None)
        for key, value in recorded.items():
            if value is None:
                cfg.pop(key, None)
            else:
                cfg[key] = value
