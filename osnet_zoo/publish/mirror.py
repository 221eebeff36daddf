"""Learning digests from a maintainer's files, and publishing the whole zoo in one command.

``identify_file`` says which manifest entry a reference file is: by sha256 where the manifest records it,
else by file name, class count and keys (the state dict must load strictly into the entry's
architecture). Two checkpoints circulate under one name (``osnet_x0_25_msmt17.pt``: 1041 and 4101
classes); the class count separates them, and a file that still fits several entries is reported, never
guessed. ``record_reference_file`` (``verify --record``) writes the file's sha256 and size, and the Hub
revision of an HF cache snapshot path, into its entry. ``mirror`` converts, checks, cards and pushes every
identified file of a folder, resumably (``WORKDIR/mirror_state.json``, written atomically after each tag).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from huggingface_hub import CommitOperationAdd, HfApi
from safetensors.torch import load_file

from ..files import atomic_write_json
from ..models.builder import create_model
from .convert import ConversionResult, PushPlan, convert_checkpoint, plan_push, record_conversion, record_publication
from ..weights.io import CheckpointError, classifier_rows, file_sha256, read_checkpoint, unwrap_state_dict
from ..weights.manifest import WeightsEntry, WeightsManifest, load_manifest, write_manifest

__all__ = ['Identification', 'identify_file', 'fit_problem', 'record_reference_file', 'hf_snapshot_of',
           'commit_operations', 'MirrorReport', 'mirror', 'STATE_FILE']

STATE_FILE = 'mirror_state.json'
_SUFFIXES = ('.pth.tar', '.safetensors', '.pyth', '.pth', '.pt', '.bin', '.tar')
_SNAPSHOT = re.compile(r'^models--(?P<repo>.+)$')


def _stem(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


def fit_problem(state_dict: Dict[str, torch.Tensor], entry: WeightsEntry) -> Optional[str]:
    """Why ``state_dict`` is not a checkpoint of ``entry`` (class count, then keys/shapes), or None."""
    rows = classifier_rows(state_dict)
    if entry.num_classes is not None and rows != entry.num_classes:
        return f'its classifier has {rows} classes, {entry.name} has {entry.num_classes}'
    try:
        create_model(entry.architecture, num_classes=rows, checkpoint=state_dict, strict=True)
    except CheckpointError as e:
        return f'its keys do not fit {entry.architecture} ({str(e)[:300]})'
    return None


@dataclass
class Identification:
    """Which entry a file is (``entry``), or why none (``problem``, with the entries that were considered)."""
    path: Path
    sha256: str
    size: int
    num_classes: int
    entry: Optional[WeightsEntry] = None
    by: str = ''  # 'sha256' or 'name+classes+keys'
    problem: str = ''
    candidates: List[str] = field(default_factory=list)


def _name_candidates(name: str, manifest: WeightsManifest) -> List[WeightsEntry]:
    """Entries whose reference file name is ``name`` or begins with it (short names of mirrors:
    ``osnet_x0_25_msmt17.pt`` for ``osnet_x0_25_msmt17_256x128_..._flip.pth``), or named ARCH.TAG."""
    stem = _stem(name)
    out = []
    for entry in manifest:
        ref = _stem(entry.upstream.get('filename') or '')
        if stem in (ref, entry.name, entry.name.replace('.', '_')) or (ref and ref.startswith(stem + '_')):
            out.append(entry)
    return out


def identify_file(path: Union[str, os.PathLike], manifest: WeightsManifest,
                  tag: Optional[str] = None) -> Tuple[Identification, Dict[str, torch.Tensor]]:
    """Identify a reference file (see the module docstring); ``tag`` (``ARCH.TAG``) names the entry instead.

    Returns the identification and the file's tensors. Raises CheckpointError for an unreadable file."""
    path = Path(path)
    state_dict = unwrap_state_dict(read_checkpoint(path), str(path))
    ident = Identification(path=path, sha256=file_sha256(path), size=path.stat().st_size,
                           num_classes=classifier_rows(state_dict))
    if tag is not None:
        entry = manifest.entry(tag)
        known = entry.upstream.get('sha256')
        if known and known != ident.sha256:
            ident.problem = f'its sha256 {ident.sha256} is not the {known} that {tag} records'
        else:
            ident.problem = fit_problem(state_dict, entry) or ''
        ident.candidates = [tag]
        if not ident.problem:
            ident.entry, ident.by = entry, 'sha256' if known else '--tag, classes and keys'
        return ident, state_dict
    by_digest = [e for e in manifest if ident.sha256 in (e.upstream.get('sha256'), e.hub.get('converted_from_sha256'))]
    if by_digest:
        entry = by_digest[0]
        ident.candidates = [e.name for e in by_digest]
        problem = fit_problem(state_dict, entry)
        if problem:  # the manifest's digest is for another kind of file: say so, never load it as that tag
            ident.problem = f'its sha256 is the one {entry.name} records, yet {problem}'
        else:
            ident.entry, ident.by = entry, 'sha256'
        return ident, state_dict
    named = _name_candidates(path.name, manifest)
    ident.candidates = [e.name for e in named]
    # an entry whose reference digest is known and differs cannot be this file
    named = [e for e in named if not e.upstream.get('sha256')]
    fits = [e for e in named if fit_problem(state_dict, e) is None]
    if len(fits) == 1:
        ident.entry, ident.by = fits[0], 'name+classes+keys'
    elif not ident.candidates:
        ident.problem = 'neither its sha256 nor its name is one the manifest records'
    elif not named:
        ident.problem = (f'its name fits {ident.candidates}, but their recorded sha256 differ from {ident.sha256}: '
                         'not a reference file')
    elif not fits:
        ident.problem = f'its name fits {ident.candidates}, but ' + '; '.join(
            f'{e.name}: {fit_problem(state_dict, e)}' for e in named)
    else:
        ident.problem = (f'ambiguous: its name, {ident.num_classes} classes and keys fit {[e.name for e in fits]}; '
                         'pass --tag ARCH.TAG')
    return ident, state_dict


