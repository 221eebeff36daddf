"""The attribute picture of the OSNet paper's Fig. 7: each image with the predicted likelihood of each of its
ground-truth attributes, green where the prediction at the threshold (50%) is right, red where it is not."""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .plots import LINE_HEIGHT, fit_text, label_font

__all__ = ['ground_truth_likelihoods', 'attribute_figure', 'GREEN', 'RED']

GREEN = (0, 140, 0)
RED = (200, 0, 0)


def ground_truth_likelihoods(probabilities: Sequence[float], labels: Sequence[float], names: Sequence[str],
                             threshold: float = 0.5) -> List[Dict[str, object]]:
    """For each attribute the image has (label 1): its name, predicted probability and whether the
    prediction is right (probability >= ``threshold``)."""
    return [dict(attribute=names[a], probability=float(p), correct=bool(p >= threshold))
            for a, (p, y) in enumerate(zip(probabilities, labels)) if y >= 0.5]


def attribute_figure(images: Sequence[np.ndarray], rows: Sequence[List[Dict[str, object]]], cell_width: int = 160,
                     image_height: int = 192, pad: int = 6) -> Image.Image:
    """A row of panels: each image (HWC uint8, scaled to ``image_height``) above its lines
    ``'<attribute>: <probability>%'`` coloured by ``correct``."""
    font = label_font()
    lines = max((len(r) for r in rows), default=0)
    height = pad + image_height + pad + lines * LINE_HEIGHT + pad
    canvas = Image.new('RGB', (pad + len(images) * (cell_width + pad), height), 'white')
    draw = ImageDraw.Draw(canvas)
    for i, (image, row) in enumerate(zip(images, rows)):
        x = pad + i * (cell_width + pad)
        img = Image.fromarray(image)
        w = min(cell_width, max(1, round(img.width * image_height / max(img.height, 1))))
        canvas.paste(img.resize((w, image_height)), (x + (cell_width - w) // 2, pad))
        for j, entry in enumerate(row):
            text = fit_text(draw, f"{entry['attribute']}: {100 * float(entry['probability']):.1f}%", cell_width, font)
            draw.text((x, 2 * pad + image_height + j * LINE_HEIGHT), text, font=font,
                      fill=GREEN if entry['correct'] else RED)
    return canvas
