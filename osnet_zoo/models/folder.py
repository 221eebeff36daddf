"""A model folder in timm's format: ``model.safetensors`` (osnet_zoo keys), ``config.json`` (timm's
``save_config_for_hf``: architecture arguments, preprocessing, distance) and the model card ``README.md``.

``write_model_folder`` writes one from a state_dict and checks it: the weights read back into a fresh model give
bit-identical embeddings and logits on a fixed batch. A training run writes its trained model with it, and the
publishing tools (``osnet_zoo.publish.convert``) the zoo's conversions; ``timm.create_model('local-dir:FOLDER',
pretrained=True)`` rebuilds the model. The networks are built by the one builder (``models.builder``), by the
names the manifest gives them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import timm
import torch
from huggingface_hub import EvalResult, ModelCardData
from safetensors.torch import load_file
from timm.models._hub import save_config_for_hf

from ..files import atomic_path, atomic_save_safetensors, atomic_write_text
from ..weights.io import CheckpointError, classifier_rows, file_sha256
from ..weights.loading import load_osnet_checkpoint
from ..weights.manifest import DATASET_NAMES, WeightsEntry, WeightsManifest
from .builder import create_model

__all__ = ['WrittenFolder', 'write_model_folder', 'model_card', 'card_data', 'eval_results']


@dataclass
class WrittenFolder:
    """What ``write_model_folder`` wrote and checked."""
    out_dir: Path
    weights: Path
    sha256: str
    size: int
    embedding_shape: tuple


def write_model_folder(
        state_dict: Mapping[str, torch.Tensor],
        architecture: str,
        tag: str,
        out_dir: Union[str, os.PathLike],
        entry: Optional[WeightsEntry] = None,
        manifest: Optional[WeightsManifest] = None,
        check_size: Optional[Tuple[int, int]] = None,
        repo_id: Optional[str] = None,
        input_size: Optional[Tuple[int, int]] = None,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        distance: Optional[str] = None,
        model_args: Optional[Dict[str, Any]] = None,
        results: Optional[Mapping[str, Mapping[str, Any]]] = None,
        notes: Optional[str] = None,
        origin: Optional[str] = None,
        source: Optional[Path] = None,
        source_sha256: str = '',
) -> WrittenFolder:
    """Write ``state_dict`` (of ``architecture`` with ``model_args``; its classifier, if any, sets the classes) to
    ``out_dir``/{model.safetensors, config.json, README.md}, tagged ``tag`` (``entry``: the manifest's facts of
    that tag, for the card). ``input_size``, ``mean``, ``std`` and ``distance`` record how the weights were
    trained and evaluated; ``results``, ``notes`` and ``origin`` (what trained them) go into the card of weights
    that are no manifest entry; ``source`` and ``source_sha256`` name the file they were converted from.

    Raises:
        CheckpointError: the weights do not fit the architecture, give non-finite outputs, or differ after the
            safetensors round trip (on a batch of 2 images of ``check_size``, default the input size).
    """
    num_classes = classifier_rows(state_dict)
    model = _build(architecture, tag, num_classes, entry, model_args)
    load_osnet_checkpoint(model, dict(state_dict), strict=True)
    data_config, trained_size = _data_config(model, input_size, mean, std)
    probe_size = trained_size if check_size is None else (trained_size[0], *check_size)
    expected = _probe(model, probe_size)
    if not all(torch.isfinite(v).all() for v in expected.values()):
        raise CheckpointError(f'{source or architecture}: the converted model gives non-finite outputs '
                              '(NaN/inf weights?).')

    out_dir = Path(out_dir)
    weights = _save_weights(model, out_dir / 'model.safetensors', architecture, tag, source_sha256)
    _check_round_trip(_build(architecture, tag, num_classes, entry, model_args), weights, probe_size, expected)
    _write_config(model, out_dir / 'config.json', data_config, distance)
    sha256, size = file_sha256(weights), weights.stat().st_size
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith('classifier.'))
    trained = dict(input_size=trained_size, mean=tuple(model.pretrained_cfg['mean']),
                   std=tuple(model.pretrained_cfg['std']), distance=distance, model_args=dict(model_args or {}),
                   results=dict(results or {}), notes=notes, origin=origin, folder=str(out_dir))
    atomic_write_text(out_dir / 'README.md', model_card(
        architecture, tag, entry, sha256=sha256, size=size, num_classes=num_classes,
        source_name=source.name if source is not None else '',
        repo_id=repo_id or (entry.hub['repo_id'] if entry is not None else f'osnet-zoo/{architecture}.{tag}'),
        source_sha256=source_sha256, params=params, manifest=manifest, trained=trained))
    return WrittenFolder(out_dir=out_dir, weights=weights, sha256=sha256, size=size,
                         embedding_shape=tuple(expected['embedding'].shape))


def _build(architecture: str, tag: str, num_classes: int, entry: Optional[WeightsEntry],
           model_args: Optional[Dict[str, Any]] = None) -> torch.nn.Module:
    if entry is not None:
        return create_model(entry.name, num_classes=num_classes)
    # a tag of your own: the architecture's data config, renamed, without the default tag's source and
    # description (which describe the reference checkpoint, not these weights); re-ID input (256x128 squash)
    # where the default tag is the ImageNet classifier (osnet_ain_x0_25 ...), whose 224 crop is not these weights'
    overlay = dict(tag=tag, hf_hub_id=None, hf_hub_filename=None, description=None, license=None)
    if timm.models.get_pretrained_cfg(architecture).tag == 'imagenet':
        overlay.update(input_size=(3, 256, 128), pool_size=(16, 8), crop_pct=1.0, crop_mode='squash')
    return create_model(architecture, num_classes=num_classes, model_args=model_args, pretrained_cfg_overlay=overlay)


def _probe(model: torch.nn.Module, input_size: tuple) -> Dict[str, torch.Tensor]:
    """Embedding and logits of a fixed random batch, eval mode."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, *input_size, generator=gen)
    model.eval()
    with torch.inference_mode():
        embedding = model.forward_head(model.forward_features(x), pre_logits=True)
        logits = model.classifier(embedding)
    return {'embedding': embedding, 'logits': logits}


