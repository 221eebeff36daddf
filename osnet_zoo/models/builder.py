"""The one model builder: every command, export, labelled evaluation, training and publishing build their
networks here (``timm.create_model`` is called here and nowhere else in the package, but for the factories
timm's own contract calls; tests/test_structure.py counts them).

``create_model`` takes a timm name (an architecture, or ``name.tag`` for a pretrained tag), a
``local-dir:FOLDER`` model folder, architecture arguments, and a checkpoint (a file or a state dict) to load.
``osnet_zoo.inference.build_embedding_model`` builds on it for an embedding, reading a run folder's record.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Union

import timm
import torch.nn as nn

from ..weights import load_osnet_checkpoint

__all__ = ['create_model']


def create_model(model: str, num_classes: Optional[int] = 0, pretrained: bool = False,
                 checkpoint: Union[str, os.PathLike, Mapping[str, Any], None] = None,
                 model_args: Optional[Dict[str, Any]] = None, strict: bool = False, **kwargs: Any) -> nn.Module:
    """The timm model ``model`` (``name.tag`` for a pretrained tag, with ``pretrained``) with ``num_classes``
    outputs (0: the embedding; None: its pretrained config's, e.g. the classifier of a tag's weights) built
    with the architecture arguments ``model_args`` (and timm's ``kwargs``). With ``checkpoint`` (a file or a
    state dict) its weights are loaded with ``load_osnet_checkpoint``: with ``strict=False`` only a classifier
    (of another class count) may be left out, and keeps its fresh initialisation; ``strict=True`` demands every
    key. Arguments the architecture does not take are a ValueError naming them."""
    if num_classes is not None:
        kwargs['num_classes'] = num_classes
    try:
        net = timm.create_model(model, pretrained=pretrained, **dict(model_args or {}), **kwargs)
    except TypeError as e:
        raise ValueError(f'{model.split(".")[0]} does not take the arguments {model_args} (--model-args): {e}') \
            from None
    if checkpoint is not None:
        load_osnet_checkpoint(net, checkpoint, strict=strict)
    return net
