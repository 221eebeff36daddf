"""Exporting the embedding model (the library behind `python -m osnet_zoo.export`): an OSNet embedding model
as ONNX, TorchScript or a torchreid-layout ``.pt`` state dict, checked and documented.

The exported graph takes a normalised image batch and returns embeddings; BatchNorm is folded into the
convs first (exact up to rounding). The file is then run against the PyTorch model on the same random
batch — with onnxruntime for ONNX, ``torch.jit.load`` for TorchScript — and the maximum absolute
difference is printed and must stay within the tolerance, scaled by the output's magnitude: 1e-4 of the
largest output (at least 1e-4) in fp32, 1% of the largest output in fp16. Rounding errors grow with the
values, so an absolute bound would refuse a faithful export whose embeddings are in the hundreds. A torchreid ``.pt`` (the file tracking libraries such as boxmot load as-is) is reloaded through
``load_osnet_checkpoint`` and must give back every tensor bit for bit. An OpenVINO IR (``--format openvino``,
a folder ``<architecture>_<tag>_openvino_model`` with ``.xml`` / ``.bin``, the layout boxmot's OpenVINO backend
takes) is converted from the ONNX graph and checked through OpenVINO's CPU plugin in fp32, as ONNX is.

Files are named ``<architecture>_<tag>.<ext>`` by default (``.onnx``, ``.torchscript``, ``.pt``): trackers
tell the architecture from the file name. A ``.pt`` whose default name is one boxmot downloads by name
(:data:`BOXMOT_DOWNLOAD_NAMES`: given a bare name it does not find, boxmot fetches the authors' file instead,
silently) is named ``<architecture>_<tag>_osnetzoo.pt``; an ``out`` given under such a name gets a notice. Beside the file, ``<file>.json`` holds our contract (input /
output names, shapes, dtype, the preprocessing, the check) and ``<file>.metadata.json`` the few facts a
tracking library needs (:data:`TRACKER_METADATA_KEYS`), including the keys boxmot 25.0.0 reads from that file
(:data:`BOXMOT_METADATA_KEYS`; its loader takes them before anything in the file or its name).
"""
from __future__ import annotations

import copy
import datetime
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from .._version import __version__
from ..files import atomic_path, atomic_write_json, make_folder
from ..models.builder import create_model
from ..models.embedding import Embedder
from ..models.osnet import OSNet
from ..models.torchreid_layout import reference_architecture, save_torchreid_checkpoint
from ..weights import read_checkpoint, unwrap_state_dict
from .model import build_embedding_model, resolve_preprocessing
from ..models.run_record import check_preprocessing
from .openvino_runtime import IR_FOLDER_SUFFIX, OpenVinoModel, require_openvino
from .optimize import fold_batchnorm

__all__ = ['export_model', 'check_export', 'check_opset', 'supported_opsets', 'ExportCheckError', 'INPUT_NAME',
           'OUTPUT_NAME', 'TOLERANCES', 'EXPORT_FORMATS', 'EXPORT_SUFFIXES', 'TRACKER_METADATA_KEYS',
           'BOXMOT_METADATA_KEYS', 'BOXMOT_DOWNLOAD_NAMES', 'BOXMOT_FOLDER_MANIFEST', 'default_export_name',
           'metadata_path', 'contract_path']

_logger = logging.getLogger(__name__)

