"""Pretrained weights through timm's own pretrained path, with sha256 checks and no unpickling.

timm resolves *where* the weights are (tag, ``pretrained_cfg_overlay``, ``hf-hub:`` names); this module
fetches the file with huggingface_hub (honouring ``cache_dir``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE``),
checks its size and sha256 against the weights manifest *before* reading it, reads it with
``read_checkpoint`` (safetensors, or ``torch.load(weights_only=True)`` with a numpy-scalar allowlist) and
hands the tensors to timm's loader, which maps them with ``checkpoint_filter_fn`` and adapts the classifier
and ``in_chans`` as for any timm model.

For a registry tag the manifest gives the order to try: our published safetensors, the reference file
on the Hub (``kaiyangzhou/osnet``), then our repo. A file that is missing moves on to the next; a file
that is present but fails its digest is an error, never skipped.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from .io import CheckpointError, file_sha256, read_checkpoint
from .manifest import HubFile, WeightsEntry, WeightsManifest, active_manifest_path, load_manifest

__all__ = ['PretrainedWeightsError', 'WeightsIntegrityError', 'WeightsUnavailableError', 'fetch_hub_file',
           'check_file', 'resolve_pretrained', 'forget_loaded_state_dict', 'pretrained_cfgs', 'hub_is_offline',
           'hf_cache_dir']

_logger = logging.getLogger(__name__)

# what timm tries for a Hub repo without hf_hub_filename (its HF_SAFE_WEIGHTS_NAME, then HF_WEIGHTS_NAME)
_DEFAULT_HUB_FILES = ('model.safetensors', 'pytorch_model.bin')
_SOURCE_KEYS = ('source', 'file', 'url', 'hf_hub_id', 'hf_hub_filename')


class PretrainedWeightsError(CheckpointError):
    """Pretrained weights that cannot be loaded: unavailable, or failing their integrity check."""


class WeightsIntegrityError(PretrainedWeightsError):
    """A weights file whose size or sha256 differs from the manifest, or that cannot be read."""


class WeightsUnavailableError(PretrainedWeightsError):
    """No location of the weights could provide the file (offline cache miss, not published, no network)."""


def hub_is_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub read it at import, or as set in the environment since."""
    from huggingface_hub import constants
    value = os.environ.get('HF_HUB_OFFLINE', '').strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or value in ('1', 'ON', 'YES', 'TRUE')


def hf_cache_dir(cache_dir: Optional[Union[str, os.PathLike]]) -> str:
    if cache_dir is not None:
        return str(cache_dir)
    from huggingface_hub import constants
    return os.environ.get('HF_HUB_CACHE') or constants.HF_HUB_CACHE


# ---------------------------------------------------------------------------------------------------- checks

def check_file(path: Union[str, os.PathLike], expected: HubFile, name: str, manifest_path: Optional[Path]) -> str:
    """Check size and sha256 of ``path`` against ``expected`` (from the manifest) and return the sha256.

    Raises:
        WeightsIntegrityError: naming the file, the expected and actual digest, and what to do.
    """
    path = Path(path)
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


