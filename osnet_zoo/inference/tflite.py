"""TFLite (LiteRT) files of the embedding model: the converter and the interpreter behind ``export --format tflite``.

The converter is litert-torch (Google's PyTorch-to-LiteRT converter, the package ai-edge-torch was renamed to),
the runtime the LiteRT interpreter of ai-edge-litert; both come with the optional extra
``pip install "osnet-zoo[tflite]"`` (docs/deployment.md says why this converter and what the others do).

The file takes the same input as the ONNX export, ``(batch, 3, H, W)`` float32 (NCHW): boxmot 25.0.0's LiteRT
backend tells the layout from the input shape, and for a channels-last file it transposes the batch twice (once
in ``inference_preprocess``, once in ``forward``), so only an NCHW file runs there. The converter turns the
convolutions channels-last inside the graph itself. The graph is converted at a batch of one and takes any
batch through the interpreter's ``resize_tensor_input``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from importlib.metadata import version
from pathlib import Path
from typing import Iterator, List

import torch
import torch.nn as nn

from ..files import atomic_path

__all__ = ['TFLITE_PACKAGES', 'TFLITE_INSTALL', 'missing_tflite_packages', 'require_tflite', 'write_tflite',
           'run_tflite', 'tflite_runtime']

# import name -> distribution name, of what ``export --format tflite`` needs
TFLITE_PACKAGES = {'litert_torch': 'litert-torch', 'ai_edge_litert': 'ai-edge-litert'}
TFLITE_INSTALL = 'pip install "osnet-zoo[tflite]"'


def missing_tflite_packages() -> List[str]:
    """The distributions of :data:`TFLITE_PACKAGES` that this environment lacks."""
    return [dist for module, dist in TFLITE_PACKAGES.items() if importlib.util.find_spec(module) is None]


def require_tflite() -> None:
    """Refuse ``--format tflite`` in one line, naming the extra, when the converter or the runtime is missing."""
    missing = missing_tflite_packages()
    if missing:
        raise ValueError(f"--format tflite needs the {' and '.join(missing)} package(s) (the optional 'tflite' "
                         f'extra): {TFLITE_INSTALL}')


@contextlib.contextmanager
def _quiet_converter() -> Iterator[None]:
    """litert-torch prints a progress line per conversion step unless told not to (an environment variable)."""
    before = os.environ.get('LITERT_TORCH_SHOW_PROGRESS')
    os.environ['LITERT_TORCH_SHOW_PROGRESS'] = 'n'
    try:
        yield
    finally:
        if before is None:
            os.environ.pop('LITERT_TORCH_SHOW_PROGRESS', None)
        else:
            os.environ['LITERT_TORCH_SHOW_PROGRESS'] = before


def write_tflite(model: nn.Module, example: torch.Tensor, out: Path) -> None:
    """Convert ``model`` (an fp32 module taking NCHW images), traced on the first image of ``example``, to a
    ``.tflite`` at ``out`` (NCHW input, batch 1, resizable), written atomically."""
    require_tflite()
    import litert_torch  # optional dependency (the 'tflite' extra): loaded only for this format

    with _quiet_converter():
        with torch.no_grad():
            converted = litert_torch.convert(model.eval(), (example[:1].contiguous(),))
        with atomic_path(out) as tmp:
            converted.export(str(tmp))


def run_tflite(path: Path, images: torch.Tensor) -> torch.Tensor:
    """Run the ``.tflite`` at ``path`` on NCHW ``images`` with the LiteRT interpreter (resized to their batch)."""
    from ai_edge_litert.interpreter import Interpreter  # optional dependency (the 'tflite' extra)

    interpreter = Interpreter(model_path=str(path))
    feed = images.contiguous().numpy()
    index = interpreter.get_input_details()[0]['index']
    interpreter.resize_tensor_input(index, list(feed.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, feed)
    interpreter.invoke()
    return torch.from_numpy(interpreter.get_tensor(interpreter.get_output_details()[0]['index']).copy())


def tflite_runtime() -> str:
    """What converted and runs the file, for the export's contract."""
    return f"litert-torch {version('litert-torch')}, LiteRT interpreter (ai-edge-litert {version('ai-edge-litert')})"