INPUT_NAME = 'images'
OUTPUT_NAME = 'features'
# allowed max |exported - PyTorch fp32|, relative to the largest reference value: max(1, max |reference|) in fp32
# (outputs near zero keep an absolute 1e-4), max |reference| in fp16
TOLERANCES = {'fp32': 1e-4, 'fp16': 1e-2}
# an OpenVINO export is a folder <name>_openvino_model holding <name>.xml / .bin (boxmot's OpenVINO backend takes it)
EXPORT_SUFFIXES = {'onnx': '.onnx', 'torchscript': '.torchscript', 'torchreid': '.pt', 'openvino': IR_FOLDER_SUFFIX}
EXPORT_FORMATS = tuple(EXPORT_SUFFIXES)
# What boxmot 25.0.0 reads from <file>.metadata.json (boxmot.reid.core.registry): the architecture it builds for
# a .pt, the classifier size it builds it with, its crop resize ('resize' squashes the crop to the input size
# with cv2.resize INTER_LINEAR) and model_kwargs.img_size, the [H, W] it resizes crops to (without it, 256x128
# for OSNet names; an ONNX graph's fixed H, W override it). A schema version other than 1, or any other key
# in model_kwargs, makes boxmot refuse the file.
BOXMOT_METADATA_KEYS = ('model_name', 'num_classes', 'preprocess', 'model_kwargs_schema_version', 'model_kwargs')
# The .pt names boxmot 25.0.0 downloads when given a bare name it finds neither in the working directory nor in its
# weights folder (boxmot.reid.core.catalog.TRAINED_URLS); osnet_x0_25_msmt17.pt is its default ReID model. The
# osnet_ibn / osnet_ain names there are the authors' msmt17_combineall checkpoints (4101 classes).
BOXMOT_DOWNLOAD_NAMES = frozenset(
    [f'{arch}_{data}.pt' for arch in ('resnet50', 'resnet50_fc512', 'mlfn', 'hacnn', 'mobilenetv2_x1_0',
                                      'mobilenetv2_x1_4', 'osnet_x1_0', 'osnet_x0_75', 'osnet_x0_5', 'osnet_x0_25')
     for data in ('market1501', 'dukemtmcreid', 'msmt17')]
    + ['osnet_ibn_x1_0_msmt17.pt', 'osnet_ain_x1_0_msmt17.pt', 'lmbn_n_duke.pt', 'lmbn_n_market.pt',
       'lmbn_n_cuhk03_d.pt'])
# boxmot 25.0.0 reads the metadata of a folder (an OpenVINO export given as its folder) from this file in it
# (boxmot.reid.core.artifacts); given the .xml, from <name>.xml.metadata.json beside it
BOXMOT_FOLDER_MANIFEST = 'manifest.json'
TRACKER_METADATA_KEYS = ('architecture', 'tag', 'format', 'file', 'input_size', 'input_shape', 'layout',
                         'channel_order', 'pixel_scale', 'mean', 'std', 'resize', 'interpolation', 'antialias',
                         'output_dim', 'normalized', 'dtype', 'dynamic_batch') + BOXMOT_METADATA_KEYS


class ExportCheckError(RuntimeError):
    """The exported file does not reproduce the PyTorch model within the tolerance."""


def _ort_run(path: Path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort  # optional dependency: loaded only when an ONNX file is checked
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])


def check_export(path: Path, fmt: str, reference: nn.Module, batches: List[torch.Tensor],
                 dtype: torch.dtype) -> Dict[str, Any]:
    """Run the exported file on each batch and compare with ``reference`` (fp32 PyTorch, on CPU)."""
    worst, scale = 0.0, 0.0
    for x in batches:
        with torch.inference_mode():
            expected = reference(x).float()
        xe = x.to(dtype)
        if fmt == 'onnx':
            got = _ort_run(path, xe)
        elif fmt == 'openvino':
            got = OpenVinoModel(path)(xe)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', FutureWarning)  # torch.jit.load's deprecation notice
                loaded = torch.jit.load(str(path), map_location='cpu')
            with torch.inference_mode():
                got = loaded(xe)
        if tuple(got.shape) != tuple(expected.shape):
            raise ExportCheckError(f'{path}: output shape {tuple(got.shape)} for input {tuple(x.shape)}, '
                                   f'expected {tuple(expected.shape)}.')
        worst = max(worst, (got.float() - expected).abs().max().item())
        scale = max(scale, expected.abs().max().item())
    precision = 'fp16' if dtype == torch.float16 else 'fp32'
    if fmt == 'onnx':
        import onnxruntime  # optional dependency: loaded only when an ONNX file is checked
        runtime = f'onnxruntime {onnxruntime.__version__}'
    elif fmt == 'openvino':
        runtime = f"openvino {require_openvino().__version__.split('-')[0]} (CPU, fp32 accuracy hints)"
    else:
        runtime = f'torch.jit {torch.__version__}'
    tolerance = TOLERANCES[precision]
    allowed = tolerance * (max(1.0, scale) if precision == 'fp32' else scale)
    return dict(runtime=runtime, batch_sizes=[int(b.shape[0]) for b in batches], max_abs_diff=worst,
                max_abs_reference=scale, tolerance=tolerance, allowed_abs_diff=allowed,
                tolerance_kind='relative to max(1, max |reference|)' if precision == 'fp32'
                else 'relative to max |reference|',
                passed=worst <= allowed)