def hf_snapshot_of(path: Union[str, os.PathLike], sha256: Optional[str] = None) -> Optional[Tuple[str, str, str]]:
    """``(repo_id, revision, filename)`` when ``path`` is a file of a Hugging Face cache snapshot
    (``.../models--OWNER--NAME/snapshots/<40-hex commit>/<filename>``, as huggingface_hub writes it).

    The path alone proves nothing (any folder can be named so): the file must be huggingface_hub's link to a
    blob of that repo's ``blobs/`` folder, and with ``sha256`` that blob must be named by it (LFS blobs are
    named after their sha256). Otherwise None: no Hub revision is learnt from the file."""
    parts = Path(os.path.abspath(path)).parts
    for i in range(len(parts) - 3, 0, -1):
        match = _SNAPSHOT.match(parts[i - 1]) if i >= 1 else None
        if parts[i] == 'snapshots' and match and re.fullmatch(r'[0-9a-f]{40}', parts[i + 1]):
            blob = Path(os.path.realpath(path))
            blobs = Path(os.path.realpath(Path(*parts[:i]) / 'blobs'))
            if not os.path.islink(path) or blob.parent != blobs or (sha256 is not None and blob.name != sha256):
                return None
            return match.group('repo').replace('--', '/'), parts[i + 1], '/'.join(parts[i + 2:])
    return None


def _reference_changes(ident: Identification) -> Dict[str, Any]:
    """The manifest fields a maintainer's reference file fills: sha256, size, class count, and the Hub
    revision of a cache snapshot of the entry's Hub file; each with its source."""
    entry = ident.entry
    up = entry.upstream
    when = date.today().isoformat()
    source = f'verify --record: {ident.path.name} ({ident.size} bytes), hashed by a maintainer on {when}'
    changes: Dict[str, Any] = {}
    sources = dict(entry.sources)
    for key, value in (('sha256', ident.sha256), ('size', ident.size)):
        if up.get(key) is None:
            changes[f'upstream.{key}'] = value
            sources[f'upstream.{key}'] = source
    if entry.num_classes is None:
        changes['num_classes'] = ident.num_classes
        sources['num_classes'] = source + ' (classifier rows)'
    snapshot = hf_snapshot_of(ident.path, ident.sha256)
    if snapshot is not None:
        repo_id, revision, filename = snapshot
        if repo_id == up.get('hf_hub_id') and filename == up.get('filename'):
            if up.get('hf_revision') is None:
                changes['upstream.hf_revision'] = revision
                sources['upstream.hf_revision'] = (f'verify --record: HF cache snapshot {revision} '
                                                   f'of {repo_id}/{filename}')
            seen = list(up.get('hf_revisions_seen') or [])
            if revision not in seen:
                changes['upstream.hf_revisions_seen'] = seen + [revision]
    if changes:
        changes['sources'] = sources
    return changes


