"""Running OSNet through onnxruntime (CPU): the fastest CPU path we measured (see benchmarks/RESULTS.md)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn

from .export import INPUT_NAME, OUTPUT_NAME, export_model

__all__ = ['OnnxRuntimeModel']


class OnnxRuntimeModel:
    """An embedding model exported to ONNX (BN folded, dynamic batch, fp32; checked against PyTorch by
    ``osnet_zoo.export``) and run by an onnxruntime CPU session. Call it with a float32 NCHW batch."""

    def __init__(self, model: nn.Module, threads: Optional[int] = None,
                 path: Union[str, os.PathLike, None] = None, spinning: bool = True):
        """
        Args:
            model: the embedding model (an nn.Module returning (N, D) features).
            threads: onnxruntime intra-op threads (default: onnxruntime's choice, one per physical core).
            path: where to write the .onnx file (default: a temporary directory, kept while this lives).
            spinning: let onnxruntime's worker threads busy-wait between and after runs. Lowest latency
                for back-to-back runs; turn it off when other CPU work (preprocessing) runs between calls,
                which the spinning threads would otherwise slow down (see benchmarks/RESULTS.md).
        """
        import onnxruntime as ort  # optional dependency (the export extra)
        if path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix='osnet_zoo_onnx_')
            path = Path(self._tmpdir.name) / 'model.onnx'
        self.path = Path(path)
        self.contract = export_model(model, self.path, fmt='onnx', dynamic_batch=True)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry('session.intra_op.allow_spinning', '1' if spinning else '0')
        self.session = ort.InferenceSession(str(self.path), options, providers=['CPUExecutionProvider'])
        self.input_name, self.output_name = INPUT_NAME, OUTPUT_NAME

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().to('cpu', torch.float32).contiguous()
        return torch.from_numpy(self.session.run([self.output_name], {self.input_name: x.numpy()})[0])
