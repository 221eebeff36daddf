"""User-facing factories: the OSNet-IBN and OSNet-AIN families at any width, the model a NAS genotype
describes, and the ablation models of the OSNet paper's Table 5."""
from __future__ import annotations

from typing import Any

import timm

from .genotype import GenotypeLike, genotype_args
from .osnet import OSNET_ARCHS, TABLE5_MODELS, OSNet, osnet_arch

__all__ = ['osnet_ibn', 'osnet_ain', 'create_osnet', 'build_model_from_genotype', 'table5_model']

_WIDTH_SUFFIX = {1.0: 'x1_0', 0.75: 'x0_75', 0.5: 'x0_5', 0.25: 'x0_25'}


def create_osnet(variant: str, width: float = 1.0, pretrained: bool = False, **kwargs: Any) -> OSNet:
    """Build ``variant`` ('osnet', 'osnet_ibn' or 'osnet_ain') at width β.

    Widths with a registered timm name (1.0, 0.75, 0.5, 0.25 — only 1.0 for IBN) go through
    ``timm.create_model`` and can load pretrained weights; other widths build an untrained model.
    """
    name = f'{variant}_{_WIDTH_SUFFIX[width]}' if width in _WIDTH_SUFFIX else None
    if name in OSNET_ARCHS:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    if pretrained:
        known = sorted(n for n in OSNET_ARCHS if n.startswith(variant + '_x'))
        raise ValueError(f'No pretrained weights for {variant} at width {width}; pretrained variants: {known}.')
    return OSNet(**osnet_arch(width, variant, **kwargs))


def osnet_ibn(width: float = 1.0, pretrained: bool = False, **kwargs: Any) -> OSNet:
    """OSNet-IBN (IN in conv1 and after the residual add of both conv2 blocks); width 1.0 by default."""
    return create_osnet('osnet_ibn', width, pretrained, **kwargs)


def osnet_ain(width: float = 1.0, pretrained: bool = False, **kwargs: Any) -> OSNet:
    """OSNet-AIN (the searched instance-norm placement); width 1.0 by default."""
    return create_osnet('osnet_ain', width, pretrained, **kwargs)


def build_model_from_genotype(path_or_dict: GenotypeLike, width: float = 1.0, **kwargs: Any) -> OSNet:
    """An untrained ``OSNet`` with the genotype's IN placement at width β (``kwargs`` go to ``OSNet``,
    e.g. ``num_classes``). ``build_model_from_genotype('osnet_ain')`` has the structure and parameters of
    ``timm.create_model('osnet_ain_x1_0')``."""
    arch = osnet_arch(width, 'osnet', **genotype_args(path_or_dict))
    arch.update(kwargs)
    return OSNet(**arch)


def table5_model(name: str, width: float = 1.0, **kwargs: Any) -> OSNet:
    """An untrained ablation model of the OSNet paper's Table 5 (``name`` a key of ``TABLE5_MODELS``, e.g.
    'standard_conv' or 't2'), at width β (the paper's is 1.0); ``kwargs`` go to ``OSNet`` (e.g. ``num_classes``).
    At a registered width it is ``timm.create_model('osnet_x1_0', **TABLE5_MODELS[name]['model_args'])``."""
    if name not in TABLE5_MODELS:
        raise KeyError(f'Unknown Table 5 model {name!r}; expected one of {list(TABLE5_MODELS)}.')
    return create_osnet('osnet', width, **{**TABLE5_MODELS[name]['model_args'], **kwargs})
