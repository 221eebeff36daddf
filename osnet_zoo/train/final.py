"""The trained model of a run, as a folder ``timm.create_model('local-dir:FOLDER', pretrained=True)`` rebuilds.

OSNet weights are written by ``osnet_zoo.models.folder`` (a forward check after the round trip and a model
card), as the zoo's conversions are, without the publishing tools; any other timm model (a baseline backbone:
``resnet50``, ``mobilenetv2_100``) is written in timm's own layout (model.safetensors + config.json with its architecture arguments and preprocessing).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch.nn as nn
from timm.models._hub import save_config_for_hf

from ..files import atomic_path, atomic_save_safetensors, atomic_write_json
from ..models.osnet import OSNET_ARCHS
from ..models.folder import write_model_folder

__all__ = ['save_model_folder']


def save_model_folder(model: nn.Module, architecture: str, out_dir: Path, input_size: Tuple[int, int],
                      mean: Sequence[float], std: Sequence[float], model_args: Optional[Dict[str, Any]] = None,
                      distance: Optional[str] = None, results: Optional[Mapping[str, Any]] = None,
                      notes: Optional[str] = None, crop_pct: float = 1.0, origin: Optional[str] = None) -> None:
    """Write ``model`` (built as ``architecture`` with ``model_args``) to ``out_dir``: model.safetensors and
    config.json recording the input size, mean/std and distance it was trained with (and, for OSNet, a model
    card with ``results``, ``notes`` and ``origin``, what trained it). ``crop_pct`` < 1: the test images are
    resized to input / crop_pct
    and centre-cropped (timm's 'squash' crop mode; the ImageNet runs), which config.json then says."""
    out_dir = Path(out_dir)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if architecture in OSNET_ARCHS:
        write_model_folder(state, architecture, 'trained', out_dir, check_size=input_size, input_size=input_size,
                           mean=tuple(mean), std=tuple(std), distance=distance, model_args=model_args,
                           results=results, notes=notes, origin=origin)
        if crop_pct < 1.0:
            config = json.loads((out_dir / 'config.json').read_text())
            config['pretrained_cfg'].update(crop_pct=crop_pct, crop_mode='squash')
            atomic_write_json(out_dir / 'config.json', config)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(state, out_dir / 'model.safetensors', metadata={'format': 'pt'})
    model_config = dict(distance=distance) if distance else None
    data_config = dict(input_size=(3, *input_size), mean=tuple(mean), std=tuple(std), crop_pct=crop_pct,
                       crop_mode='squash')  # re-ID crops are resized whole (squash), ImageNet's centre-cropped
    with atomic_path(out_dir / 'config.json') as tmp:
        save_config_for_hf(model, tmp, model_config=model_config, model_args=dict(model_args or {}) or None,
                           data_config=data_config)