def _ir_xml(out: Path) -> Path:
    """The .xml inside an OpenVINO export folder ``<name>_openvino_model``: ``<name>.xml``, as boxmot's exporter
    names it."""
    return out / (out.name[:-len(IR_FOLDER_SUFFIX)] + '.xml')


def _is_ir_folder(out: Path) -> bool:
    return out.name.endswith(IR_FOLDER_SUFFIX) and out.suffix == ''


def contract_path(out: Union[str, os.PathLike]) -> Path:
    """Where our contract JSON of an export goes: ``<file>.json`` (an OpenVINO folder: ``<name>.xml.json`` in it)."""
    out = Path(out)
    out = _ir_xml(out) if _is_ir_folder(out) else out
    return out.with_name(out.name + '.json')


def metadata_path(out: Union[str, os.PathLike]) -> Path:
    """Where the tracker metadata JSON of an export goes: ``<file>.metadata.json`` (an OpenVINO folder:
    ``<name>.xml.metadata.json`` in it, what boxmot reads when given the .xml; given the folder, it reads the
    same facts from ``manifest.json`` there, :data:`BOXMOT_FOLDER_MANIFEST`)."""
    out = Path(out)
    out = _ir_xml(out) if _is_ir_folder(out) else out
    return out.with_name(out.name + '.metadata.json')


def _architecture_and_tag(model: Union[str, nn.Module], net: nn.Module, pretrained: bool,
                          checkpoint_path: Union[str, os.PathLike, None]) -> tuple:
    cfg = getattr(net, 'pretrained_cfg', None) or {}
    if isinstance(model, str):
        architecture, _, tag = model.partition('.')
    else:
        try:
            architecture = reference_architecture(net) if isinstance(net, OSNet) else ''
        except ValueError:
            architecture = ''
        architecture = architecture or cfg.get('architecture') or type(model).__name__.lower()
        tag = ''
    if checkpoint_path is not None:
        # the checkpoint's own name says what it was trained on; drop a repeated architecture prefix
        stem = Path(checkpoint_path).name.split('.')[0]
        tag = stem[len(architecture) + 1:] if stem.startswith(architecture + '_') else stem
        if stem == 'model' and cfg.get('tag'):  # a model folder's model.safetensors: its recorded tag says more
            tag = cfg['tag']
    elif not tag and pretrained and isinstance(model, str):
        tag = cfg.get('tag') or ''
    return architecture, tag


def default_export_name(architecture: str, tag: Optional[str], fmt: str) -> str:
    """``<architecture>_<tag>.<ext>`` (``<architecture>.<ext>`` without a tag), e.g.
    ``osnet_x0_25_msmt17_combineall.onnx``: trackers pick the architecture out of the file name. A name boxmot
    downloads by (:data:`BOXMOT_DOWNLOAD_NAMES`) gets ``_osnetzoo`` before the suffix."""
    if fmt not in EXPORT_SUFFIXES:
        raise ValueError(f'format must be one of {EXPORT_FORMATS}, got {fmt!r}.')
    stem = f'{architecture}_{tag}' if tag else architecture
    if stem + EXPORT_SUFFIXES[fmt] in BOXMOT_DOWNLOAD_NAMES:
        stem += '_osnetzoo'
    return stem + EXPORT_SUFFIXES[fmt]


def _warn_boxmot_name(out: Path) -> None:
    """The notice for an export written under a name boxmot downloads by."""
    if out.name in BOXMOT_DOWNLOAD_NAMES:
        _logger.warning('osnet_zoo: %s is also the name of a file boxmot downloads (the authors\' weights): give '
                        'boxmot its path (%s), never the bare name, or it may fetch its own file instead.', out.name,
                        out if out.is_absolute() or out.parent != Path('.') else Path('.') / out.name)