def _data_config(model: torch.nn.Module, input_size: Optional[Tuple[int, int]], mean: Optional[Sequence[float]],
                 std: Optional[Sequence[float]]) -> Tuple[Dict[str, Any], tuple]:
    """(config.json's data config: what was given of input size, mean and std; the (C, H, W) trained size)."""
    data_config = {k: tuple(v) for k, v in (('mean', mean), ('std', std)) if v is not None}
    if input_size is not None:
        data_config['input_size'] = (model.pretrained_cfg['input_size'][0], *input_size)
    return data_config, tuple(data_config.get('input_size', model.pretrained_cfg['input_size']))


def _save_weights(model: torch.nn.Module, path: Path, architecture: str, tag: str, source_sha256: str) -> Path:
    """``model``'s state_dict as safetensors, with its architecture, tag and source digest as metadata."""
    tensors = {k: v.detach() for k, v in model.state_dict().items()}
    metadata = {'format': 'pt', 'architecture': architecture, 'tag': tag}
    if source_sha256:
        metadata['converted_from_sha256'] = source_sha256
    atomic_save_safetensors(tensors, path, metadata=metadata)
    return path


def _check_round_trip(fresh: torch.nn.Module, weights: Path, probe_size: tuple,
                      expected: Dict[str, torch.Tensor]) -> None:
    """Read ``weights`` back into a ``fresh`` model exactly as timm's loader will; demand identical outputs."""
    fresh.load_state_dict(load_file(str(weights)), strict=True)
    got = _probe(fresh, probe_size)
    for key in expected:
        if not torch.equal(expected[key], got[key]):
            diff = (expected[key] - got[key]).abs().max().item()
            raise CheckpointError(f'{weights}: {key} differs after the safetensors round trip (max |diff| {diff}).')


def _write_config(model: torch.nn.Module, path: Path, data_config: Optional[Dict[str, Any]] = None,
                  distance: Optional[str] = None) -> None:
    # timm's own writer, so that timm's Hub reader (hf-hub: names) understands it; the architecture
    # arguments come from the model factory (model_args), the preprocessing from data_config
    with atomic_path(path) as tmp:
        save_config_for_hf(model, tmp, data_config=data_config or None,  # a Path: older timm calls .open()
                           model_config=dict(distance=distance) if distance else None)