def record_reference_file(manifest: WeightsManifest, path: Union[str, os.PathLike], tag: Optional[str] = None,
                          out: Optional[Union[str, os.PathLike]] = None) -> Tuple[Identification, Dict[str, Any],
                                                                                  WeightsManifest]:
    """``verify --record``: identify ``path`` and write its sha256/size (and Hub revision) into its entry.

    Returns the identification, the changes and the updated manifest (written to ``out`` or where it was
    read from, with the repository-root copy). Raises CheckpointError naming the file and the entry when
    the file is not identified or does not fit (class count, keys, a recorded sha256 or size)."""
    ident, _ = identify_file(path, manifest, tag)
    if ident.entry is None:
        raise CheckpointError(f'Refusing to record {ident.path}: {ident.problem}'
                              + (f' (entries considered: {ident.candidates})' if ident.candidates else ''))
    known_size = ident.entry.upstream.get('size')
    if known_size is not None and known_size != ident.size:
        raise CheckpointError(f'Refusing to record {ident.path} as {ident.entry.name}: it has {ident.size} bytes, '
                              f'the entry records {known_size}.')
    changes = _reference_changes(ident)
    if changes:
        manifest = manifest.updated(ident.entry.name, changes)
        write_manifest(manifest, out)
    return ident, changes, manifest


# ---------------------------------------------------------------------------------------------------- mirror

def commit_operations(plan: PushPlan) -> List[CommitOperationAdd]:
    """The files of a planned push, as huggingface_hub commit operations (what ``create_commit`` gets)."""
    return [CommitOperationAdd(path_in_repo=f['path'], path_or_fileobj=str(plan.folder / f['path']))
            for f in plan.files]


@dataclass
class MirrorReport:
    """What ``mirror`` did: finished tags (name -> state), skipped files (path -> why), failures."""
    done: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    resumed: List[str] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)
    failed: Dict[str, str] = field(default_factory=dict)


def _files_in(folder: Path) -> List[Path]:
    if not folder.is_dir():
        raise CheckpointError(f'mirror: {folder} is not a folder of downloaded reference files.')
    return sorted(p for p in folder.rglob('*') if p.is_file() and not p.name.startswith('.'))


def _check_bit_identical(conversion: ConversionResult, state_dict: Dict[str, torch.Tensor]) -> None:
    """Every tensor of the written safetensors equals the reference file's, mapped to our keys."""
    model = create_model(conversion.architecture, num_classes=conversion.num_classes, checkpoint=state_dict,
                         strict=True)
    written = load_file(str(conversion.weights))
    expected = model.state_dict()
    differ = [k for k, v in expected.items() if k not in written or not torch.equal(written[k], v)]
    if differ or set(written) != set(expected):
        raise CheckpointError(f'{conversion.weights}: tensors differ from {conversion.source}: {differ[:5]}')


def mirror(
        folder: Union[str, os.PathLike],
        workdir: Union[str, os.PathLike],
        manifest: WeightsManifest,
        manifest_out: Optional[Union[str, os.PathLike]] = None,
        repo_prefix: str = 'osnet-zoo',
        dry_run: bool = False,
        token: Optional[str] = None,
        log: Callable[[str], None] = print,
        files: Optional[List[Path]] = None,
) -> MirrorReport:
    """Publish every reference file of ``folder`` (any names) as ``{repo_prefix}/{arch}.{tag}``.

    Each file is identified (``identify_file``; unidentified or ambiguous ones are reported and skipped),
    its digests recorded, converted into ``workdir/ARCH.TAG`` (bit-identical tensors and outputs), carded,
    and, without ``dry_run``, pushed in one commit and recorded as published in the manifest (written to
    ``manifest_out`` or where it was read from). With ``dry_run`` the manifest is not touched: what would be
    recorded goes to ``workdir/weights_manifest.dry-run.json``. ``workdir/mirror_state.json`` is rewritten
    atomically after each tag; a rerun skips the tags it lists as finished. ``files``: publish these files of
    ``folder`` only (the originals kept in the osnet-zoo cache, ``cache.cached_originals``).
    """
    folder, workdir = Path(folder), Path(workdir)
    files = _files_in(folder) if files is None else list(files)
    workdir.mkdir(parents=True, exist_ok=True)
    state_path = workdir / STATE_FILE
    state = _read_state(state_path, dry_run)
    target = workdir / 'weights_manifest.dry-run.json' if dry_run else manifest_out
    if dry_run and target.is_file() and state['tags']:
        manifest = load_manifest(target)  # resuming: what the earlier dry run recorded
    report = MirrorReport()
    api = None if dry_run else HfApi(token=token)
    for path in files:
        rel = str(path.relative_to(folder))
        found = _identify_new(path, rel, manifest, state, report, log)
        if found is None:
            continue
        name, state_dict = found
        repo_id = f'{repo_prefix}/{name}'
        try:  # each step writes the manifest as it goes: ``manifest`` is always the latest written
            ident, changes, manifest = record_reference_file(manifest, path, out=target)
            conversion, manifest = _convert(path, ident.entry, state_dict, manifest, workdir / name, repo_id, target)
            operations = commit_operations(plan_push(conversion.out_dir, repo_id=repo_id, manifest=manifest))
            entry_state = dict(status='done', source=rel, source_sha256=ident.sha256, identified_by=ident.by,
                               repo_id=repo_id, folder=str(conversion.out_dir), sha256=conversion.sha256,
                               size=conversion.size, operations=[op.path_in_repo for op in operations],
                               learnt=sorted(k for k in changes if k != 'sources'), revision=None)
            if api is not None:
                entry_state['revision'], manifest = _push(api, path, conversion, operations, name, repo_id,
                                                          manifest, target)
        except (CheckpointError, ValueError, OSError) as e:
            report.failed[name] = str(e)
            log(f'{name}: FAILED: {e}')
            continue
        state['tags'][name] = entry_state
        atomic_write_json(state_path, state)
        report.done[name] = entry_state
        verb = 'converted (dry run: not pushed)' if dry_run else f"pushed {repo_id}@{entry_state['revision']}"
        log(f'{name}: {rel} identified by {ident.by}; {verb}')
    return report


