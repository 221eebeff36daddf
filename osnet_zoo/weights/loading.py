"""Loading a checkpoint file or state_dict into an OSNet model, strictly (the model-dependent part of weights)."""
from __future__ import annotations

import os
from typing import Any, Mapping, Union

import torch

from ..models.osnet import checkpoint_filter_fn
from .io import CheckpointError, read_checkpoint

__all__ = ['load_osnet_checkpoint']


def load_osnet_checkpoint(
        model: torch.nn.Module,
        checkpoint: Union[str, os.PathLike, Mapping[str, Any]],
        strict: bool = True,
) -> torch.nn.Module:
    """Load a checkpoint of any supported layout (osnet_zoo, torchreid, torchreid-AIN, trainer checkpoint,
    pycls ``.pyth``) into an OSNet ``model``.

    Every backbone key must be present with the model's shape and finite floating-point values, and no key
    may be left over. ``strict``: the classifier must match the model's too; otherwise a classifier of
    another size (or none) is allowed and the model keeps its own.

    Raises:
        CheckpointError: naming the file and the missing, unexpected, misshapen or non-finite keys.
    """
    if not isinstance(checkpoint, (Mapping, str, os.PathLike)):
        raise TypeError(f'checkpoint must be a file path or a state_dict mapping, got {type(checkpoint).__name__}.')
    source = 'state_dict' if isinstance(checkpoint, Mapping) else str(checkpoint)
    raw = checkpoint if isinstance(checkpoint, Mapping) else read_checkpoint(checkpoint)
    try:
        state_dict = checkpoint_filter_fn(raw, model, drop_mismatched_classifier=not strict, adapt_in_chans=False)
    except CheckpointError as e:
        raise CheckpointError(f'{source}: {e}') from e
    result = model.load_state_dict(state_dict, strict=False)
    leftover = [k for k in result.missing_keys
                if not (k.startswith('classifier.') or k.endswith('num_batches_tracked'))]
    if leftover or result.unexpected_keys:  # checkpoint_filter_fn checked this; a guard, not a second policy
        raise CheckpointError(f'{source}: does not fit this model: {leftover + result.unexpected_keys}')
    return model
