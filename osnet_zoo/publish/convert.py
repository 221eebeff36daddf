"""Converting reference checkpoints to Hub-ready safetensors, and publishing them.

``convert_checkpoint`` reads any supported layout safely, checks it against the weights manifest and writes
the model folder timm's Hub loader reads (``osnet_zoo.models.folder``: ``model.safetensors`` with osnet_zoo
keys, ``config.json`` and the model card ``README.md``, checked with a forward pass). ``push_folder`` uploads
such a folder with huggingface_hub.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from huggingface_hub import HfApi

from ..models.builder import create_model
from ..models.folder import write_model_folder
from ..weights.io import CheckpointError, classifier_rows, file_sha256, read_checkpoint, unwrap_state_dict
from ..weights.manifest import WeightsEntry, WeightsManifest, load_manifest, write_manifest

__all__ = ['ConversionResult', 'convert_checkpoint', 'record_conversion', 'PushPlan', 'plan_push',
           'push_folder', 'record_publication', 'HUB_FILES']

HUB_FILES = ('model.safetensors', 'config.json', 'README.md')

@dataclass
class ConversionResult:
    """What ``convert_checkpoint`` wrote and checked."""
    architecture: str
    tag: str
    out_dir: Path
    weights: Path
    sha256: str
    size: int
    num_classes: int
    source: Path
    source_sha256: str
    embedding_shape: tuple
    entry: Optional[WeightsEntry] = None
    warnings: List[str] = field(default_factory=list)


def convert_checkpoint(checkpoint: Union[str, os.PathLike], architecture: str, tag: str,
                       out_dir: Union[str, os.PathLike], manifest: Optional[WeightsManifest] = None,
                       **facts: Any) -> ConversionResult:
    """Convert a checkpoint (torchreid classic or AIN layout, trainer checkpoint, osnet_zoo safetensors) into
    ``out_dir``/{model.safetensors, config.json, README.md}.

    ``facts`` are :func:`~osnet_zoo.models.folder.write_model_folder`'s: ``check_size``, ``repo_id``,
    ``input_size`` (height, width), ``mean``, ``std`` and ``distance`` record how the weights were trained
    and evaluated (config.json's ``pretrained_cfg`` and ``distance``, and the card; default: the manifest
    entry's, else the architecture's 256x128 ImageNet defaults). ``model_args`` are the architecture
    arguments of a model that is not the standard ``architecture`` (an ablation, ``num_streams=1``):
    config.json records them, so ``timm.create_model('local-dir:OUT', pretrained=True)`` rebuilds it; such
    weights are never a manifest tag. ``results`` (target -> rank1/rank5/rank10/mAP as fractions, as
    ``python -m osnet_zoo.train`` measures them) and ``notes`` go into the card of such weights. ``origin``
    (Markdown) says where such weights come from when ``checkpoint`` is not kept (a training run's
    temporary file): the card then names it instead of that file, and shows no Hub repository.

    The checkpoint must fit ``architecture`` exactly (its classifier, if any, sets ``num_classes``). The
    written weights are read back into a fresh model and must give bit-identical embeddings and logits on
    a fixed batch of 2 images of ``check_size`` (default: the model's input size). Where the manifest has
    an entry ``architecture.tag``, its number of classes must match and the model card carries its facts;
    a different digest than the recorded upstream file is reported in ``warnings``.

    Raises:
        CheckpointError: the checkpoint cannot be read, does not fit the architecture or the manifest entry,
            or the forward check fails.
    """
    manifest = manifest or load_manifest()
    architectures = manifest.data['default_tags']  # the zoo's architectures, one default tag each
    if architecture not in architectures:
        raise CheckpointError(f'Unknown architecture {architecture!r}; expected one of {sorted(architectures)}.')
    entry = manifest.get(f'{architecture}.{tag}')
    if entry is not None and facts.get('model_args'):
        raise CheckpointError(f'{entry.name} is a checkpoint of the standard {architecture}; weights built with '
                              f"model_args {facts['model_args']} need a tag of their own (not one of the manifest).")
    source = Path(checkpoint)
    source_sha256 = file_sha256(source) if source.is_file() else ''
    state_dict = unwrap_state_dict(read_checkpoint(source), str(source))
    num_classes = classifier_rows(state_dict)
    warnings = _check_against_entry(entry, f'{architecture}.{tag}', source, source_sha256, num_classes)
    written = write_model_folder(state_dict, architecture, tag, out_dir, entry=entry, manifest=manifest,
                                 source=source, source_sha256=source_sha256, **facts)
    return ConversionResult(
        architecture=architecture, tag=tag, out_dir=written.out_dir, weights=written.weights, sha256=written.sha256,
        size=written.size, num_classes=num_classes, source=source, source_sha256=source_sha256,
        embedding_shape=written.embedding_shape, entry=entry, warnings=warnings)


def _check_against_entry(entry: Optional[WeightsEntry], name: str, source: Path, source_sha256: str,
                         num_classes: int) -> List[str]:
    """Refuse a checkpoint whose class count is not the manifest entry's; warn of a file that is not the
    entry's reference file, or of a tag the manifest does not know."""
    if entry is None:
        return [f'{name} is not in the weights manifest: the model card has no facts from it.']
    if entry.num_classes is not None and num_classes not in (0, entry.num_classes):
        raise CheckpointError(
            f'{source}: its classifier has {num_classes} classes but the manifest entry {entry.name} records '
            f'{entry.num_classes}. Wrong checkpoint for this tag?')
    up = entry.upstream
    if up.get('sha256') and up['sha256'] != source_sha256:
        return [f"{source.name} has sha256 {source_sha256}, not the reference file's {up['sha256']} "
                f"({up.get('filename')}): these are not the weights the manifest lists for {entry.name}."]
    return []


def record_conversion(manifest: WeightsManifest, result: ConversionResult, path: Optional[Path] = None,
                      force: bool = False) -> List[Path]:
    """Write ``result`` into the manifest entry (hub.sha256, hub.size, hub.converted_from_sha256, and
    num_classes where unknown) and save it atomically. A changed file clears hub.revision (not published).

    Raises:
        CheckpointError: no such entry, or the source is not the recorded upstream file (unless ``force``).
    """
    name = f'{result.architecture}.{result.tag}'
    entry = manifest.get(name)
    if entry is None:
        raise CheckpointError(f'{name} is not in the weights manifest {manifest.path}: add an entry for it first '
                              '(architecture, tag, training data, ...) or convert without --update-manifest.')
    up_sha = entry.upstream.get('sha256')
    if up_sha and up_sha != result.source_sha256 and not force:
        raise CheckpointError(
            f"Refusing to record {result.source} as {name}: its sha256 is {result.source_sha256}, but the manifest's "
            f"reference file {entry.upstream.get('filename')} has {up_sha}. Convert the reference file, or pass "
            '--force if these really are the weights to publish under this tag.')
    changes: Dict[str, Any] = {
        'hub.sha256': result.sha256, 'hub.size': result.size,
        'hub.converted_from_sha256': result.source_sha256 or None,
    }
    if entry.hub.get('sha256') != result.sha256:
        changes['hub.revision'] = None  # these bytes are not on the Hub yet
    if entry.num_classes is None:
        changes['num_classes'] = result.num_classes
        changes['sources.num_classes'] = (f'classifier rows of the converted checkpoint {result.source.name} '
                                          f'(sha256 {result.source_sha256})')
    return write_manifest(manifest.updated(name, changes), path)


# ---------------------------------------------------------------------------------------------------- publishing

@dataclass
class PushPlan:
    """What ``push_folder`` uploads: the folder's Hub files with their sizes and digests."""
    folder: Path
    repo_id: str
    name: str
    files: List[Dict[str, Any]]
    revision: Optional[str] = None  # the commit, once pushed


def plan_push(folder: Union[str, os.PathLike], repo_id: Optional[str] = None,
              manifest: Optional[WeightsManifest] = None) -> PushPlan:
    """Check a converted folder and list what would be uploaded.

    The folder must hold model.safetensors, config.json and README.md, and the weights must load strictly
    into the architecture that config.json names. ``repo_id`` defaults to the manifest's repo for the tag.

    Raises:
        CheckpointError: a missing file, an unreadable config, or weights that do not fit.
    """
    folder = Path(folder)
    missing = [f for f in HUB_FILES if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(f'{folder} is not a converted model folder: missing {missing} '
                              '(run `python -m osnet_zoo.weights convert` first).')
    try:
        config = json.loads((folder / 'config.json').read_text(encoding='utf-8'))
        architecture, num_classes = config['architecture'], int(config['num_classes'])
        tag = config.get('pretrained_cfg', {}).get('tag')
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f'{folder / "config.json"} is not a timm config (architecture, num_classes): {e}') from e
    name = f'{architecture}.{tag}' if tag else architecture
    create_model(architecture, num_classes=num_classes, checkpoint=folder / 'model.safetensors', strict=True)
    manifest = manifest or load_manifest()
    entry = manifest.get(name)
    if repo_id is None:
        if entry is None:
            raise CheckpointError(f'{name} is not in the weights manifest: pass --repo-id.')
        repo_id = entry.hub['repo_id']
    files = []
    for fname in HUB_FILES:
        path = folder / fname
        files.append({'path': fname, 'size': path.stat().st_size, 'sha256': file_sha256(path)})
    return PushPlan(folder=folder, repo_id=repo_id, name=name, files=files)


def push_folder(plan: PushPlan, token: Optional[str] = None, private: bool = False, branch: Optional[str] = None,
                commit_message: Optional[str] = None) -> PushPlan:
    """Create the Hub repo if needed and upload the planned files in one commit; ``plan.revision`` is set to
    the commit id."""
    api = HfApi(token=token)
    api.create_repo(plan.repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=plan.repo_id, folder_path=str(plan.folder), allow_patterns=[f['path'] for f in plan.files],
        revision=branch, commit_message=commit_message or f'Upload {plan.name} (osnet-zoo conversion)')
    plan.revision = commit.oid
    return plan


def record_publication(manifest: WeightsManifest, name: str, repo_id: str, revision: str, weights_sha256: str,
                       weights_size: int, path: Optional[Path] = None) -> List[Path]:
    """Record a pushed commit as entry ``name``'s Hub revision (the entry is then *published*).

    Raises:
        CheckpointError: no such entry, or the pushed weights are not the ones the manifest records.
    """
    entry = manifest.get(name)
    if entry is None:
        raise CheckpointError(f'{name} is not in the weights manifest {manifest.path}.')
    recorded = entry.hub.get('sha256')
    if recorded is not None and recorded != weights_sha256:
        raise CheckpointError(
            f'{name}: the pushed model.safetensors has sha256 {weights_sha256}, the manifest records {recorded}. '
            'Convert with --update-manifest before pushing.')
    changes = {'hub.repo_id': repo_id, 'hub.revision': revision, 'hub.sha256': weights_sha256,
               'hub.size': weights_size}
    return write_manifest(manifest.updated(name, changes), path)