def _check_suffix(out: Path, fmt: str) -> None:
    if fmt == 'torchscript' and out.suffix in ('.pt', '.pth'):
        raise ValueError(f'{out}: TorchScript exports end in .torchscript; boxmot picks its backend by the suffix '
                         'and reads a .pt as a checkpoint of tensors (use --format torchreid for that).')
    if fmt == 'torchreid' and out.suffix != '.pt':
        raise ValueError(f'{out}: a torchreid export ends in .pt (trackers pick their PyTorch backend by it).')
    if fmt == 'onnx' and out.suffix != '.onnx':
        raise ValueError(f'{out}: an ONNX export ends in .onnx.')
    if fmt == 'openvino' and not _is_ir_folder(out):
        raise ValueError(f'{out}: an OpenVINO export is a folder named <name>{IR_FOLDER_SUFFIX} (boxmot picks its '
                         'OpenVINO backend by that ending); give that folder or the folder to write it in.')


def _model_with_classifier(model: Union[str, nn.Module], pretrained: bool,
                           checkpoint_path: Union[str, os.PathLike, None]) -> nn.Module:
    """The OSNet with its classifier (for a torchreid file that keeps it)."""
    if not isinstance(model, str):
        return copy.deepcopy(model).eval()
    if checkpoint_path is None:
        return create_model(model, pretrained=pretrained, num_classes=None).eval()
    weight = unwrap_state_dict(read_checkpoint(checkpoint_path), str(checkpoint_path)).get('classifier.weight')
    if weight is None:
        raise ValueError(f'{checkpoint_path}: has no classifier to keep (export without --with-classifier).')
    return create_model(model, num_classes=int(weight.shape[0]), checkpoint=checkpoint_path, strict=True).eval()


def _check_torchreid(path: Path, model: nn.Module, example: torch.Tensor) -> Dict[str, Any]:
    """Reload ``path`` through our own loader into a fresh model: every tensor must come back bit for bit."""
    architecture = reference_architecture(model)
    classes = model.num_classes if isinstance(model.get_classifier(), nn.Linear) else 0
    fresh = create_model(architecture, num_classes=classes, checkpoint=path, strict=True).eval()
    original, reloaded = model.state_dict(), fresh.state_dict()
    differing = [k for k in original if k not in reloaded or not torch.equal(original[k].cpu(), reloaded[k])]
    with torch.inference_mode():
        want = Embedder(model, normalize=False).eval()(example)
        got = Embedder(fresh, normalize=False).eval()(example)
    worst = (got - want).abs().max().item()
    return dict(runtime='osnet_zoo.load_osnet_checkpoint', batch_sizes=[int(example.shape[0])],
                max_abs_diff=worst, max_abs_reference=want.abs().max().item(), tolerance=0.0,
                tolerance_kind='bit-identical tensors', tensors_checked=len(original),
                tensors_differing=differing[:8], passed=not differing and worst == 0.0)


def supported_opsets() -> range:
    """The ONNX opsets this torch's (TorchScript-based) ONNX exporter can write."""
    constants = torch.onnx._constants  # torch exposes the bounds only here
    return range(constants.ONNX_MIN_OPSET, constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET + 1)


def check_opset(opset: Any) -> None:
    """Refuse an opset the exporter cannot write, before anything is built or written."""
    allowed = supported_opsets()
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in allowed:
        raise ValueError(f'--opset {opset!r} is not supported by torch {torch.__version__}\'s ONNX exporter: '
                         f'choose {allowed.start}..{allowed.stop - 1} (default 17).')