def _fmt(value: Optional[float]) -> str:
    return '—' if value is None else f'{value:.1f}'


def _pct(fraction: Optional[float]) -> str:
    return _fmt(None if fraction is None else 100 * fraction)


MODEL_ZOO_URL = 'https://github.com/KaiyangZhou/deep-person-reid/blob/master/docs/MODEL_ZOO.md'
_METRICS = (('rank1', 'rank-1', 'Rank-1'), ('rank5', 'rank-5', 'Rank-5'), ('rank10', 'rank-10', 'Rank-10'),
            ('mAP', 'map', 'mAP'))
DATASET_TERMS = ('The training and evaluation datasets (Market-1501, DukeMTMC-reID, MSMT17, CUHK03, ImageNet) have '
                 'their own terms, mostly for non-commercial research only; DukeMTMC-reID was withdrawn by its '
                 'authors. The licence of the weights does not lift those terms: check them before any use.')


def eval_results(entry: WeightsEntry) -> List[EvalResult]:
    """The reported results of an entry as huggingface_hub ``EvalResult``s (the card's ``model-index``)."""
    results = []
    for ev in entry.evaluation:
        for attr, metric_type, metric_name in _METRICS:
            value = getattr(ev, attr)
            if value is None:
                continue
            results.append(EvalResult(
                task_type='image-feature-extraction', task_name='Person re-identification',
                dataset_type=ev.target, dataset_name=DATASET_NAMES.get(ev.target, ev.target), dataset_split='test',
                metric_type=metric_type, metric_name=metric_name, metric_value=value, verified=False,
                source_name='torchreid model zoo (reported)', source_url=MODEL_ZOO_URL))
    return results


def card_data(entry: Optional[WeightsEntry], name: str, repo_id: str) -> ModelCardData:
    """The card's YAML front matter, built with huggingface_hub's own ``ModelCardData``."""
    prefix = repo_id.split('/')[0]
    tags = ['timm', 'osnet', 'osnet-zoo', 'image-feature-extraction']
    if entry is None or entry.task == 'person-reid':
        tags.append('person-reid')
    data = dict(library_name='timm', license=(entry.license if entry is not None else None) or 'unknown',
                pipeline_tag='image-feature-extraction', tags=tags)
    if entry is not None:
        data['datasets'] = list(entry.training_data)
        if entry.base_model:
            data['base_model'] = f'{prefix}/{entry.base_model}'
        results = eval_results(entry)
        if results:
            data.update(model_name=name, eval_results=results)
    return ModelCardData(**data)


def model_card(
        architecture: str,
        tag: str,
        entry: Optional[WeightsEntry],
        repo_id: str,
        sha256: str,
        size: int,
        num_classes: int,
        source_name: str,
        source_sha256: str,
        params: int,
        manifest: Optional[WeightsManifest] = None,
        trained: Optional[Dict[str, Any]] = None,
) -> str:
    """The Hub model card (README.md): YAML front matter (licence, datasets, base model, ``model-index`` with
    the reported results), facts from the manifest, usage, licence and dataset terms, citations.

    ``trained`` (input_size, mean, std, distance, model_args) describes weights that are no manifest entry
    (a model you trained): the card then says plainly that they are not a reference checkpoint."""
    name = f'{architecture}.{tag}'
    trained = trained or {}
    rows = _card_model_rows(architecture, entry, trained, params,
                            manifest.reference_defaults if manifest is not None else {})
    rows.append(('Classifier', f'{num_classes} classes' if num_classes else 'none (embedding only)'))
    rows.append(('Embedding', '512-d: the `fc` output (Linear → BatchNorm1d → ReLU), before L2 normalisation'))
    rows.append(('Weights', f'`model.safetensors`, sha256 `{sha256}`, {size:,} bytes'))
    if trained.get('origin'):  # the source file was temporary: name what exists instead
        rows.append(('Trained by', trained['origin']))
    else:
        provenance = f'`{source_name}`' + (f' (sha256 `{source_sha256}`)' if source_sha256 else '')
        rows.append(('Converted from', provenance + ' with osnet-zoo'))
    table = '\n'.join(f'| {k} | {v} |' for k, v in rows)
    notes = f'\n\nNote: {entry.notes}' if entry is not None and entry.notes else ''
    if trained.get('notes'):
        notes += f"\n\n{trained['notes']}"
    family = 'OSNet-AIN' if '_ain_' in architecture else 'OSNet-IBN' if '_ibn_' in architecture else 'OSNet'
    origin = _card_origin(entry, trained, source_name, source_sha256)
    load, checked = _card_usage(name, entry, repo_id, trained)
    return _CARD.format(front=card_data(entry, name, repo_id).to_yaml(), name=name, family=family, origin=origin,
                        notes=notes, table=table, metrics=_card_results(entry, trained), load=load, checked=checked,
                        license_text=_card_license(entry), citations=CITATIONS)


