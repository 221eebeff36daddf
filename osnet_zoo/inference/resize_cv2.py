"""OpenCV's bilinear resize of uint8 images, in torch: what ``cv2.resize(img, (W, H), interpolation=INTER_LINEAR)``
computes, and so what boxmot 25.0.0's ReID backends feed the network (``FeatureExtractor(resize='cv2')``).

OpenCV resizes 8-bit images in fixed point, not in floating point: each output pixel samples the source at
half-pixel centres (``(d + 0.5) * scale - 0.5``, clamped to the edge pixels), the two horizontal and the two
vertical weights are rounded to multiples of 1/2048, the horizontal pass keeps the exact integer sums, and the
vertical pass drops 4 bits before multiplying, keeps the high 16 bits of each product and rounds the sum to
uint8 (its vectorised path, which covers whole rows of the usual crop widths). Reproducing those steps gives the
same pixels as OpenCV where a plain float bilinear resize rounded to uint8 differs by 1 in about 1 pixel in 8
(tests/test_integrations.py compares both with cv2 itself).
"""
from __future__ import annotations

from typing import Tuple

import torch

__all__ = ['cv2_linear_taps', 'resize_like_cv2']

_COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE: 11 fractional bits


def cv2_linear_taps(src: int, dst: int, horizontal: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                   torch.Tensor]:
    """For one axis resized from ``src`` to ``dst`` pixels: the two source indices of each output pixel and
    their fixed-point weights (int64), as OpenCV computes them for INTER_LINEAR. Past the edge, OpenCV gives
    the horizontal axis the edge pixel alone (weights 2048, 0) but keeps the vertical weights and repeats the
    edge row under both."""
    scale = src / dst  # OpenCV: 1 / (dst / src), in double
    pos = ((torch.arange(dst, dtype=torch.float64) + 0.5) * scale - 0.5).to(torch.float32)  # then float
    first = torch.floor(pos)
    frac = pos - first
    first = first.to(torch.int64)
    if horizontal:
        outside = (first < 0) | (first >= src - 1)
        frac = torch.where(outside, torch.zeros_like(frac), frac)
    second = (first + 1).clamp(0, src - 1)
    first = first.clamp(0, src - 1)
    w0 = torch.round((1 - frac) * _COEF_SCALE).to(torch.int64)  # saturate_cast<short>: round half to even
    w1 = torch.round(frac * _COEF_SCALE).to(torch.int64)
    return first, second, w0, w1


def resize_like_cv2(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(N, C, h, w) pixels 0-255 (integer valued: a uint8 image) -> float32 (N, C, H, W), the pixels of
    ``cv2.resize`` with INTER_LINEAR on the uint8 image."""
    h, w = x.shape[-2:]
    out_h, out_w = size
    device = x.device
    pixels = x.round().to(torch.int64)
    x0, x1, a0, a1 = (t.to(device) for t in cv2_linear_taps(w, out_w, horizontal=True))
    rows = pixels[..., x0] * a0 + pixels[..., x1] * a1  # exact integer sums, scaled by 2048
    y0, y1, b0, b1 = (t.to(device) for t in cv2_linear_taps(h, out_h, horizontal=False))
    top = ((rows[..., y0, :] >> 4) * b0[:, None]) >> 16  # the vectorised vertical pass: v_mul_hi on >> 4 values
    bottom = ((rows[..., y1, :] >> 4) * b1[:, None]) >> 16
    return ((top + bottom + 2) >> 2).clamp_(0, 255).to(torch.float32)