def fetch_hub_file(location: HubFile, cache_dir: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Download ``location`` into the Hugging Face cache, or find it there offline, and return its path.

    Raises:
        _Missing: the file is not in the cache and cannot be downloaded (the reason is in the message).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )
    offline = hub_is_offline()
    try:
        return Path(hf_hub_download(
            location.repo_id, location.filename, revision=location.revision, cache_dir=cache_dir,
            local_files_only=offline, library_name='osnet_zoo'))
    except LocalEntryNotFoundError as e:
        where = hf_cache_dir(cache_dir)
        if offline:
            raise _Missing(f'not in the Hugging Face cache ({where}) and the Hub is offline (HF_HUB_OFFLINE=1)') from e
        raise _Missing(f'not in the Hugging Face cache ({where}) and the Hub cannot be reached '
                       f'({_first_line(e)})') from e
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise _Missing(f'not on the Hub ({type(e).__name__}: {_first_line(e)})') from e
    except (HfHubHTTPError, OSError) as e:
        raise _Missing(f'download failed ({type(e).__name__}: {_first_line(e)})') from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _unavailable_message(name: str, tried: List[Tuple[HubFile, str]], entry: Optional[WeightsEntry]) -> str:
    lines = [f'Pretrained weights for {name} are not available:']
    for loc, reason in tried:
        digest = loc.sha256 or 'not recorded'
        lines.append(f'  - {loc.describe()}: {reason}; expected sha256 {digest}, actual: no file')
    lines.append('What to do: load once with network access (unset HF_HUB_OFFLINE) so the file is cached, or load a '
                 "local copy with timm.create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=PATH)).")
    if entry is not None and not entry.published and entry.upstream_file is None:
        up = entry.upstream
        where = f"Google Drive id {up['gdrive_id']}" if up.get('gdrive_id') else 'no location known to the manifest'
        lines.append(
            f'{entry.name} is not published on the Hub yet; the reference checkpoint is at {where}. Download it, '
            f'convert it with `python -m osnet_zoo.weights convert FILE --arch {entry.architecture} --tag {entry.tag} '
            '--out DIR`, and load DIR/model.safetensors with pretrained_cfg_overlay=dict(file=...).')
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------------- resolving

def _source_of(cfg: Dict[str, Any]) -> str:
    # the same priority as timm's loader: explicit hf-hub / local-dir source, state_dict, file, hub id, url
    if cfg.get('source') in ('hf-hub', 'local-dir'):
        return cfg['source']
    for key, source in (('state_dict', 'state_dict'), ('file', 'file'), ('hf_hub_id', 'hf-hub'), ('url', 'url')):
        if cfg.get(key):
            return source
    return ''


def _candidates(cfg: Dict[str, Any], variant: str,
                manifest: WeightsManifest) -> Tuple[List[HubFile], Optional[WeightsEntry]]:
    """The Hub files to try, in order, each with the digest the manifest records for it."""
    import timm

    repo_id, _, revision = cfg['hf_hub_id'].partition('@')
    filename = cfg.get('hf_hub_filename')
    tag = cfg.get('tag')
    entry = manifest.get(f'{variant}.{tag}') if tag else None
    registry = timm.models.get_pretrained_cfg(f'{variant}.{tag}') if tag else None
    if entry is not None and registry is not None and not revision and \
            (registry.hf_hub_id, registry.hf_hub_filename) == (repo_id, filename):
        # the registry's own location: the manifest decides, with fallbacks
        return entry.locations(), entry
    out = []
    for fn in ([filename] if filename else _DEFAULT_HUB_FILES):
        known = manifest.find_file(repo_id, fn)
        if known is not None:
            found_entry, loc = known
            entry = entry or found_entry
            out.append(HubFile(repo_id, fn, revision or loc.revision, loc.sha256, loc.size, loc.kind))
        else:
            out.append(HubFile(repo_id, fn, revision or None, kind='other'))
    return out, entry


def _fetch_first(name: str, candidates: List[HubFile], entry: Optional[WeightsEntry], cache_dir: Any,
                 manifest: WeightsManifest) -> Tuple[Path, HubFile, str]:
    tried: List[Tuple[HubFile, str]] = []
    for loc in candidates:
        try:
            path = fetch_hub_file(loc, cache_dir)
        except _Missing as e:
            tried.append((loc, str(e)))
            continue
        if tried:
            _logger.info('%s: using %s (%s)', name, loc.describe(), '; '.join(f'{t.describe()}: {r}' for t, r in tried))
        digest = check_file(path, loc, name, manifest.path)
        return path, loc, digest
    raise WeightsUnavailableError(_unavailable_message(name, tried, entry))


def _read_verified(path: Path, loc: Optional[HubFile], digest: Optional[str], name: str,
                   manifest: WeightsManifest) -> Dict[str, Any]:
    from ..models.osnet import unwrap_state_dict
    try:
        return unwrap_state_dict(read_checkpoint(path))
    except CheckpointError as e:
        if loc is None:  # the user's own file: read_checkpoint's message names it
            raise
        raise WeightsIntegrityError(
            _integrity_message(name, path, loc, digest, path.stat().st_size, manifest.path,
                               problem=f'cannot be read ({e})')) from e


