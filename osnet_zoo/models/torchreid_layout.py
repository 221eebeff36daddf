"""Writing OSNet weights in the reference (torchreid) key layout: the inverse of ``checkpoint_filter_fn``.

Tracking libraries (boxmot, and the trackers built on torchreid's ``load_pretrained_weights``) take a ``.pt``
file holding a torchreid checkpoint: ``{'state_dict': ..., ...}``, the shape torchreid's own ``save_checkpoint``
writes. Both unwrap ``state_dict`` and load only what is in it, so the other entries may say what the file is
(boxmot 25.0.0 reads ``model_name`` and ``num_classes`` there; a flat state dict with a ``model_name`` string in
it is refused by its strict deployment loader as an unexpected key). :func:`torchreid_checkpoint` builds that
mapping for any of the nine reference variants:

* ``state_dict``: the tensors in the reference layout of the variant (the classic ``osnet_x*`` /
  ``osnet_ibn_x1_0`` layout or the ``osnet_ain_x*`` one; see ``models/osnet.py``), classifier optional;
* ``model_name``: the architecture (e.g. ``'osnet_x0_25'``);
* ``num_classes``: the classifier size, only when the classifier is written.

A model whose structure the reference cannot express (another width, a NAS genotype's IN placement, another
embedding size) is refused with an error naming the difference.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, Mapping, Optional, Union

import torch
import torch.nn as nn

from ..files import atomic_torch_save
from ..weights.io import unwrap_state_dict
from .osnet import OSNET_ARCHS, OSNet

__all__ = ['REFERENCE_ARCH_DEFAULTS', 'reference_layout', 'reference_architecture', 'to_torchreid_state_dict',
           'torchreid_checkpoint', 'save_torchreid_checkpoint']

# The fixed hyper-parameters of the reference implementation (every variant).
REFERENCE_ARCH_DEFAULTS = dict(layers=(2, 2, 2), num_streams=4, bottleneck_reduction=4, gate_reduction=16,
                               feature_dim=512)
_CLASSIC_STREAM_NAMES = ('conv2a', 'conv2b', 'conv2c', 'conv2d')
_LITE_PARTS = {'conv_pw': 'conv1', 'conv_dw': 'conv2', 'bn': 'bn'}
_STREAM_KEY = re.compile(r'(conv[234]\.\d+)\.streams\.(\d+)\.(\d+)\.(conv_pw|conv_dw|bn)\.(.*)$')


def reference_layout(architecture: str) -> str:
    """'ain' for ``osnet_ain_*``, 'classic' for the other reference variants."""
    if architecture not in OSNET_ARCHS:
        raise ValueError(f'{architecture!r} has no reference (torchreid) layout; expected one of '
                         f'{sorted(OSNET_ARCHS)}.')
    return 'ain' if architecture.startswith('osnet_ain_') else 'classic'


def _expected_arch(architecture: str) -> Dict[str, Any]:
    arch = dict(REFERENCE_ARCH_DEFAULTS)
    arch.update(OSNET_ARCHS[architecture])
    return {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in arch.items()}


def reference_architecture(model: OSNet) -> str:
    """The reference variant ``model`` is built as (from its structure, not its name); ValueError if none."""
    arch = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in model.arch.items()}
    for name in OSNET_ARCHS:
        expected = _expected_arch(name)
        if all(arch.get(k) == v for k, v in expected.items()):
            return name
    raise ValueError(
        f'This OSNet (channels={arch.get("channels")}, block_norms={arch.get("block_norms")}, '
        f'conv1_in={arch.get("conv1_in")}, feature_dim={arch.get("feature_dim")}) is none of the reference '
        f'variants {sorted(OSNET_ARCHS)}: the torchreid layout cannot hold it (keep it as safetensors).')


def _block_norm(key: str, block_norms: tuple, layers: tuple) -> Optional[str]:
    m = re.match(r'conv([234])\.(\d+)\.', key)
    if not m:
        return None
    stage, index = int(m.group(1)) - 2, int(m.group(2))
    return block_norms[sum(layers[:stage]) + index]


def _reference_key(key: str, layout: str, norm: Optional[str]) -> str:
    m = _STREAM_KEY.match(key)
    if m:
        prefix, stream, layer, part, rest = m.groups()
        if layout == 'ain':
            return f'{prefix}.conv2.{stream}.layers.{layer}.{_LITE_PARTS[part]}.{rest}'
        name = _CLASSIC_STREAM_NAMES[int(stream)]
        # the reference's first stream is one Lite 3x3, not a Sequential: no layer index
        index = '' if name == 'conv2a' else f'.{layer}'
        return f'{prefix}.{name}{index}.{_LITE_PARTS[part]}.{rest}'
    if layout == 'classic':
        m = re.match(r'pool([23])\.0\.(.*)$', key)  # the transition is the stage's last child there
        if m:
            return f'conv{m.group(1)}.2.0.{m.group(2)}'
        return re.sub(r'^(conv[234]\.\d+)\.norm_out\.', r'\1.IN.', key)
    if norm == 'in_in':  # AIN: the affine IN on the conv3 output is called IN
        return re.sub(r'^(conv[234]\.\d+)\.conv3\.bn\.', r'\1.IN.', key)
    return key


def _reference_order(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    # The reference registers a block's IN last (after downsample): keep its state_dict order.
    groups: Dict[str, int] = {}

    def rank(item):
        position, key = item
        m = re.match(r'(conv[234]\.\d+)\.', key)
        block = m.group(1) if m else key
        first = groups.setdefault(block, position)
        return first, bool(m) and key.startswith(f'{block}.IN.'), position

    ordered = sorted(enumerate(state_dict), key=rank)
    return {key: state_dict[key] for _, key in ordered}


def to_torchreid_state_dict(
        state_dict: Mapping[str, Any],
        architecture: str,
        classifier: bool = True,
) -> Dict[str, torch.Tensor]:
    """Our (native) OSNet state dict -> the reference layout of ``architecture``.

    ``classifier=False`` leaves the classifier out (a tracker only needs the embedding). Keys that the
    reference layout has no place for (e.g. an ``in_out`` IN in an AIN variant) raise ValueError.
    """
    layout = reference_layout(architecture)
    expected = _expected_arch(architecture)
    block_norms, layers = expected['block_norms'], expected['layers']
    tensors = unwrap_state_dict(state_dict)
    out: Dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if key.startswith('classifier.') and not classifier:
            continue
        if '.norm_out.' in key and layout == 'ain':
            raise ValueError(f'{key}: an IN after the residual add has no place in the {architecture} '
                             'reference layout.')
        out[_reference_key(key, layout, _block_norm(key, block_norms, layers))] = value
    return _reference_order(out)


def torchreid_checkpoint(
        model: nn.Module,
        architecture: Optional[str] = None,
        classifier: bool = True,
) -> Dict[str, Any]:
    """The mapping a tracker loads: ``state_dict`` (the reference layout), ``model_name`` and (with a
    classifier) ``num_classes``. ``architecture`` defaults to the variant the model's structure matches."""
    if not isinstance(model, OSNet):
        raise TypeError(f'torchreid_checkpoint needs an OSNet model, got {type(model).__name__}.')
    found = reference_architecture(model)
    if architecture is not None and architecture != found:
        raise ValueError(f'The model is built as {found}, not {architecture}.')
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state_dict = to_torchreid_state_dict(sd, found, classifier)
    checkpoint: Dict[str, Any] = {'state_dict': state_dict, 'model_name': found}
    if classifier and 'classifier.weight' in state_dict:
        checkpoint['num_classes'] = int(state_dict['classifier.weight'].shape[0])
    return checkpoint


def save_torchreid_checkpoint(
        model: nn.Module,
        path: Union[str, os.PathLike],
        architecture: Optional[str] = None,
        classifier: bool = True,
) -> Dict[str, Any]:
    """Write :func:`torchreid_checkpoint` to ``path`` (a ``.pt`` file, atomically); return it.

    The file holds only tensors, strings and ints: ``torch.load(weights_only=True)`` reads it.
    """
    if not str(path).endswith('.pt'):
        raise ValueError(f'{path}: a torchreid checkpoint for trackers ends in .pt (boxmot picks its PyTorch '
                         'backend by that suffix).')
    checkpoint = torchreid_checkpoint(model, architecture, classifier)
    atomic_torch_save(checkpoint, path)
    return checkpoint
