"""Exporting the embedding model (the library behind `python -m osnet_zoo.export`): an OSNet embedding model as ONNX or TorchScript, checked and documented.

The exported graph takes a normalised image batch and returns embeddings; BatchNorm is folded into the
convs first (exact up to rounding). The file is then run against the PyTorch model on the same random
batch — with onnxruntime for ONNX, ``torch.jit.load`` for TorchScript — and the maximum absolute
difference is printed and must stay within the tolerance (1e-4 in fp32; in fp16, 1% of the largest
output). Beside the file, ``<file>.json`` holds the contract a deployment needs: input / output names,
shapes, dtype and the preprocessing.
"""
from __future__ import annotations

import datetime
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
import torch.nn as nn

from .._version import __version__
from ..files import atomic_path, atomic_write_json
from ..models.embedding import Embedder
from .model import build_embedding_model, resolve_preprocessing
from .optimize import fold_batchnorm

__all__ = ['export_model', 'check_export', 'check_opset', 'supported_opsets', 'ExportCheckError', 'INPUT_NAME', 'OUTPUT_NAME', 'TOLERANCES']

INPUT_NAME = 'images'
OUTPUT_NAME = 'features'
# allowed max |exported - PyTorch fp32|: absolute in fp32; in fp16, relative to the largest reference value
TOLERANCES = {'fp32': 1e-4, 'fp16': 1e-2}


class ExportCheckError(RuntimeError):
    """The exported file does not reproduce the PyTorch model within the tolerance."""


def _ort_run(path: Path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort  # optional dependency (the export extra)
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
        import onnxruntime  # optional dependency (the export extra)
        runtime = f'onnxruntime {onnxruntime.__version__}'
    else:
        runtime = f'torch.jit {torch.__version__}'
    tolerance = TOLERANCES[precision]
    allowed = tolerance if precision == 'fp32' else tolerance * scale
    return dict(runtime=runtime, batch_sizes=[int(b.shape[0]) for b in batches], max_abs_diff=worst,
                max_abs_reference=scale, tolerance=tolerance,
                tolerance_kind='absolute' if precision == 'fp32' else 'relative to max |reference|',
                passed=worst <= allowed)


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
        out: Union[str, os.PathLike],
        fmt: str = 'onnx',
        dynamic_batch: bool = False,
        half: bool = False,
        batch_size: int = 1,
        normalize: bool = False,
        pretrained: bool = True,
        checkpoint_path: Optional[str] = None,
        opset: int = 17,
        fold_bn: bool = True,
) -> Dict[str, Any]:
    """Export ``model`` to ``out`` (ONNX or TorchScript), check it, write ``<out>.json``; return the contract.

    Raises ExportCheckError if the check fails (the files are still written, with ``check.passed`` false).
    """
    if fmt not in ('onnx', 'torchscript'):
        raise ValueError(f"format must be 'onnx' or 'torchscript', got {fmt!r}.")
    if fmt == 'onnx':
        check_opset(opset)
    out = Path(out)
    net = build_embedding_model(model, pretrained, checkpoint_path)
    prep = resolve_preprocessing(net)
    reference = Embedder(net, normalize=normalize).eval()
    exported = Embedder(fold_batchnorm(net) if fold_bn else net, normalize=normalize).eval()
    dtype = torch.float16 if half else torch.float32
    exported = exported.to(dtype)
    c, h, w = prep['input_size']
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(batch_size, c, h, w, generator=gen)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the TorchScript-based exporters warn about their deprecation
        if fmt == 'onnx':
            dynamic_axes = {INPUT_NAME: {0: 'batch'}, OUTPUT_NAME: {0: 'batch'}} if dynamic_batch else None
            with torch.inference_mode():
                torch.onnx.export(exported, (example.to(dtype),), str(tmp), input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes, opset_version=opset,
                                  do_constant_folding=True, dynamo=False)
            import onnx  # optional dependency (the export extra)
            onnx.checker.check_model(str(tmp))
        else:
            try:
                scripted = torch.jit.script(exported)
            except Exception:  # a custom module that TorchScript cannot compile: trace the fixed graph
                with torch.no_grad():
                    scripted = torch.jit.trace(exported, example.to(dtype))
            scripted = torch.jit.freeze(scripted.eval())
            torch.jit.save(scripted, str(tmp))

    batches = [example]
    if dynamic_batch or fmt == 'torchscript':
        batches.append(torch.randn(batch_size + 2, c, h, w, generator=gen))
    check = check_export(out, fmt, reference, batches, dtype)
    batch_dim: Union[int, str] = 'batch' if dynamic_batch or fmt == 'torchscript' else batch_size
    contract = {
        'format': fmt,
        'file': out.name,
        'model': model if isinstance(model, str) else type(model).__name__,
        'checkpoint': str(checkpoint_path) if checkpoint_path else None,
        'osnet_zoo_version': __version__,
        'torch_version': torch.__version__,
        'created': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
        'opset': opset if fmt == 'onnx' else None,
        'bn_folded': fold_bn,
        'input': {'name': INPUT_NAME, 'shape': [batch_dim, c, h, w], 'dtype': str(dtype).replace('torch.', ''),
                  'layout': 'NCHW', 'colour_order': 'RGB'},
        'output': {'name': OUTPUT_NAME, 'shape': [batch_dim, _feature_dim(reference, example)],
                   'dtype': str(dtype).replace('torch.', ''), 'l2_normalized': normalize},
        'preprocessing': {
            'resize': f'squash the whole crop to {h}x{w} (no crop, aspect ratio not kept)',
            'interpolation': prep['interpolation'],
            'input_size': [c, h, w],
            'scale': 'pixel / 255',
            'mean': list(prep['mean']),
            'std': list(prep['std']),
            'formula': 'x = (rgb / 255 - mean) / std, per channel',
        },
        'check': check,
    }
    atomic_write_json(out.with_name(out.name + '.json'), contract)
    if not check['passed']:
        raise ExportCheckError(f"{out}: exported model differs from PyTorch by {check['max_abs_diff']:.3g} "
                           f"(tolerance {check['tolerance']:g}).")
    return contract


def _feature_dim(model: nn.Module, example: torch.Tensor) -> int:
    with torch.inference_mode():
        return int(model(example[:1]).shape[1])