def resolve_pretrained(
        variant: str,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
        cache_dir: Optional[Union[str, os.PathLike]] = None,
) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """Resolve the pretrained cfg as timm does, then fetch, verify and read the weights it points to.

    Returns ``(load_cfg, recorded)``: ``load_cfg`` goes to ``build_model_with_cfg`` as ``pretrained_cfg``
    and carries the verified tensors as its ``state_dict`` source; ``recorded`` holds the source keys that
    the model's ``pretrained_cfg`` should show afterwards (see ``forget_loaded_state_dict``). Sources
    timm reads safely itself (an in-memory state_dict, a url, a local-dir) are left to timm:
    ``recorded`` is then None.

    Raises:
        WeightsUnavailableError: no location could provide the file.
        WeightsIntegrityError: the file fails its size / sha256 check or cannot be read.
    """
    from timm.models import resolve_pretrained_cfg

    cfg = resolve_pretrained_cfg(variant, pretrained_cfg, pretrained_cfg_overlay).to_dict()
    source = _source_of(cfg)
    name = f"{variant}.{cfg['tag']}" if cfg.get('tag') else variant
    if source not in ('hf-hub', 'file'):
        return cfg, None
    manifest = load_manifest(active_manifest_path())
    recorded = {k: cfg.get(k) for k in _SOURCE_KEYS}
    if source == 'file':
        path = Path(cfg['file']).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f'Pretrained weights for {name}: file not found: {path} '
                                          '(pretrained_cfg_overlay=dict(file=...) must name an existing file).')
        state_dict = _read_verified(path, None, None, name, manifest)
        _logger.info('%s: loaded weights from %s', name, path)
    else:
        candidates, entry = _candidates(cfg, variant, manifest)
        path, loc, digest = _fetch_first(name, candidates, entry, cache_dir, manifest)
        state_dict = _read_verified(path, loc, digest, name, manifest)
        recorded.update(hf_hub_id=loc.repo_id + (f'@{loc.revision}' if loc.revision else ''),
                        hf_hub_filename=loc.filename)
        _logger.info('%s: loaded %s (sha256 %s%s)', name, loc.describe(), digest,
                     ', verified' if loc.sha256 else ', not recorded in the manifest')
    load_cfg = {k: v for k, v in cfg.items() if k not in _SOURCE_KEYS}
    load_cfg['state_dict'] = state_dict
    return load_cfg, recorded


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


# ---------------------------------------------------------------------------------------------------- timm cfgs

def pretrained_cfgs(base_cfg: Any, manifest: Optional[WeightsManifest] = None) -> Dict[str, Dict[str, Any]]:
    """timm pretrained cfgs, ``'architecture.tag' -> cfg``, one per manifest entry, default tag first.

    ``base_cfg(**overrides)`` builds a cfg dict (``osnet._cfg``). Each cfg points at the entry's best
    Hub location; the input size, mean and std are the entry's, or the reference defaults where the
    entry records none; ``num_classes`` is the checkpoint's classifier size, or 0 (the re-ID embedding)
    while that is unknown.
    """
    manifest = manifest or load_manifest()
    defaults = manifest.reference_defaults
    ordered = sorted(manifest, key=lambda e: (e.architecture, e.tag != manifest.default_tags.get(e.architecture)))
    cfgs = {}
    for entry in ordered:
        best = entry.locations()[0]
        cfgs[entry.name] = base_cfg(
            hf_hub_id=best.repo_id,
            hf_hub_filename=best.filename,
            num_classes=entry.num_classes if entry.num_classes is not None else 0,
            input_size=tuple(entry.input_size or defaults['input_size']),
            mean=tuple(entry.mean or defaults['mean']),
            std=tuple(entry.std or defaults['std']),
            license=entry.license,
            description=_describe(entry),
        )
    return cfgs


def _describe(entry: WeightsEntry) -> str:
    if entry.task == 'imagenet-classification':
        return f'{entry.architecture} trained on ImageNet-1k (reference checkpoint)'
    targets = ', '.join(ev.target for ev in entry.evaluation)
    return (f'{entry.architecture} for person re-ID, trained on {entry.training_description()}'
            + (f', evaluated on {targets}' if targets else '') + ' (reference checkpoint)')