_CARD = '''---
{front}
---

# {name}

{family} weights `{name}` for [timm](https://github.com/huggingface/pytorch-image-models) and
[osnet-zoo](https://huggingface.co/osnet-zoo), in safetensors with osnet-zoo keys. {origin}{notes}

| | |
|---|---|
{table}

## Results

{metrics}

## Usage

```python
import timm
import torch
import osnet_zoo  # registers the OSNet family into timm

{load}
cfg = timm.data.resolve_data_config({{}}, model=model)
transform = timm.data.create_transform(**cfg)       # resize to the input size, ImageNet mean/std
with torch.inference_mode():
    feats = torch.nn.functional.normalize(model(crops), dim=1)   # crops: (N, 3, H, W) after transform
```

{checked}

## License

{license_text}

## Citation

{citations}
'''


def _card_model_rows(architecture: str, entry: Optional[WeightsEntry], trained: Dict[str, Any], params: int,
                     defaults: Dict[str, Any]) -> List[Tuple[str, str]]:
    """The card's table rows on the model: architecture, then the entry's facts (task, data, input, loss,
    distance ...) or, for weights of your own, how they were trained."""
    model_args = trained.get('model_args') or {}
    arch_text = f'`{architecture}`' + (' with ' + ', '.join(f'`{k}={v!r}`' for k, v in model_args.items())
                                       + ' (not the standard architecture)' if model_args else '')
    rows = [('Architecture', f'{arch_text} ({params / 1e6:.2f} M parameters without the classifier)')]
    if entry is None:
        if trained.get('input_size'):
            h, w = trained['input_size'][1:]
            rows.append(('Input', f"{h}×{w} (height×width) RGB, mean {list(trained['mean'])}, "
                                  f"std {list(trained['std'])} (as trained and evaluated)"))
        if trained.get('distance'):
            rows.append(('Distance', f"{trained['distance']} (as evaluated)"))
        return rows
    task = 'person re-identification' if entry.task == 'person-reid' else 'ImageNet-1k classification'
    rows.append(('Task', task))
    rows.append(('Training data', entry.training_description()
                 + (f' — as the source states it: "{entry.training_data_text}"' if entry.training_data_text
                    else '')))
    size_src = entry.input_size or defaults.get('input_size')
    note = '' if entry.input_size else ' (reference default; not recorded for this checkpoint)'
    if size_src:
        rows.append(('Input', f'{size_src[1]}×{size_src[2]} (height×width) RGB, ImageNet mean/std{note}'))
    if entry.transforms:
        rows.append(('Training augmentation', ', '.join(entry.transforms)))
    if entry.loss:
        rows.append(('Loss', entry.loss))
    dist = entry.distance or defaults.get('distance')
    if dist:
        rows.append(('Distance', dist + ('' if entry.distance else ' (reference evaluator default)')))
    if entry.base_model:
        rows.append(('Initialised from', f'`{entry.base_model}` (ImageNet weights)'))
    return rows


