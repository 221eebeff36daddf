"""The one precision table: the names ``--precision`` takes everywhere and the dtype each stands for.

Inference casts the model to the dtype (``resolve_dtype``); training and evaluation run fp32 weights under
autocast to it (``autocast_dtype``: None for fp32); ``int8`` is CPU inference only. Imports nothing from osnet_zoo.
"""
from __future__ import annotations

from typing import Dict, Optional, Union

import torch

__all__ = ['PRECISIONS', 'INFERENCE_PRECISIONS', 'QUANTIZED', 'resolve_dtype', 'autocast_dtype']

PRECISIONS: Dict[str, torch.dtype] = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
# the quantized precisions: inference only (FeatureExtractor, extract, evaluate, export --int8), on the CPU, by a
# quantized model (osnet_zoo.inference.quantize); the dtype is the float32 it takes and returns (nothing autocasts)
QUANTIZED: Dict[str, torch.dtype] = {'int8': torch.float32}
INFERENCE_PRECISIONS = (*PRECISIONS, *QUANTIZED)


def resolve_dtype(precision: Union[str, torch.dtype]) -> torch.dtype:
    """'fp32' | 'bf16' | 'fp16' (or a torch dtype among those) -> torch dtype; 'int8' -> float32, the input and
    output dtype of the quantized model."""
    if isinstance(precision, torch.dtype):
        if precision not in PRECISIONS.values():
            raise ValueError(f'Unsupported precision {precision}; expected one of {list(PRECISIONS)}.')
        return precision
    if precision in QUANTIZED:
        return QUANTIZED[precision]
    if precision not in PRECISIONS:
        raise ValueError(f'Unknown precision {precision!r}; expected one of {list(INFERENCE_PRECISIONS)}.')
    return PRECISIONS[precision]


def autocast_dtype(precision: str) -> Optional[torch.dtype]:
    """The autocast dtype of ``precision`` ('fp32' -> None: no autocast; 'bf16', 'fp16')."""
    if precision in QUANTIZED:
        raise ValueError(f'precision {precision!r} is a quantized model for inference on the CPU (FeatureExtractor, '
                         'extract, evaluate, export --int8); training and autocast take fp32, bf16 or fp16.')
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {list(PRECISIONS)}, got {precision!r}.')
    return None if precision == 'fp32' else PRECISIONS[precision]