def _identify_new(path: Path, rel: str, manifest: WeightsManifest, state: Dict[str, Any], report: MirrorReport,
                  log: Callable[[str], None]) -> Optional[Tuple[str, Dict[str, torch.Tensor]]]:
    """(the entry name, the state dict) of a file ``mirror`` has still to publish; None, reported and logged,
    for a file that is unreadable, not identified, finished in an earlier run, or a second file of a tag."""
    try:
        ident, state_dict = identify_file(path, manifest)
    except CheckpointError as e:
        report.skipped[rel] = f'not a readable checkpoint ({e})'
        log(f'skip {rel}: {report.skipped[rel]}')
        return None
    if ident.entry is None:
        report.skipped[rel] = ident.problem
        log(f'skip {rel}: {ident.problem}')
        return None
    name = ident.entry.name
    if state['tags'].get(name, {}).get('status') == 'done':
        report.resumed.append(name)
        log(f'{name}: finished in an earlier run ({STATE_FILE}), skipped')
        return None
    if name in report.done:
        report.skipped[rel] = f'a second file for {name} (already done from {report.done[name]["source"]})'
        log(f'skip {rel}: {report.skipped[rel]}')
        return None
    return name, state_dict


def _convert(path: Path, entry: WeightsEntry, state_dict: Dict[str, torch.Tensor], manifest: WeightsManifest,
             out_dir: Path, repo_id: str, target: Optional[Union[str, os.PathLike]]
             ) -> Tuple[ConversionResult, WeightsManifest]:
    """Convert an identified reference file into ``out_dir``, check its tensors are the file's bit for bit,
    and record the conversion in the manifest. Returns the conversion and the manifest as written."""
    conversion = convert_checkpoint(path, entry.architecture, entry.tag, out_dir, manifest=manifest, repo_id=repo_id)
    _check_bit_identical(conversion, state_dict)
    record_conversion(manifest, conversion, path=target)
    return conversion, load_manifest(target or manifest.path)


def _push(api: HfApi, path: Path, conversion: ConversionResult, operations: List[CommitOperationAdd], name: str,
          repo_id: str, manifest: WeightsManifest, target: Optional[Union[str, os.PathLike]]
          ) -> Tuple[str, WeightsManifest]:
    """Push a converted tag in one commit and record it as published. Returns (the commit, the manifest)."""
    api.create_repo(repo_id, exist_ok=True)
    commit = api.create_commit(repo_id, operations=operations,
                               commit_message=f'Upload {name} (osnet-zoo conversion of {path.name})')
    record_publication(manifest, name, repo_id, commit.oid, conversion.sha256, conversion.size, path=target)
    return commit.oid, load_manifest(target or manifest.path)


def _read_state(path: Path, dry_run: bool) -> Dict[str, Any]:
    if not path.is_file():
        return {'dry_run': dry_run, 'tags': {}}
    try:
        state = json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as e:
        raise CheckpointError(f'{path}: not a mirror state file ({e}); delete it to start over.') from e
    if not isinstance(state, dict) or not isinstance(state.get('tags'), dict) or not all(
            isinstance(v, dict) for v in state['tags'].values()):
        raise CheckpointError(f'{path}: not a mirror state file (expected {{"dry_run": ..., "tags": '
                              f'{{TAG: {{...}}}}}}, got {json.dumps(state)[:80]}); delete it to start over.')
    if state.get('dry_run') != dry_run:
        raise CheckpointError(f'{path} records a {"dry" if state.get("dry_run") else "real"} run; use another '
                              '--output folder for a ' + ('dry run' if dry_run else 'real run') + '.')
    return state
