"""Scoring a classifier on a labelled split: the attribute metrics (PA-100K) or single-crop top-1 / top-5
(CIFAR, ImageNet). Training (``osnet_zoo.train.labelled``) and ``python -m osnet_zoo.evaluate --task
classification|attributes`` (its CLI) both use :func:`score_labelled`; :func:`load_classifier` loads the model
with its classifier (``evaluate`` and ``visualize attributes``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from tqdm import tqdm

from .. import distributed as du
from ..data import normalize_batch
from ..data.datasets import LabelledSplit
from ..data.labelled import CROP_PCT, build_labelled_eval_loader
from ..precision import autocast_dtype
from ..metrics.attributes import attribute_metrics
from ..metrics.classification import classification_metrics, topk_correct
from ..models.builder import create_model
from ..models.run_record import require_run_record
from ..weights import read_checkpoint
from ..weights.io import unwrap_state_dict

__all__ = ['score_labelled', 'load_classifier']


@torch.inference_mode()
def score_labelled(model: nn.Module, task: str, split: LabelledSplit, device: torch.device, size: Sequence[int],
                   mean: Sequence[float], std: Sequence[float], augmentations: Sequence[str] = (),
                   batch_size: int = 64, workers: int = 0, precision: str = 'fp32',
                   with_probabilities: bool = False, crop_pct: float = CROP_PCT) -> Dict[str, Any]:
    """``model``'s metrics on ``split`` with the test pipeline matching ``augmentations`` (the 224 centre crop
    of the 256-resized image for ``resize_crop``; ``crop_pct`` 224 / 256): attributes -> mA, accuracy,
    precision, recall, f1 (and
    the (N, A) ``probabilities`` with ``with_probabilities``); classification -> top1, top5, error. The model
    is put back in its previous mode."""
    if len(split) == 0:
        raise ValueError('no images to score: the split is empty')
    was_training = model.training
    model.eval()
    loader = build_labelled_eval_loader(split, size[0], size[1], augmentations, batch_size, workers,
                                        pin_memory=device.type == 'cuda', crop_pct=crop_pct)
    amp_dtype = autocast_dtype(precision)
    outputs: List[torch.Tensor] = []
    correct = {1: 0, 5: 0}
    try:
        for batch in tqdm(loader, desc='testing', leave=False, disable=not du.is_main_process()):
            x = normalize_batch(batch['image'].to(device), mean, std)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x).float()
            if task == 'attributes':
                outputs.append(torch.sigmoid(logits).cpu())
            else:
                for k, v in topk_correct(logits.cpu(), batch['label'], (1, 5)).items():
                    correct[k] += v
    finally:
        model.train(was_training)
    if task != 'attributes':
        return classification_metrics(correct, len(split))
    probs = torch.cat(outputs)
    result: Dict[str, Any] = attribute_metrics(probs, split.labels)
    if with_probabilities:
        result['probabilities'] = probs
    return result


def load_classifier(name: Optional[str], checkpoint: Optional[str]) -> nn.Module:
    """A model with its classifier: ``checkpoint`` a trained model folder (a run or its ``final/``, found by
    :func:`~osnet_zoo.models.run_record.read_run_record`), or
    ``name`` (a tagged name for its published weights, e.g. osnet_x1_0.imagenet) with an optional checkpoint
    file whose classifier sets the class count."""
    if checkpoint and Path(checkpoint).is_dir():
        return create_model(f'local-dir:{require_run_record(checkpoint, "--checkpoint").folder}', pretrained=True,
                            num_classes=None)
    if not name:
        raise ValueError('give --model (e.g. osnet_x1_0.imagenet) or --checkpoint RUN/final')
    if not checkpoint:
        return create_model(name, pretrained=True, num_classes=None)
    state = unwrap_state_dict(read_checkpoint(checkpoint))
    rows = state.get('classifier.weight')
    if rows is None:
        raise ValueError(f'--checkpoint {checkpoint} has no classifier (classifier.weight): it cannot classify')
    # the tag's pretrained_cfg (e.g. osnet_x1_0.imagenet: the 224 centre crop) describes the preprocessing
    return create_model(name, num_classes=int(rows.shape[0]), checkpoint=state, strict=True)