def export_model(
        model: Union[str, nn.Module],
        out: Union[str, os.PathLike, None] = None,
        fmt: str = 'onnx',
        dynamic_batch: bool = True,
        half: bool = False,
        batch_size: int = 1,
        normalize: bool = False,
        pretrained: bool = True,
        checkpoint_path: Optional[str] = None,
        opset: int = 17,
        fold_bn: bool = True,
        with_classifier: bool = False,
        input_size: Optional[Tuple[int, int, int]] = None,
) -> Dict[str, Any]:
    """Export ``model`` to ``out``, check it, write ``<out>.json`` (our contract) and ``<out>.metadata.json``
    (for trackers); return the contract.

    ``fmt``: 'onnx' (a dynamic batch unless ``dynamic_batch=False``, then ``batch_size``), 'torchscript'
    (``.torchscript``, any batch) or 'torchreid' (a ``.pt`` holding ``{'state_dict': <the reference key layout>,
    'model_name': ...}``, fp32, unnormalised embedding; ``with_classifier`` keeps the classifier) or 'openvino'
    (a folder ``<name>_openvino_model`` holding the fp32 IR ``<name>.xml`` / ``.bin``, converted from the ONNX
    graph, checked through OpenVINO's CPU plugin in fp32; the contract, the metadata and boxmot's
    ``manifest.json`` inside it). ``out`` is the file (the OpenVINO folder), or a folder (existing, or without
    a file suffix) that gets :func:`default_export_name`; None writes that name in the working directory.
    ``input_size`` (C, H, W) overrides the model's ``pretrained_cfg`` input size (the graph's spatial size is fixed).
    Raises ExportCheckError if the check fails (the files are still written, with ``check.passed`` false).
    """
    _check_options(model, fmt, half, batch_size, normalize, opset, with_classifier)
    net = build_embedding_model(model, pretrained, checkpoint_path)
    architecture, tag = _architecture_and_tag(model, net, pretrained, checkpoint_path)
    name = default_export_name(architecture, tag, fmt)
    out = _export_path(out, name, fmt)
    _check_suffix(out, fmt)
    _warn_boxmot_name(out)
    prep = resolve_preprocessing(net, {'input_size': input_size} if input_size is not None else None)
    check_preprocessing(prep, metadata_path(out))  # what the metadata will promise, checked before any file
    reference = Embedder(net, normalize=normalize).eval()
    if fmt == 'torchreid':
        return _export_torchreid(model, net, out, architecture, tag, prep, pretrained, checkpoint_path,
                                 with_classifier)
    exported = Embedder(fold_batchnorm(net) if fold_bn else net, normalize=normalize).eval()
    dtype = torch.float16 if half else torch.float32
    exported = exported.to(dtype)
    c, h, w = prep['input_size']
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(batch_size, c, h, w, generator=gen)
    _write_graph(exported, example.to(dtype), out, fmt, dynamic_batch, opset)
    batches = [example]
    if dynamic_batch or fmt == 'torchscript':
        batches.append(torch.randn(batch_size + 2, c, h, w, generator=gen))
    check = check_export(out, fmt, reference, batches, dtype)
    batch_dim: Union[int, str] = 'batch' if dynamic_batch or fmt == 'torchscript' else batch_size
    contract = {
        **_contract_header(fmt, out, architecture, tag, model, checkpoint_path),
        'opset': opset if fmt in ('onnx', 'openvino') else None,
        'bn_folded': fold_bn,
        'input': {'name': INPUT_NAME, 'shape': [batch_dim, c, h, w], 'dtype': str(dtype).replace('torch.', ''),
                  'layout': 'NCHW', 'colour_order': 'RGB'},
        'output': {'name': OUTPUT_NAME, 'shape': [batch_dim, _feature_dim(reference, example)],
                   'dtype': str(dtype).replace('torch.', ''), 'l2_normalized': normalize},
        'preprocessing': _preprocessing_contract(prep),
        'check': check,
    }
    _write_metadata(out, contract, architecture, tag, prep, dynamic=batch_dim == 'batch')
    if not check['passed']:
        raise ExportCheckError(f"{out}: exported model differs from PyTorch by {check['max_abs_diff']:.3g} "
                               f"(allowed {check['allowed_abs_diff']:.3g}: tolerance {check['tolerance']:g} "
                               f"{check['tolerance_kind']}, outputs up to {check['max_abs_reference']:.3g}).")
    return contract


