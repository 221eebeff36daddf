"""Loading a checkpoint file or state_dict into an OSNet model, strictly: the checkpoint layouts OSNet weights
come in (osnet_zoo, torchreid, torchreid-AIN) converted to the model's keys, every key, shape and value checked.

Only the model's ``state_dict()`` and ``get_classifier()`` are read, so nothing here imports
``osnet_zoo.models``: the models import this module (timm's loader calls :func:`checkpoint_filter_fn`).
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, List, Mapping, Sequence, Union

import torch
import torch.nn as nn

from .io import CheckpointError, read_checkpoint, unwrap_state_dict

__all__ = ['load_osnet_checkpoint', 'checkpoint_filter_fn']

_logger = logging.getLogger(__name__)


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


# Layout conversion for checkpoints of the reference implementation (torchreid).
# Classic layout (osnet_x*, osnet_ibn_x1_0): streams conv2a / conv2b.i / conv2c.i / conv2d.i, stage
# transition as the stage's last child, and `IN` meaning IN after the residual add.
# AIN layout (osnet_ain_x*): streams conv2.t.layers.i, transitions pool2 / pool3, and `IN` meaning IN
# on the conv3 output (replacing conv3.bn).
_CLASSIC_STREAMS = {'conv2a': 0, 'conv2b': 1, 'conv2c': 2, 'conv2d': 3}
_LITE_RENAME = {'conv1': 'conv_pw', 'conv2': 'conv_dw', 'bn': 'bn'}


def _detect_layout(keys: Sequence[str]) -> str:
    if any('.streams.' in k for k in keys):
        return 'native'
    if any('.layers.' in k or k.startswith(('pool2.', 'pool3.')) for k in keys):
        return 'ain'
    if any(re.match(r'conv[234]\.\d+\.conv2[abcd]\.', k) for k in keys):
        return 'classic'
    raise KeyError(
        'Not an OSNet checkpoint: found none of the keys of a known layout (osnet_zoo `conv2.0.streams.*`, '
        'torchreid `conv2.0.conv2a.*` or torchreid-AIN `conv2.0.conv2.0.layers.*`). First keys: '
        f'{list(keys)[:8]}')


def _convert_key(key: str, layout: str) -> str:
    if layout == 'native':
        return key
    if layout == 'classic':
        m = re.match(r'(conv[23])\.2\.0\.(.*)$', key)  # transition stored as the stage's last child
        if m:
            return f'pool{m.group(1)[-1]}.0.{m.group(2)}'
        m = re.match(r'(conv[234]\.\d+)\.(conv2[abcd])(?:\.(\d+))?\.(conv1|conv2|bn)\.(.*)$', key)
        if m:
            prefix, stream, layer, part, rest = m.groups()
            return f'{prefix}.streams.{_CLASSIC_STREAMS[stream]}.{layer or 0}.{_LITE_RENAME[part]}.{rest}'
        return re.sub(r'^(conv[234]\.\d+)\.IN\.', r'\1.norm_out.', key)
    m = re.match(r'(conv[234]\.\d+)\.conv2\.(\d+)\.layers\.(\d+)\.(conv1|conv2|bn)\.(.*)$', key)
    if m:
        prefix, stream, layer, part, rest = m.groups()
        return f'{prefix}.streams.{stream}.{layer}.{_LITE_RENAME[part]}.{rest}'
    return re.sub(r'^(conv[234]\.\d+)\.IN\.', r'\1.conv3.bn.', key)


def _fit_problems(state_dict: Mapping[str, torch.Tensor], model: nn.Module, allow_missing_classifier: bool,
                  adapt_in_chans: bool) -> List[str]:
    """Everything that keeps ``state_dict`` (model keys) from loading strictly into ``model``."""
    expected = model.state_dict()
    first_conv = 'conv1.conv.weight'
    missing = [k for k in expected if k not in state_dict and not k.endswith('num_batches_tracked')
               and not (allow_missing_classifier and k.startswith('classifier.'))]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape, bad_values = [], []
    for k, v in state_dict.items():
        if k not in expected:
            continue
        want = expected[k]
        if v.shape != want.shape and not (
                adapt_in_chans and k == first_conv and v.dim() == 4 and v.shape[1] == 3
                and v.shape[0] == want.shape[0] and v.shape[2:] == want.shape[2:]):  # timm adapts in_chans after
            wrong_shape.append(f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(want.shape)}')
        if want.is_floating_point():
            if not v.is_floating_point():
                bad_values.append(f'{k}: {v.dtype} where the model holds {want.dtype}')
            elif not bool(torch.isfinite(v).all()):
                bad_values.append(f'{k}: NaN or inf values')
    problems = []
    if wrong_shape:
        problems.append(f'{len(wrong_shape)} shape mismatches (another width or variant?): {wrong_shape[:5]}')
    if missing:
        problems.append(f'{len(missing)} missing keys: {missing[:8]}')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected keys (another variant?): {unexpected[:8]}')
    if bad_values:
        problems.append(f'{len(bad_values)} tensors that are not finite floating-point weights: {bad_values[:5]}')
    return problems


def checkpoint_filter_fn(
        state_dict: Mapping[str, Any],
        model: nn.Module,
        drop_mismatched_classifier: bool = True,
        adapt_in_chans: bool = True,
) -> Dict[str, torch.Tensor]:
    """Convert a reference (torchreid, either layout) or osnet_zoo checkpoint to this model's keys, strictly.

    Every key of the model must be in the checkpoint with the model's shape, nothing may be left over, and
    every floating-point tensor must be floating point and finite: whatever ``num_classes`` is, only the
    classifier may be absent or dropped (BatchNorm's ``num_batches_tracked`` counters, which no output
    depends on, may be absent too). A classifier whose size differs from the model's (or any classifier
    when ``num_classes=0``) is dropped with a log message; with ``drop_mismatched_classifier=False`` that,
    or a missing classifier, is an error. ``adapt_in_chans``: a 3-channel first conv may meet a model of
    other ``in_chans`` (timm's loader adapts it after this filter).

    Raises:
        CheckpointError: naming the missing, unexpected, misshapen or non-finite keys.
    """
    state_dict = unwrap_state_dict(state_dict)
    try:
        layout = _detect_layout(list(state_dict))
    except KeyError as e:
        raise CheckpointError(e.args[0]) from None
    out = {_convert_key(k, layout): v for k, v in state_dict.items()}
    cls_w = out.get('classifier.weight')
    model_cls = model.get_classifier()
    model_classes = model_cls.out_features if isinstance(model_cls, nn.Linear) else 0
    if cls_w is not None and cls_w.shape[0] != model_classes:
        if not drop_mismatched_classifier:
            raise CheckpointError(
                f'Checkpoint classifier has {cls_w.shape[0]} classes but the model has {model_classes}; '
                'create the model with the matching num_classes, or allow dropping the classifier.')
        _logger.info('Dropping the checkpoint classifier (%d classes): the model has num_classes=%d.',
                     cls_w.shape[0], model_classes)
        out.pop('classifier.weight')
        out.pop('classifier.bias', None)
    problems = _fit_problems(out, model, drop_mismatched_classifier, adapt_in_chans)
    if problems:
        arch = getattr(model, 'pretrained_cfg', {}).get('architecture') or type(model).__name__
        raise CheckpointError(f'the checkpoint does not fit this model ({arch}): ' + '; '.join(problems))
    return out
