"""The osnet-zoo weights cache: downloaded reference files converted once to safetensors, and the lock file.

Layout of ``$OSNET_ZOO_CACHE`` (default ``~/.cache/osnet_zoo``)::

    weights.lock.json             trust on first use: sha256, size, URL, revision and date of each file
                                  whose digest the manifest does not record
    ARCH.TAG/model.safetensors    the source file's tensors, as they are (bit-identical, checked)
    ARCH.TAG/config.json          timm's config (``timm.create_model('local-dir:ARCH.TAG', pretrained=True)``)
    ARCH.TAG/source.json          what it was converted from (written last: its presence marks a complete entry)
    ARCH.TAG/original/FILE        the downloaded file, for ``weights mirror`` (dropped with
                                  OSNET_ZOO_KEEP_ORIGINALS=0)
    onnx/                         the onnxruntime backend's checked ONNX exports (osnet_zoo.inference.onnx_runtime)

Every file is written through the package's atomic writer; a tag is downloaded under an exclusive lock
(``ARCH.TAG/.download.flock``), which also clears what a killed process left (temporary files). A loaded
cache entry is checked against the sha256 its ``source.json`` records, so damaged bytes are refused here too.
This module imports nothing from ``osnet_zoo.models``.
"""
from __future__ import annotations

import fcntl
import functools
import inspect
import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

import requests
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from ..files import atomic_path, atomic_save_safetensors, atomic_write_json
from .io import CheckpointError, file_sha256

__all__ = ['CACHE_ENV', 'STRICT_ENV', 'GDRIVE_ENV', 'KEEP_ORIGINALS_ENV', 'LOCK_FILE', 'PretrainedWeightsError',
           'WeightsIntegrityError', 'WeightsUnavailableError', 'WeightsTrustError', 'cache_root', 'strict_mode',
           'network_timeouts', 'CONNECT_TIMEOUT_ENV', 'READ_TIMEOUT_ENV', 'MAX_REDIRECTS',
           'keep_originals', 'gdrive_download_url', 'read_lock', 'lock_record', 'record_first_use', 'CachedWeights',
           'cached', 'store', 'tag_lock', 'html_title', 'download_url', 'cached_originals']

CACHE_ENV = 'OSNET_ZOO_CACHE'
STRICT_ENV = 'OSNET_ZOO_STRICT_WEIGHTS'
GDRIVE_ENV = 'OSNET_ZOO_GDRIVE_URL'
KEEP_ORIGINALS_ENV = 'OSNET_ZOO_KEEP_ORIGINALS'
LOCK_FILE = 'weights.lock.json'
SOURCE_FILE = 'source.json'
WEIGHTS_FILE = 'model.safetensors'
CONFIG_FILE = 'config.json'
ORIGINALS = 'original'
_GDRIVE_TEMPLATE = 'https://drive.google.com/uc?id={id}'
_TRUE = ('1', 'on', 'yes', 'true')
# connect / read (between-bytes) timeouts of every network request, in seconds: an unreachable host fails in
# seconds, one that accepts the connection and never answers within the read timeout; settable (docs/weights.md)
CONNECT_TIMEOUT_ENV = 'OSNET_ZOO_CONNECT_TIMEOUT'
READ_TIMEOUT_ENV = 'OSNET_ZOO_READ_TIMEOUT'
DOWNLOAD_TIMEOUT_S = (5.0, 60.0)
MAX_REDIRECTS = requests.models.DEFAULT_REDIRECT_LIMIT  # a Drive redirect loop ends after these (requests' limit)
# Google's hosts: only their links need gdown (Drive's confirmation page for large files); any other URL (a
# mirror given by $OSNET_ZOO_GDRIVE_URL, the tests' stand-in) is a plain HTTP GET
_DRIVE_HOSTS = ('drive.google.com', 'drive.usercontent.google.com', 'docs.google.com')
_CHUNK = 1 << 20


