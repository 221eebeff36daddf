"""The model behind every inference path (the extractor, export, evaluation, visualisation): the embedding
built by the one builder (:func:`osnet_zoo.models.builder.create_model`) from a name, a tag,
a checkpoint or a run folder (:func:`build_embedding_model`), and its preprocessing contract; a trained model's
own record (``run_record``) feeds both."""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, Optional, Union

import timm
import torch.nn as nn
from timm.data import resolve_data_config

from ..models.builder import create_model
from ..models.run_record import read_run_record

__all__ = ['build_embedding_model', 'resolve_preprocessing', 'DEFAULT_MODEL']

DEFAULT_MODEL = 'osnet_x1_0'  # what FeatureExtractor and extract use when given no model

# OSNet's re-ID preprocessing, used for a module that carries no timm pretrained_cfg.
_OSNET_DEFAULT_CFG = dict(input_size=(3, 256, 128), interpolation='bilinear', mean=(0.485, 0.456, 0.406),
                          std=(0.229, 0.224, 0.225), crop_pct=1.0, crop_mode='squash')


# The re-ID input of an untagged architecture whose default tag is the ImageNet classifier (osnet_ain_x0_25 ...).
_REID_INPUT = dict(input_size=(3, 256, 128), pool_size=(16, 8), crop_pct=1.0, crop_mode='squash')


def _default_tag(arch: str) -> Optional[str]:
    try:
        return timm.models.get_pretrained_cfg(arch).tag
    except (RuntimeError, AttributeError, KeyError):
        return None


def resolve_preprocessing(model: nn.Module, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The preprocessing contract of ``model``: input_size (C, H, W), interpolation, mean, std, crop_pct,
    crop_mode — from its timm ``pretrained_cfg`` (OSNet's re-ID defaults for a bare module), then
    ``overrides``. Only the squash resize (no crop, ``crop_pct`` 1) is supported: re-ID crops are resized
    whole to H x W."""
    cfg = getattr(model, 'pretrained_cfg', None)
    if not cfg or 'input_size' not in cfg:
        cfg = _OSNET_DEFAULT_CFG
    data_config = resolve_data_config(pretrained_cfg=dict(cfg))
    config = {k: data_config[k] for k in ('input_size', 'interpolation', 'mean', 'std', 'crop_pct', 'crop_mode')}
    config.update(overrides or {})
    config['input_size'] = tuple(int(v) for v in config['input_size'])
    config['mean'] = tuple(float(v) for v in config['mean'])
    config['std'] = tuple(float(v) for v in config['std'])
    if len(config['input_size']) != 3 or config['input_size'][0] != 3:
        raise ValueError(f"input_size must be (3, H, W), got {config['input_size']}.")
    if config['interpolation'] not in ('bilinear', 'bicubic', 'nearest'):
        raise ValueError(f"Unsupported interpolation {config['interpolation']!r} (bilinear, bicubic or nearest).")
    if config['crop_mode'] != 'squash' and float(config['crop_pct']) != 1.0:
        raise ValueError(f"Only the re-ID squash resize is supported (crop_pct 1.0 or crop_mode 'squash'); got "
                         f"crop_mode={config['crop_mode']!r}, crop_pct={config['crop_pct']}.")
    return config


def build_embedding_model(model: Union[str, nn.Module, None] = None, pretrained: bool = True,
                          checkpoint_path: Union[str, os.PathLike, None] = None,
                          model_args: Optional[Dict[str, Any]] = None) -> nn.Module:
    """An eval-mode module returning embeddings: the package's one model builder.

    ``model`` is a timm name (created with ``num_classes=0``; pretrained weights unless ``checkpoint_path``
    names a local checkpoint, loaded with ``load_osnet_checkpoint(strict=False)``: only the classifier may be
    dropped) or a module (copied; an OSNet with a classifier has it removed, so that it returns the embedding).
    ``model_args`` are architecture arguments for ``timm.create_model`` (e.g. ``num_streams=1``); pretrained
    weights belong to the standard architecture, so they need ``checkpoint_path`` or ``pretrained=False``.

    A trained model describes itself: when ``checkpoint_path`` (or a ``'local-dir:PATH'`` model) names a
    training run folder, its ``final/`` or ``final/model.safetensors`` (see
    :func:`~osnet_zoo.models.run_record.read_run_record`), the architecture and ``model_args`` come from its
    ``config.json`` unless given, and the module's ``pretrained_cfg`` carries the recorded input size,
    interpolation and mean/std, so :func:`resolve_preprocessing` prepares images as the run did. ``model``
    None means the run's architecture, else ``osnet_x1_0``.
    """
    record = None
    if isinstance(model, str) and model.startswith('local-dir:') and checkpoint_path is None:
        record = read_run_record(model[len('local-dir:'):])
        model = None if record is not None else model  # another local-dir folder is timm's to read
    elif checkpoint_path is not None and not isinstance(model, nn.Module):
        record = read_run_record(checkpoint_path)
    if record is not None:
        checkpoint_path = record.weights
        model = model or record.architecture
        model_args = model_args or record.model_args
    model = DEFAULT_MODEL if model is None else model
    if isinstance(model, str):
        arch = model.split('.')[0]
        if arch.startswith('osnet') and arch not in timm.list_models('osnet*'):
            raise ValueError(f'unknown model {model!r}; OSNet models: {", ".join(timm.list_models("osnet*"))}')
        if checkpoint_path is not None and not os.path.isfile(checkpoint_path):
            raise FileNotFoundError(f'checkpoint {os.fspath(checkpoint_path)} does not exist')
        if model_args and pretrained and checkpoint_path is None:
            raise ValueError(f'architecture arguments {model_args} change {arch}: give its weights with a checkpoint, '
                             'or use random weights (pretrained=False, --no-pretrained)')
        kwargs = {}
        if (checkpoint_path is not None or not pretrained) and '.' not in model and _default_tag(arch) == 'imagenet':
            # the untagged name is its ImageNet classifier (224 crop); weights from elsewhere make a re-ID embedding
            kwargs['pretrained_cfg_overlay'] = _REID_INPUT
        if checkpoint_path is not None:
            net = create_model(arch if model_args else model, checkpoint=checkpoint_path, model_args=model_args,
                               **kwargs)
        else:
            net = create_model(model, pretrained=pretrained, model_args=model_args, **kwargs)
    elif isinstance(model, nn.Module):
        if checkpoint_path is not None:
            raise ValueError('checkpoint_path is for a model name; load the checkpoint into your module '
                             'yourself (osnet_zoo.load_osnet_checkpoint).')
        net = copy.deepcopy(model)
        if getattr(net, 'num_classes', 0) and hasattr(net, 'reset_classifier'):
            net.reset_classifier(0)  # use the embedding, not the logits
    else:
        raise TypeError(f'model must be a timm model name or an nn.Module, got {type(model).__name__}.')
    if record is not None:
        # the recorded preprocessing, on the module where every inference path looks for it
        net.pretrained_cfg = {**(getattr(net, 'pretrained_cfg', None) or {}), **record.preprocessing,
                              'tag': record.tag or 'trained'}
    return net.eval()