def _card_results(entry: Optional[WeightsEntry], trained: Dict[str, Any]) -> str:
    """The card's Results section: the reference zoo's reported results, or the training run's."""
    header = '| Target | Rank-1 | Rank-5 | Rank-10 | mAP |\n|---|---|---|---|---|\n'
    if entry is not None and entry.evaluation:
        return ('Reported by the reference model zoo ([MODEL_ZOO.md](' + MODEL_ZOO_URL + ')); not re-measured by '
                'osnet-zoo.\n\n' + header + '\n'.join(
                    f'| {DATASET_NAMES.get(ev.target, ev.target)} | {_fmt(ev.rank1)} | {_fmt(ev.rank5)} | '
                    f'{_fmt(ev.rank10)} | {_fmt(ev.mAP)} |' for ev in entry.evaluation))
    if trained.get('results'):
        return ('Measured by the osnet-zoo training run that wrote these weights (its `results.json`, in the '
                'run folder above this one).\n\n' + header + '\n'.join(
                    f"| {target} | {_pct(r.get('rank1'))} | {_pct(r.get('rank5'))} | {_pct(r.get('rank10'))} | "
                    f"{_pct(r.get('mAP'))} |" for target, r in trained['results'].items()))
    return 'No evaluation results are recorded in the osnet-zoo weights manifest for this checkpoint.'


def _card_origin(entry: Optional[WeightsEntry], trained: Dict[str, Any], source_name: str,
                 source_sha256: str) -> str:
    """Where the weights come from: the reference file (digest checked), another file, or a training run."""
    up = entry.upstream if entry is not None else {}
    if entry is None and trained.get('origin'):
        return (f"These weights are **not** a checkpoint of the reference model zoo: they come from "
                f"{trained['origin']}, and no accuracy of the reference applies to them.")
    if entry is None:
        return (f'These weights are **not** a checkpoint of the reference model zoo: they come from '
                f'`{source_name}` (a model trained or converted by its owner'
                + (', with architecture arguments that differ from the standard model'
                   if trained.get('model_args') else '')
                + '), and no accuracy of the reference applies to them.')
    if up.get('sha256') and up['sha256'] == source_sha256:
        return (f"Converted from the reference model zoo's `{up.get('filename')}`, whose sha256 matches the one "
                'the osnet-zoo weights manifest records.')
    return (f'Converted from `{source_name}`; the osnet-zoo weights manifest records no digest of the '
            "reference file to check it against." if not up.get('sha256') else
            f"Converted from `{source_name}`, which is not the reference model zoo's file for this tag "
            '(its sha256 differs from the one the manifest records).')


def _card_usage(name: str, entry: Optional[WeightsEntry], repo_id: str, trained: Dict[str, Any]) -> Tuple[str, str]:
    """(the lines that load the model, what the loader checks): from the Hub, or a training run's folder."""
    if trained.get('origin'):  # a training run's folder: no Hub repository, no manifest entry
        return (f'model = timm.create_model("local-dir:{trained["folder"]}", pretrained=True, num_classes=0).eval()',
                '`config.json` in this folder records the architecture, input size, mean/std and distance; '
                'osnet-zoo commands given this folder (or its run folder) use them.')
    by_tag = (f'# or by tag: timm.create_model("{name}", pretrained=True, num_classes=0)' if entry is not None else
              '# or from the folder: '
              'timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True, num_classes=0)')
    return (f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True, num_classes=0).eval()\n{by_tag}',
            "osnet-zoo checks the file's sha256 against its weights manifest before loading it.")


def _card_license(entry: Optional[WeightsEntry]) -> str:
    if entry is not None and entry.license:
        return f'`{entry.license}`: {entry.sources.get("license", "")}.\n\n{DATASET_TERMS}'
    return ('Not recorded: the osnet-zoo weights manifest has no source stating the license of these '
            f'weights.\n\n{DATASET_TERMS}')


CITATIONS = '''```bibtex
@inproceedings{zhou2019osnet,
  title={Omni-Scale Feature Learning for Person Re-Identification},
  author={Zhou, Kaiyang and Yang, Yongxin and Cavallaro, Andrea and Xiang, Tao},
  booktitle={ICCV},
  year={2019}
}
@article{zhou2021osnet,
  title={Learning Generalisable Omni-Scale Representations for Person Re-Identification},
  author={Zhou, Kaiyang and Yang, Yongxin and Cavallaro, Andrea and Xiang, Tao},
  journal={TPAMI},
  year={2021}
}
```'''