class PretrainedWeightsError(CheckpointError):
    """Pretrained weights that cannot be loaded: unavailable, or failing their integrity check."""


class WeightsIntegrityError(PretrainedWeightsError):
    """A weights file whose size or sha256 differs from the manifest, or that cannot be read."""


class WeightsUnavailableError(PretrainedWeightsError):
    """No location of the weights could provide the file (offline cache miss, no pinned location, no network)."""


class WeightsTrustError(WeightsIntegrityError):
    """A file whose sha256 differs from the one trusted on first use (the cache's lock file)."""


def cache_root() -> Path:
    """``$OSNET_ZOO_CACHE``, else ``~/.cache/osnet_zoo``."""
    return Path(os.environ.get(CACHE_ENV) or '~/.cache/osnet_zoo').expanduser()


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None or not value.strip() else value.strip().lower() in _TRUE


def strict_mode() -> bool:
    """``OSNET_ZOO_STRICT_WEIGHTS=1``: only sources the manifest pins (no trust on first use)."""
    return _flag(STRICT_ENV, False)


def keep_originals() -> bool:
    """Keep each downloaded file beside its conversion (for ``weights mirror``); ``OSNET_ZOO_KEEP_ORIGINALS=0``
    drops it."""
    return _flag(KEEP_ORIGINALS_ENV, True)


def network_timeouts() -> Tuple[float, float]:
    """(connect, read) timeouts in seconds of every download: ``$OSNET_ZOO_CONNECT_TIMEOUT`` and
    ``$OSNET_ZOO_READ_TIMEOUT``, else 5 and 60. A value that is not a positive number is a ValueError naming
    the variable."""
    values = []
    for name, default in zip((CONNECT_TIMEOUT_ENV, READ_TIMEOUT_ENV), DOWNLOAD_TIMEOUT_S):
        text = os.environ.get(name, '').strip()
        try:
            value = float(text) if text else default
        except ValueError:
            value = float('nan')
        if not 0 < value < float('inf'):
            raise ValueError(f'{name}={text!r}: expected a number of seconds above 0 (default {default:g}).')
        values.append(value)
    return values[0], values[1]


def gdrive_download_url(gdrive_id: str) -> str:
    """The URL a Drive file is downloaded from: ``$OSNET_ZOO_GDRIVE_URL`` (a template with ``{id}``) or Drive's."""
    template = os.environ.get(GDRIVE_ENV) or _GDRIVE_TEMPLATE
    example = 'e.g. http://127.0.0.1:8000/{id}'
    if '{id}' not in template:
        raise ValueError(f'{GDRIVE_ENV}={template!r} must contain {{id}}, {example}')
    url = template.replace('{id}', gdrive_id)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (a port that is not a number raises here)
    except ValueError as e:
        raise ValueError(f'{GDRIVE_ENV}={template!r} is not a valid URL ({e}), {example}') from None
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        raise ValueError(f'{GDRIVE_ENV}={template!r} is not an http(s) URL with a host, {example}')
    return url


@contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'a') as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------------- lock file

def read_lock(root: Path) -> Dict[str, Any]:
    """The lock file's records, ``name -> {sha256, size, url, revision, source, date}`` (empty when absent).

    Raises:
        WeightsIntegrityError: the lock file is not the JSON this module writes.
    """
    path = root / LOCK_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
        tags = data['tags']
        if not isinstance(tags, dict) or not all(re.fullmatch(r'[0-9a-f]{64}', str(r.get('sha256')))
                                                 for r in tags.values()):
            raise ValueError('each record needs a 64-hex sha256')
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise WeightsIntegrityError(f'The weights lock file {path} is not readable ({type(e).__name__}: {e}); '
                                    'restore it, or delete it to trust the files again on first use.') from None
    return tags


def lock_record(root: Path, name: str) -> Optional[Dict[str, Any]]:
    """The lock file's record of ``name``, or None."""
    return read_lock(root).get(name)


