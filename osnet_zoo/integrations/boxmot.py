"""An appearance model for boxmot's trackers: ``BotSort(reid_model=BoxmotAppearanceModel(...))``.

boxmot 25.0.0's trackers that use appearance (BotSort, StrongSort, DeepOcSort, HybridSort, BoostTrack with
``use_embeddings=True``) accept any object with ``get_features(boxes, frame)`` as ``reid_model``: each frame they
call it with the detections' boxes and the BGR frame, and refuse (raise) when a row is not finite or has a zero
norm. This module imports nothing of boxmot; it follows that call.

What a box gives (the rule, per row, in the input order):

* its crop: the box is rounded to whole pixels and clipped to the frame, as boxmot's own backends crop, and the
  crop is squashed to the model's input size (``resize``: 'cv2', boxmot's resize, by default) and embedded;
* a box with no pixel in the frame (zero width or height after clipping: empty, inverted, entirely outside the
  frame, or with a coordinate that is not finite) gets the embedding of an all-black crop at the input size,
  which is what boxmot's own backends give such a box; every such box gets that same row;
* every row is L2-normalised; a row whose norm is zero (a network whose last ReLU silences every channel for
  that crop) is replaced by the unit vector along the first axis, so no row ever has a zero norm.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..inference.extractor import FeatureExtractor

__all__ = ['BoxmotAppearanceModel', 'ZERO_NORM']

# below this norm a row counts as zero (boxmot's trackers refuse rows with norm <= 1e-12)
ZERO_NORM = 1e-6
# the geometry columns boxmot passes: x1, y1, x2, y2 (+ conf, cls, ...); 5, 7 or 9 columns are oriented boxes
_AXIS_ALIGNED_COLUMNS = (4, 6, 8)


class BoxmotAppearanceModel:
    """osnet-zoo's ``FeatureExtractor`` in the shape of a boxmot ReID backend (``get_features(boxes, frame)``).

    >>> from boxmot import BotSort
    >>> tracker = BotSort(reid_model=BoxmotAppearanceModel('osnet_x0_25.msmt17_combineall'))
    >>> tracks = tracker.update(detections, frame)   # detections (N, 6): x1, y1, x2, y2, conf, cls; BGR frame
    """

    def __init__(self, model: Union[str, nn.Module, FeatureExtractor, None] = 'osnet_x0_25.msmt17_combineall',
                 device: Union[str, torch.device, None] = None, resize: str = 'cv2', batch_size: int = 64,
                 checkpoint_path: Union[str, os.PathLike, None] = None, **extractor_options: Any):
        """
        Args:
            model: a timm model name with its tag, a trained run (``'local-dir:runs/osnet'``), an embedding
                module, or a ready ``FeatureExtractor`` (used as it is: ``resize`` and the options are then
                its own; its channel order must be 'bgr', boxmot's frames are OpenCV's).
            device: where the network runs (default: CUDA when available). The tracker itself keeps boxmot's
                default ``device='cpu'``: boxmot refuses ``reid_model`` together with another device.
            resize: 'cv2' (default: boxmot's own resize, so the features equal those of boxmot's backends on the
                same weights) or 'antialias' (osnet-zoo's; see docs/trackers.md for what each costs).
            batch_size: crops per forward pass.
            checkpoint_path, extractor_options: passed to ``FeatureExtractor``.
        """
        if isinstance(model, FeatureExtractor):
            if model.channel_order != 'bgr':
                raise ValueError("BoxmotAppearanceModel: the FeatureExtractor given must have channel_order='bgr' "
                                 "(boxmot passes OpenCV BGR frames).")
            self.extractor = model
        else:
            self.extractor = FeatureExtractor(model, device=device, batch_size=batch_size, channel_order='bgr',
                                              resize=resize, checkpoint_path=checkpoint_path, **extractor_options)
        self._blank: Optional[torch.Tensor] = None

    @property
    def input_shape(self) -> Tuple[int, int]:
        """(height, width) crops are resized to."""
        _, h, w = self.extractor.preprocessing['input_size']
        return int(h), int(w)

    @property
    def embedding_dim(self) -> int:
        """The width of every row ``get_features`` returns."""
        return int(self._blank_row().shape[0])

    def _blank_row(self) -> torch.Tensor:
        """The unnormalised embedding of an all-black crop at the input size (computed once)."""
        if self._blank is None:
            h, w = self.input_shape
            self._blank = self.extractor(np.zeros((h, w, 3), np.uint8), normalize=False)[0].cpu()
        return self._blank

    def get_features(self, boxes: Any, frame: np.ndarray) -> np.ndarray:
        """Embeddings of ``boxes`` (N, 4: x1, y1, x2, y2 in pixels; extra columns such as conf, cls ignored) in
        ``frame`` (an OpenCV BGR HWC uint8 image): (N, D) float32, L2-normalised, one row per box in order (the
        module docstring gives the rule for boxes without pixels)."""
        boxes = np.asarray(boxes, dtype=np.float32)  # boxmot crops float32 boxes: round the same values
        if boxes.ndim == 1 and boxes.size:
            boxes = boxes.reshape(1, -1)
        if boxes.size == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        if boxes.ndim != 2 or boxes.shape[1] not in _AXIS_ALIGNED_COLUMNS:
            raise ValueError(f'BoxmotAppearanceModel: boxes of shape {boxes.shape}; expected (N, 4), (N, 6) or '
                             '(N, 8) axis-aligned rows starting x1, y1, x2, y2 (oriented boxes are not supported).')
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f'BoxmotAppearanceModel: frame must be an (H, W, 3) BGR numpy image, got '
                             f'{getattr(frame, "shape", type(frame).__name__)}.')
        features, kept = self.extractor.from_boxes(frame, boxes[:, :4], channel_order='bgr', normalize=False,
                                                   min_size=1)
        features = features.cpu().clone()  # an inference-mode tensor: a normal one to write into
        kept = kept.cpu()
        if not bool(kept.all()):
            features[~kept] = self._blank_row()
        features = torch.nan_to_num(features.float(), nan=0.0, posinf=0.0, neginf=0.0)
        norms = features.norm(dim=1)
        silent = norms <= ZERO_NORM
        features = F.normalize(features, dim=1)
        features[silent] = 0.0
        features[silent, 0] = 1.0
        return np.ascontiguousarray(features.numpy(), dtype=np.float32)

    def __call__(self, boxes: Any, frame: np.ndarray) -> np.ndarray:
        """Same as :meth:`get_features`."""
        return self.get_features(boxes, frame)

    def __repr__(self) -> str:
        return f'BoxmotAppearanceModel({self.extractor!r})'