def _check_options(model: Union[str, nn.Module], fmt: str, half: bool, batch_size: int, normalize: bool, opset: int,
                   with_classifier: bool) -> None:
    """``export_model``'s options, checked before anything is built: each refusal names the option."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f'format must be one of {EXPORT_FORMATS}, got {fmt!r}.')
    if fmt in ('onnx', 'openvino'):
        check_opset(opset)
    if fmt == 'openvino' and half:
        raise ValueError('--format openvino writes an fp32 IR (the CPU runs it in fp32); drop --precision fp16.')
    if fmt == 'openvino':
        require_openvino('--format openvino')
    if fmt == 'torchreid' and (half or normalize):
        raise ValueError('--format torchreid writes the fp32 weights; the reference model returns unnormalised '
                         'embeddings (drop --precision fp16 / --normalize).')
    if with_classifier and fmt != 'torchreid':
        raise ValueError('with_classifier is for --format torchreid (ONNX / TorchScript export the embedding).')
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f'--batch-size must be an integer >= 1, got {batch_size!r}.')
    if fmt == 'torchreid' and isinstance(model, str) and not model.split('.')[0].startswith('osnet'):
        raise ValueError(f'--format torchreid writes the reference OSNet layout; --model {model!r} is not an OSNet.')


def _write_graph(exported: nn.Module, example: torch.Tensor, out: Path, fmt: str, dynamic_batch: bool,
                 opset: int) -> None:
    """Write ``exported`` (traced on ``example``) to ``out`` atomically: ONNX (checked by onnx's checker) or
    frozen TorchScript (scripted, else traced)."""
    if fmt == 'openvino':
        return _write_openvino(exported, example, out, dynamic_batch, opset)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the TorchScript-based exporters warn about their deprecation
        if fmt == 'onnx':
            dynamic_axes = {INPUT_NAME: {0: 'batch'}, OUTPUT_NAME: {0: 'batch'}} if dynamic_batch else None
            with torch.inference_mode():
                torch.onnx.export(exported, (example,), str(tmp), input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes, opset_version=opset,
                                  do_constant_folding=True, dynamo=False)
            import onnx  # optional dependency: loaded only when exporting to ONNX
            onnx.checker.check_model(str(tmp))
        else:
            try:
                scripted = torch.jit.script(exported)
            except Exception:  # a custom module that TorchScript cannot compile: trace the fixed graph
                with torch.no_grad():
                    scripted = torch.jit.trace(exported, example)
            scripted = torch.jit.freeze(scripted.eval())
            torch.jit.save(scripted, str(tmp))


def _write_openvino(exported: nn.Module, example: torch.Tensor, out: Path, dynamic_batch: bool, opset: int) -> None:
    """Write ``exported`` as an OpenVINO IR folder ``out``: through our ONNX graph (``openvino.convert_model``
    of the .onnx: the graph the ONNX export checks, and 7x faster to convert than OpenVINO's PyTorch frontend
    for osnet_x1_0, with the same outputs; docs/deployment.md), fp32 weights. The folder is built beside
    ``out`` and then put in its place, so that a failed export leaves the previous one whole."""
    ov = require_openvino('--format openvino')
    make_folder(out.parent)
    if out.exists() and not out.is_dir():
        raise ValueError(f'{out}: exists and is not a folder; an OpenVINO export is a folder.')
    with tempfile.TemporaryDirectory(prefix=f'.{out.name}.', dir=out.parent) as tmp:
        onnx_path = Path(tmp) / 'graph.onnx'
        _write_graph(exported, example, onnx_path, 'onnx', dynamic_batch, opset)
        shape = [-1 if dynamic_batch else int(example.shape[0]), *map(int, example.shape[1:])]
        network = ov.convert_model(str(onnx_path), input=[(INPUT_NAME, shape)])
        staged = Path(tmp) / out.name
        staged.mkdir()
        ov.save_model(network, str(_ir_xml(staged)), compress_to_fp16=False)
        if out.is_dir():
            shutil.rmtree(out)
        os.replace(staged, out)


def _export_path(out: Union[str, os.PathLike, None], name: str, fmt: str) -> Path:
    """Where the export goes: ``out`` itself (a file; an OpenVINO folder ``*_openvino_model``), or ``name`` in the
    folder ``out`` (an existing folder, or a path without a file suffix); None: ``name`` here."""
    if out is None:
        return Path(name)
    out = Path(out)
    if fmt == 'openvino' and _is_ir_folder(out):
        return out
    return out / name if out.is_dir() or not out.suffix else out


def _contract_header(fmt: str, out: Path, architecture: str, tag: str, model: Union[str, nn.Module],
                     checkpoint_path: Union[str, os.PathLike, None]) -> Dict[str, Any]:
    return {
        'format': fmt,
        'file': out.name,
        'architecture': architecture,
        'tag': tag or None,
        'model': model if isinstance(model, str) else type(model).__name__,
        'checkpoint': str(checkpoint_path) if checkpoint_path else None,
        'osnet_zoo_version': __version__,
        'torch_version': torch.__version__,
        'created': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
    }


def _preprocessing_contract(prep: Dict[str, Any]) -> Dict[str, Any]:
    c, h, w = prep['input_size']
    return {
        'resize': f'squash the whole crop to {h}x{w} (no crop, aspect ratio not kept)',
        'interpolation': prep['interpolation'],
        'input_size': [c, h, w],
        'scale': 'pixel / 255',
        'mean': list(prep['mean']),
        'std': list(prep['std']),
        'formula': 'x = (rgb / 255 - mean) / std, per channel',
    }


def _write_metadata(out: Path, contract: Dict[str, Any], architecture: str, tag: str, prep: Dict[str, Any],
                    dynamic: bool, num_classes: Optional[int] = None) -> None:
    """Write our contract and, beside it, the tracker metadata (flat, one fact per key; ``num_classes``: the
    classifier size a torchreid file holds, None without one)."""
    atomic_write_json(contract_path(out), contract)
    c, h, w = prep['input_size']
    metadata = {
        'architecture': architecture,
        'tag': tag or None,
        'format': contract['format'],
        'file': out.name,
        'input_size': [h, w],  # height, width
        'input_shape': contract['input']['shape'],
        'layout': 'NCHW',
        'channel_order': 'rgb',
        'pixel_scale': 255.0,  # x = (pixel / pixel_scale - mean) / std
        'mean': list(prep['mean']),
        'std': list(prep['std']),
        'resize': 'squash',
        'interpolation': prep['interpolation'],
        'antialias': prep['interpolation'] != 'nearest',  # how FeatureExtractor resizes
        'output_dim': contract['output']['shape'][1],
        'normalized': contract['output']['l2_normalized'],
        'dtype': contract['input']['dtype'],
        'dynamic_batch': dynamic,
        # boxmot's keys. num_classes None: boxmot falls back to its own guess and builds a classifier that
        # deployment never runs (it loads without one); the ONNX and TorchScript backends build no model.
        'model_name': architecture,
        'num_classes': num_classes,
        'preprocess': 'resize',
        'model_kwargs_schema_version': 1,
        'model_kwargs': {'img_size': [h, w]},
    }
    assert tuple(metadata) == TRACKER_METADATA_KEYS
    atomic_write_json(metadata_path(out), metadata)
    if contract['format'] == 'openvino':  # what boxmot reads when given the folder itself
        atomic_write_json(out / BOXMOT_FOLDER_MANIFEST, metadata)


def _export_torchreid(model: Union[str, nn.Module], net: nn.Module, out: Path, architecture: str, tag: str,
                      prep: Dict[str, Any], pretrained: bool, checkpoint_path: Union[str, os.PathLike, None],
                      with_classifier: bool) -> Dict[str, Any]:
    source = _model_with_classifier(model, pretrained, checkpoint_path) if with_classifier else net
    if not isinstance(source, OSNet):
        raise ValueError(f'--format torchreid needs an OSNet model, got {type(source).__name__}.')
    written = save_torchreid_checkpoint(source, out, architecture=architecture, classifier=with_classifier)
    c, h, w = prep['input_size']
    example = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))
    check = _check_torchreid(out, source, example)
    contract = {
        **_contract_header('torchreid', out, architecture, tag, model, checkpoint_path),
        'layout': 'torchreid ' + ('osnet_ain' if architecture.startswith('osnet_ain_') else 'osnet'),
        'entries': {'model_name': written['model_name'], 'num_classes': written.get('num_classes')},
        'classifier': with_classifier,
        'input': {'name': None, 'shape': ['batch', c, h, w], 'dtype': 'float32', 'layout': 'NCHW',
                  'colour_order': 'RGB'},
        'output': {'name': None, 'shape': ['batch', int(net.head_hidden_size)], 'dtype': 'float32',
                   'l2_normalized': False, 'note': 'eval-mode output of the reference model (fc head)'},
        'preprocessing': _preprocessing_contract(prep),
        'check': check,
    }
    _write_metadata(out, contract, architecture, tag, prep, dynamic=True, num_classes=written.get('num_classes'))
    if not check['passed']:
        raise ExportCheckError(f'{out}: reloading the torchreid file did not give back the weights '
                               f"(differing: {check['tensors_differing']}).")
    return contract


def _feature_dim(model: nn.Module, example: torch.Tensor) -> int:
    with torch.inference_mode():
        return int(model(example[:1]).shape[1])


