"""Pretrained weights through timm's own pretrained path, with sha256 checks and no unpickling.

timm resolves *where* the weights are (tag, ``pretrained_cfg_overlay``, ``hf-hub:`` names); this module
fetches the file with huggingface_hub (honouring ``cache_dir``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE``),
checks its size and sha256 against the weights manifest *before* reading it, reads it with
``read_checkpoint`` (safetensors, or ``torch.load(weights_only=True)`` with a numpy-scalar allowlist) and
hands the tensors to timm's loader, which maps them with ``checkpoint_filter_fn`` (strict: every backbone
key, every shape) and adapts the classifier and ``in_chans`` as for any timm model.

A registry tag loads only from a pinned location (``WeightsEntry.locations``): our published safetensors,
then the authors' file at its recorded revision. A tag without one (Google Drive only, or on the authors'
repo without a recorded revision) raises ``WeightsUnavailableError`` with the link, the file name, the
sha256 where known and the one line that loads the downloaded file. The cache is looked at first; the
network is tried only when nothing is cached, and a Hub that cannot be reached is detected with one
request (no retries) and remembered for the process.

This module imports nothing from ``osnet_zoo.models``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import timm
from huggingface_hub import constants as hf_constants
from huggingface_hub import get_session, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
)
from timm.models import resolve_pretrained_cfg

from .io import CheckpointError, check_regular_file, file_sha256, read_checkpoint, unwrap_state_dict
from .manifest import HubFile, WeightsEntry, WeightsManifest, active_manifest_path, load_manifest

__all__ = ['PretrainedWeightsError', 'WeightsIntegrityError', 'WeightsUnavailableError', 'fetch_hub_file',
           'check_file', 'resolve_pretrained', 'forget_loaded_state_dict', 'hub_offline_reason', 'hf_cache_dir',
           'manual_download_message', 'describe_source']

_logger = logging.getLogger(__name__)

# what timm tries for a Hub repo without hf_hub_filename (its HF_SAFE_WEIGHTS_NAME, then HF_WEIGHTS_NAME)
_DEFAULT_HUB_FILES = ('model.safetensors', 'pytorch_model.bin')
_SOURCE_KEYS = ('source', 'file', 'url', 'hf_hub_id', 'hf_hub_filename')
_PROBE_TIMEOUT_S = 5.0
# why the Hub could not be reached, once a probe failed in this process (None: not known to be unreachable)
_unreachable: Dict[str, str] = {}


class PretrainedWeightsError(CheckpointError):
    """Pretrained weights that cannot be loaded: unavailable, or failing their integrity check."""


class WeightsIntegrityError(PretrainedWeightsError):
    """A weights file whose size or sha256 differs from the manifest, or that cannot be read."""


class WeightsUnavailableError(PretrainedWeightsError):
    """No location of the weights could provide the file (offline cache miss, no pinned location, no network)."""


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
            get_session().head(endpoint, timeout=_PROBE_TIMEOUT_S)
            _unreachable[endpoint] = ''
        except Exception as e:  # httpx raises its own connect/timeout/proxy error types
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
    try:
        return Path(hf_hub_download(
            location.repo_id, location.filename, revision=location.revision, cache_dir=cache_dir,
            local_files_only=local_only, library_name='osnet_zoo'))
    except LocalEntryNotFoundError as e:
        raise _Missing(f'not in the Hugging Face cache ({hf_cache_dir(cache_dir)})') from e
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise _Missing(f'not on the Hub ({type(e).__name__}: {_first_line(e)})') from e
    except (HfHubHTTPError, OSError) as e:
        raise _Missing(f'download failed ({type(e).__name__}: {_first_line(e)})') from e


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


def _unavailable_message(name: str, tried: List[Tuple[HubFile, str]], entry: Optional[WeightsEntry],
                         why_not: Optional[str], cache_dir: Any) -> str:
    if why_not is not None:
        lines = [f'Pretrained weights for {name} are not in the Hugging Face cache ({hf_cache_dir(cache_dir)}) '
                 f'and cannot be downloaded: {why_not}.']
    else:
        lines = [f'Pretrained weights for {name} are not available:']
    for loc, reason in tried:
        size = f', {loc.size:,} bytes' if loc.size is not None else ''
        lines.append(f'  - {loc.describe()}: {reason}; expected sha256 {loc.sha256 or "not recorded"}{size}, '
                     'actual: no file')
    if why_not is not None and why_not.startswith('HF_HUB_OFFLINE'):
        todo = 'unset HF_HUB_OFFLINE and load once with network access so that the file is cached'
    elif why_not is not None and 'cannot be reached' in why_not:
        todo = ('check the network or proxy (HF_ENDPOINT, HTTPS_PROXY) and load again; to use the cache only, '
                'set HF_HUB_OFFLINE=1')
    else:
        todo = 'load again with network access'
    lines.append(f'What to do: {todo}; or copy the file here and load it with timm.create_model({name!r}, '
                 'pretrained=True, pretrained_cfg_overlay=dict(file=PATH)).')
    if entry is not None and entry.gdrive_url:
        lines.append(f'The reference file is also on Google Drive: {entry.gdrive_url}')
    return '\n'.join(lines)


def manual_download_message(entry: WeightsEntry) -> str:
    """Why a tag without a pinned location is not fetched, and the exact steps that load it."""
    up = entry.upstream
    fname = up.get('filename') or f'{entry.name}.pth'
    digest = up.get('sha256')
    if entry.load_source == 'hub-unpinned':
        where = (f"on the authors' Hub repo {up['hf_hub_id']} (file {fname}), but no revision or sha256 of it is "
                 'recorded, and osnet-zoo never loads weights it cannot pin')
        get = f'hf download {up["hf_hub_id"]} {fname} --local-dir .'
        if entry.gdrive_url:
            get += f'   (or from Google Drive: {entry.gdrive_url})'
    else:
        where = ('on Google Drive only; osnet-zoo does not download from Google Drive (its downloads cannot be '
                 'pinned to a revision and need an interactive confirmation for large files)')
        get = f'{entry.gdrive_url}   (save it as {fname})'
    check = (f'sha256sum {fname}   # must print {digest}' if digest else
             f'sha256sum {fname}   # no digest is recorded for this file: compare with a source you trust')
    size = f' ({up["size"]:,} bytes)' if up.get('size') else ''
    return (
        f'Pretrained weights for {entry.name} are {where}.\n'
        f'  1. download: {get}{size}\n'
        f'  2. check:    {check}\n'
        f"  3. load:     timm.create_model('{entry.name}', pretrained=True, "
        f"pretrained_cfg_overlay=dict(file='{fname}'))\n"
        'A maintainer who holds the file records its digest with `python -m osnet_zoo.weights verify --record '
        f'{fname}` (and publishes it with `python -m osnet_zoo.weights mirror DIR`); see docs/weights.md.')


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


def _classifier_rows(state_dict: Dict[str, Any]) -> int:
    weight = state_dict.get('classifier.weight')
    return int(weight.shape[0]) if weight is not None else 0


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
        # a registry tag: the active manifest's pinned locations, nothing else
        entry = _registry_entry(cfg, variant, manifest)
        if entry is not None:
            candidates = entry.locations()
            if not candidates:
                raise WeightsUnavailableError(manual_download_message(entry))
        elif source == 'url':
            return cfg, None  # a url of the user's: timm's own loader
        else:
            candidates = _candidates(cfg, variant, manifest)
        path, loc, digest = _fetch_first(name, candidates, entry, cache_dir, manifest)
        state_dict = _read_verified(path, loc, digest, name, manifest)
        recorded.update(hf_hub_id=loc.repo_id + (f'@{loc.revision}' if loc.revision else ''),
                        hf_hub_filename=loc.filename, url=None)
        _logger.info('%s: loaded %s (sha256 %s%s)', name, loc.describe(), digest,
                     ', verified' if loc.sha256 else ', not recorded in the manifest')
    load_cfg = {k: v for k, v in cfg.items() if k not in _SOURCE_KEYS}
    load_cfg['state_dict'] = state_dict
    load_cfg['num_classes'] = _classifier_rows(state_dict)
    return load_cfg, recorded


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
