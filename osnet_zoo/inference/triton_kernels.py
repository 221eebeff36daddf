"""A Triton kernel for the depthwise half of OSNet's Lite 3x3: depthwise 3x3 + bias + ReLU, channels_last.

Why: the depthwise convs are memory-bound; the training benchmark (benchmarks/RESULTS.md) found bf16
channels_last slower than fp32 NCHW and points at the depthwise kernels chosen for that layout; and
torch.compile cannot fuse the bias and ReLU into an external cuDNN call. One pass here reads the input once
(the 3x3 neighbourhood comes from cache) and writes the activated output once.

``depthwise3x3_bias_relu`` falls back to PyTorch (same result) wherever the kernel does not apply: no
Triton, a tensor not on a CUDA device, or not channels_last. With ``TRITON_INTERPRET=1`` set before
Triton is imported, the kernel runs on CPU tensors (slowly): that is how the tests check it without a GPU.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

__all__ = ['depthwise3x3_bias_relu', 'depthwise3x3_bias_relu_reference']

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None

_INTERPRET = os.environ.get('TRITON_INTERPRET') == '1'


def depthwise3x3_bias_relu_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The PyTorch definition: relu(conv2d(x, weight (C, 1, 3, 3), bias, padding=1, groups=C))."""
    return F.relu(F.conv2d(x, weight, bias, padding=1, groups=x.shape[1]))


if triton is not None:
    @triton.jit
    def _dw3x3_bias_relu_nhwc(x_ptr, w_ptr, b_ptr, y_ptr, H, W, C,
                              BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        # one program: one image row (n, h), BLOCK_W columns, BLOCK_C channels; element (n, h, w, c) of a
        # channels_last tensor lives at ((n * H + h) * W + w) * C + c
        pid_nh = tl.program_id(0)
        pid_w = tl.program_id(1)
        pid_c = tl.program_id(2)
        h = pid_nh % H
        row0 = (pid_nh - h).to(tl.int64)  # n * H
        offs_w = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)
        offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        acc = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
        for kh in tl.static_range(3):
            hh = h + kh - 1
            row_ok = (hh >= 0) & (hh < H)
            for kw in tl.static_range(3):
                ww = offs_w + kw - 1
                mask_w = (ww >= 0) & (ww < W) & row_ok
                offsets = ((row0 + hh) * W + ww)[:, None] * C + offs_c[None, :]
                xv = tl.load(x_ptr + offsets, mask=mask_w[:, None] & mask_c[None, :], other=0.0)
                wv = tl.load(w_ptr + offs_c * 9 + (kh * 3 + kw), mask=mask_c, other=0.0)
                acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
        bv = tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
        acc = tl.maximum(acc + bv[None, :], 0.0)
        out = ((row0 + h) * W + offs_w)[:, None] * C + offs_c[None, :]
        tl.store(y_ptr + out, acc.to(y_ptr.dtype.element_ty), mask=(offs_w < W)[:, None] & mask_c[None, :])


def _kernel_applies(x: torch.Tensor) -> bool:
    if triton is None or x.dim() != 4:
        return False
    if not (x.is_cuda or _INTERPRET):
        return False
    return x.is_contiguous(memory_format=torch.channels_last)


def depthwise3x3_bias_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """relu(depthwise 3x3 conv (padding 1) + bias), fused in one Triton kernel for channels_last CUDA
    tensors; PyTorch otherwise. ``weight`` is (C, 1, 3, 3), ``bias`` (C,)."""
    if not _kernel_applies(x):
        return depthwise3x3_bias_relu_reference(x, weight, bias)
    n, c, h, w = x.shape
    y = torch.empty_like(x)  # keeps channels_last
    w_flat = weight.reshape(c, 9).contiguous()
    block_w = min(32, triton.next_power_of_2(w))
    block_c = min(64, triton.next_power_of_2(c))
    grid = (n * h, triton.cdiv(w, block_w), triton.cdiv(c, block_c))
    _dw3x3_bias_relu_nhwc[grid](x, w_flat, bias.contiguous(), y, h, w, c, BLOCK_W=block_w, BLOCK_C=block_c)
    return y