def record_first_use(root: Path, name: str, record: Dict[str, Any]) -> bool:
    """Record ``name``'s first trusted file in the lock file (atomically, under a lock). Returns False when the
    same digest was already recorded.

    Raises:
        WeightsTrustError: another digest is recorded for ``name`` (naming both and the lock file).
    """
    path = root / LOCK_FILE
    with _flock(root / '.lock.flock'):
        tags = read_lock(root)
        known = tags.get(name)
        if known is not None:
            if known['sha256'] != record['sha256']:
                raise trust_error(name, known, record['sha256'], record.get('url'), path)
            return False
        tags[name] = dict(record, date=datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'))
        atomic_write_json(path, {
            'about': 'osnet-zoo trust on first use: the sha256 of each downloaded weights file whose digest the '
                     'weights manifest does not record. A later file with another digest is refused.',
            'tags': dict(sorted(tags.items()))})
    return True


def trust_error(name: str, known: Dict[str, Any], actual: str, url: Optional[str], lock: Path) -> WeightsTrustError:
    """The one-line refusal of a file whose digest differs from the one trusted on first use."""
    return WeightsTrustError(
        f'{name}: the file from {url} has sha256 {actual}, but {known["sha256"]} was trusted on first use '
        f'({known.get("date", "?")}, from {known.get("url")}) and is recorded in {lock}: refused. If the authors '
        'replaced the file on purpose, delete the entry from that lock file and load again.')


# ---------------------------------------------------------------------------------------------------- converted

@dataclass
class CachedWeights:
    """A complete cache entry: ``weights`` (model.safetensors) and what it was converted from (``source``)."""
    folder: Path
    weights: Path
    source: Dict[str, Any]

    @property
    def original(self) -> Optional[Path]:
        """The kept downloaded file, if it is still there."""
        name = self.source.get('filename')
        path = self.folder / ORIGINALS / name if name else None
        return path if path is not None and path.is_file() else None

    def verify(self) -> str:
        """Re-hash model.safetensors against ``source.json``; returns the sha256.

        Raises:
            WeightsIntegrityError: the file was changed or damaged since it was written.
        """
        actual = file_sha256(self.weights)
        if actual != self.source.get('weights_sha256'):
            raise WeightsIntegrityError(
                f'{self.source.get("name")}: the cached {self.weights} has sha256 {actual}, not the '
                f'{self.source.get("weights_sha256")} written when it was converted ({self.folder / SOURCE_FILE}): '
                f'damaged. Delete the folder {self.folder} and load again to download it afresh.')
        return actual


def cached(root: Path, name: str) -> Optional[CachedWeights]:
    """The complete cache entry of ``name`` (``source.json`` and ``model.safetensors``), or None."""
    folder = root / name
    meta, weights = folder / SOURCE_FILE, folder / WEIGHTS_FILE
    if not (meta.is_file() and weights.is_file()):
        return None
    try:
        source = json.loads(meta.read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None  # not a complete entry: downloaded again, which rewrites it
    return CachedWeights(folder, weights, source) if isinstance(source, dict) else None


@contextmanager
def tag_lock(root: Path, name: str) -> Iterator[Path]:
    """Hold ``name``'s download lock; clears what a killed download left (temporary files). Yields the folder."""
    folder = root / name
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f'{name}: the osnet-zoo cache entry {folder} is a file, not a folder (the cache '
                                 'was edited): delete it and load again.')
    with _flock(folder / '.download.flock'):
        for leftover in list(folder.glob('.*.tmp*')) + list((folder / ORIGINALS).glob('.*.tmp*')):
            leftover.unlink(missing_ok=True)
        yield folder


def store(root: Path, name: str, tensors: Dict[str, torch.Tensor], source: Dict[str, Any],
          config: Dict[str, Any]) -> CachedWeights:
    """Write ``tensors`` as ``name``/model.safetensors, check them bit-identical after reading back, write
    config.json, and last source.json (with the weights' sha256). Call under ``tag_lock``."""
    folder = root / name
    weights = folder / WEIGHTS_FILE
    (folder / SOURCE_FILE).unlink(missing_ok=True)  # an entry being replaced is incomplete until the end
    atomic_save_safetensors(tensors, weights, metadata={'format': 'pt', 'source_sha256': source['sha256']})
    written = load_file(str(weights))
    differ = sorted(k for k in tensors if k not in written or not torch.equal(written[k], tensors[k]))
    if differ or set(written) != set(tensors):
        weights.unlink(missing_ok=True)
        raise WeightsIntegrityError(f'{name}: {weights} does not read back bit-identical to the source tensors '
                                    f'({(differ or sorted(set(written) ^ set(tensors)))[:5]}): not cached.')
    atomic_write_json(folder / CONFIG_FILE, config)
    source = dict(source, name=name, weights_sha256=file_sha256(weights), weights_size=weights.stat().st_size,
                  converted=datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'))
    atomic_write_json(folder / SOURCE_FILE, source)
    return CachedWeights(folder, weights, source)


def keep_original(folder: Path, path: Path, filename: str) -> Optional[Path]:
    """Copy a downloaded file into ``folder/original`` (atomically) when originals are kept."""
    if not keep_originals():
        return None
    dest = folder / ORIGINALS / filename
    if dest.resolve() != path.resolve():
        with atomic_path(dest) as tmp:
            shutil.copyfile(path, tmp)
    return dest


def cached_originals(root: Path) -> List[Path]:
    """Every kept downloaded file of the cache's complete entries (what ``weights mirror`` publishes)."""
    out = []
    for meta in sorted(root.glob(f'*/{SOURCE_FILE}')):
        entry = cached(root, meta.parent.name)
        if entry is not None and entry.original is not None:
            out.append(entry.original)
    return out


# ---------------------------------------------------------------------------------------------------- download

def html_title(path: Path) -> Optional[str]:
    """When ``path`` holds an HTML page (what Drive sends for a quota or 'cannot download' error) instead of a
    file: its title or first words; else None."""
    with open(path, 'rb') as f:
        head = f.read(4096)
    start = head.lstrip()[:64].lower()
    if not (start.startswith(b'<!doctype html') or start.startswith(b'<html') or b'<head' in start):
        return None
    text = head.decode('utf-8', 'replace')
    found = re.search(r'<title[^>]*>(.*?)</title>', text, re.S | re.I)
    words = found.group(1) if found else re.sub(r'<[^>]+>', ' ', text)
    return ' '.join(words.split())[:120] or 'an HTML page'


def download_url(url: str, dest: Path, quiet: bool = True) -> None:
    """Download ``url`` into ``dest``: a Google Drive link through gdown (Drive's confirmation page), any other
    URL with a plain GET (timeouts, the HTTP status and the announced length checked).

    Raises:
        WeightsUnavailableError: the host cannot be reached or answers with an HTTP error.
        WeightsIntegrityError: the body ended early (truncated), or Drive refused (quota, no access).
    """
    timeouts = network_timeouts()
    try:
        if (urlsplit(url).hostname or '') in _DRIVE_HOSTS:
            _download_drive(url, dest, quiet, timeouts)
        else:
            _download_plain(url, dest, quiet, timeouts)
    except _DriveRefused as e:  # Drive's own error page: quota exceeded, no access
        raise WeightsIntegrityError(f'Drive refused the file ({" ".join(str(e).split())[:300]})') from None
    except _IncompleteDownload as e:
        raise WeightsIntegrityError(f'the download is incomplete ({" ".join(str(e).split())[:200]})') from None
    except requests.HTTPError as e:
        raise WeightsUnavailableError(f'HTTP {e.response.status_code if e.response is not None else "error"}') \
            from None
    except requests.TooManyRedirects:
        raise WeightsUnavailableError(f'redirected more than {MAX_REDIRECTS} times (a redirect loop?): '
                                      'not downloaded') from None
    except requests.Timeout as e:
        raise WeightsUnavailableError(f'cannot be reached: no answer within the timeouts ({timeouts[0]:g} s to '
                                      f'connect, {timeouts[1]:g} s to read; {CONNECT_TIMEOUT_ENV}, {READ_TIMEOUT_ENV}'
                                      f') ({type(e).__name__})') from None
    except requests.RequestException as e:
        raise WeightsUnavailableError(f'cannot be reached ({connection_failure(e)})') from None


def connection_failure(e: requests.RequestException) -> str:
    """Why a request failed, without its URL (the caller names the URL, and a host's failure is reported for
    every file asked of it): urllib3's reason where requests wraps one (refused, timed out, name not resolved)."""
    inner = e.args[0] if e.args else None
    reason = getattr(inner, 'reason', None) or inner or e
    return f'{type(e).__name__}: {" ".join(str(reason).split())[:200]}'


class _IncompleteDownload(Exception):
    """The body ended before the length the server announced."""


class _DriveRefused(Exception):
    """Drive answered with its own error page (quota exceeded, no access) instead of the file."""


@functools.lru_cache(maxsize=None)
def _gdown() -> Tuple[Any, frozenset, Optional[type], type]:
    """gdown, imported on the first Drive download only (`import osnet_zoo` stays light, tests/test_structure.py),
    with what the installed version offers: gdown 5.x (boxmot 25.0.0 pins gdown<6) has no timeout / retries
    options and no DownloadError, gdown >= 6 has all three. We declare gdown>=5.1 and adapt.
    Returns (the module, its download options, its incomplete-body error or None, its refusal error)."""
    import gdown
    import gdown.exceptions
    return (gdown, frozenset(inspect.signature(gdown.download).parameters),
            getattr(gdown.exceptions, 'DownloadError', None), gdown.exceptions.FileURLRetrievalError)


def _download_plain(url: str, dest: Path, quiet: bool, timeouts: Tuple[float, float]) -> None:
    """GET ``url`` into ``dest`` (a progress bar unless ``quiet``), refusing an HTTP error status and a body
    shorter than its Content-Length."""
    with requests.get(url, stream=True, timeout=timeouts) as response:
        response.raise_for_status()
        # with a content encoding, Content-Length counts the encoded bytes, not the ones written
        announced = None if response.headers.get('Content-Encoding') else response.headers.get('Content-Length')
        written = 0
        try:
            with open(dest, 'wb') as f, tqdm(total=int(announced) if announced and announced.isdigit() else None,
                                             unit='B', unit_scale=True, disable=quiet, leave=False) as bar:
                for chunk in response.iter_content(_CHUNK):
                    f.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as e:
            raise _IncompleteDownload(f'{written} bytes, then {type(e).__name__}') from None
    if announced is not None and announced.isdigit() and written != int(announced):
        raise _IncompleteDownload(f'{written} of the {announced} bytes announced')


def _download_drive(url: str, dest: Path, quiet: bool, timeouts: Tuple[float, float]) -> None:
    """gdown's download of a Drive link into ``dest``, with the options the installed gdown has (gdown 5.x: no
    timeout, so a host that stops answering mid-way is waited for)."""
    gdown, offered, incomplete, refused = _gdown()
    options = {k: v for k, v in (('timeout', timeouts), ('retries', 0)) if k in offered}
    try:
        with open(dest, 'wb') as f:
            gdown.download(url, output=f, quiet=quiet, **options)
    except refused as e:
        raise _DriveRefused(str(e)) from None
    except requests.exceptions.ChunkedEncodingError as e:  # gdown 5.x: the body ended early
        raise _IncompleteDownload(f'{type(e).__name__}: {e}') from None
    except Exception as e:
        if incomplete is not None and isinstance(e, incomplete):  # gdown >= 6: incomplete body
            raise _IncompleteDownload(str(e)) from None
        raise

