"""The re-ID embedding of a model, as one module: what training, evaluation and export all run."""
from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['Embedder']


class Embedder(nn.Module):
    """The embedding of ``model``: for a timm model its pre-logits features (OSNet's ``fc`` output), whatever
    its ``num_classes``; for any other module, its output. ``normalize`` L2-normalises it.
    ``with_logits=True`` returns ``(embedding, logits)`` from one forward call, so that DDP sees every
    parameter used in training."""

    def __init__(self, model: nn.Module, normalize: bool = False, with_logits: bool = False):
        super().__init__()
        self.model = model
        self.normalize = normalize
        self.with_logits = with_logits
        self.timm_head = hasattr(model, 'forward_head') and hasattr(model, 'forward_features')
        if with_logits and not self.timm_head:
            raise ValueError(f'with_logits needs a timm model (forward_features / forward_head); got '
                             f'{type(model).__name__}.')

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Images (B, 3, H, W) -> embeddings (B, D), L2-normalised with ``normalize``; with
        ``with_logits``, ``(embedding, logits (B, num_classes))`` with the embedding not normalised."""
        if self.timm_head:
            feats = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        else:
            feats = self.model(x)
        if self.with_logits:
            return feats, self.model.get_classifier()(feats)
        return F.normalize(feats, dim=1) if self.normalize else feats
