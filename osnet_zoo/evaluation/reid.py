"""Re-ID evaluation as a library: the features of a split, then CMC / mAP / mINP per target.

Training, the architecture search and ``python -m osnet_zoo.evaluate`` (its CLI, which also keeps each split's
features in a cache file: :func:`cached_split_features`) all go through these functions::

    splits = load_eval_splits(['market1501'], root='~/datasets')
    results = evaluate_models([model], splits, device, size=(256, 128))
    results['market1501']['rank1'], results['market1501']['mAP']

Every figure is in one schema, whoever measured it (``python -m osnet_zoo.train``, ``evaluate``,
``train.protocol``): :func:`target_metrics` per target (``rank1``, ``rank5``, ``rank10``, ``rank20``, ``mAP``,
``mINP`` as fractions in [0, 1], the counts, ``cmc``), gathered by :func:`results_document` into the
``results.json`` those commands write (docs/evaluation.md).

Under DDP (``torchrun``) every rank embeds a contiguous share of each split (whole batches, so the features
equal a one-process run's); the shares are gathered in rank order, and the metrics are computed on the main
process.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from safetensors.torch import load_file
from tqdm import tqdm

from .. import distributed as du
from ..data import (
    IMAGENET_MEAN, IMAGENET_STD, ImageReadError, ReIDItem, build_eval_loader, load_datasets, normalize_batch,
)
from ..files import atomic_save_safetensors
from ..metrics import evaluate_features, evaluate_rank, re_ranking
from ..models.embedding import Embedder
from ..precision import autocast_dtype

__all__ = ['embed', 'embed_sharded', 'features_key', 'cached_split_features', 'load_eval_splits',
           'rank_split', 'evaluate_models', 'Split', 'target_metrics', 'results_document', 'METRIC_KEYS']

Split = Tuple[List[ReIDItem], List[ReIDItem]]


@torch.inference_mode()
def embed(model: nn.Module, items: Sequence[Union[ReIDItem, str, os.PathLike]], device: torch.device,
          size: Tuple[int, int] = (256, 128), mean: Sequence[float] = IMAGENET_MEAN,
          std: Sequence[float] = IMAGENET_STD, batch_size: int = 64, workers: int = 0, precision: str = 'fp32',
          flip: bool = False, desc: str = 'features') -> torch.Tensor:
    """Embeddings (N, D) float32 of ``items`` (ReIDItems or image paths), in order, in this process.

    ``model`` is wrapped in :class:`~osnet_zoo.models.embedding.Embedder` (the pre-logits features of a
    model with a classifier). With ``flip`` each embedding is averaged with that of the mirrored image.
    """
    device = torch.device(device)
    net = model if isinstance(model, Embedder) else Embedder(model)
    dtype = autocast_dtype(precision)
    loader = build_eval_loader(items, size, batch_size, workers, pin_memory=device.type == 'cuda', mean=mean, std=std)
    feats: List[torch.Tensor] = []
    try:
        for batch in tqdm(loader, desc=desc, unit='batch', leave=False, file=sys.stderr,
                          disable=not du.is_main_process()):
            x = normalize_batch(batch['image'].to(device, non_blocking=True), mean, std)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                f = net(x).float()
                if flip:
                    f = (f + net(x.flip(-1)).float()) / 2
            feats.append(f.cpu())
    except ImageReadError as e:
        raise ImageReadError(f'{_reader_message(e)}; delete or replace that file, and list every unreadable one '
                             'first with osnet_zoo.data.verify_images(items)') from None
    return torch.cat(feats) if feats else torch.zeros(0, 0)


def _reader_message(error: ImageReadError) -> str:
    """The reader's own message ('cannot read image PATH: reason'), also when a DataLoader worker raised it
    (then the message is the worker's whole traceback, whose last line is the error)."""
    text = str(error).strip()
    if 'Traceback' in text:
        text = text.splitlines()[-1]
        text = text.split('Error: ', 1)[-1]
    return ' '.join(text.split())


def embed_sharded(models: Sequence[nn.Module], items: Sequence[ReIDItem], device: torch.device,
                  batch_size: int = 64, **options: Any) -> torch.Tensor:
    """``embed`` of every model (concatenated: the DML ensemble), each rank a contiguous share, gathered in
    order on every rank (every rank must call it). The shares are whole batches of ``batch_size``, so every
    image is embedded in the same batch as in one process: the result equals a one-process run exactly (same
    model, precision and device type). An error on one rank is raised on every rank."""
    rank, world = du.get_rank(), du.get_world_size()
    num_batches = (len(items) + batch_size - 1) // batch_size
    per = (num_batches + world - 1) // world * batch_size
    mine = list(items[rank * per:(rank + 1) * per])
    with du.fail_together():
        if mine:
            feats = torch.cat([embed(m, mine, device, batch_size=batch_size, **options) for m in models], dim=1)
        else:  # this rank's share is empty: an empty block of the right width, for the gather
            feats = torch.zeros(0, sum(_embedding_dim(m, options.get('size', (256, 128)), device) for m in models))
    return du.all_gather_cat(feats.to(device)).cpu()


@torch.inference_mode()
def _embedding_dim(model: nn.Module, size: Tuple[int, int], device: torch.device) -> int:
    dim = getattr(model, 'head_hidden_size', None) or getattr(model, 'num_features', None)
    if dim:
        return int(dim)
    was_training = model.training
    out = Embedder(model.eval())(torch.zeros(1, 3, *size, device=device))  # a model that does not say: ask it
    model.train(was_training)
    return int(out.shape[1])


# bump when the feature pipeline changes in a way the key does not see
_CACHE_VERSION = 2


def features_key(items: Sequence[ReIDItem], weights_digest: str, preprocessing: Dict[str, Any], flip: bool,
                 precision: str, backend: str = 'torch') -> str:
    """The cache key of a split's features: every image's path, size and mtime_ns, the model weights, the
    preprocessing (input size, mean, std, resize), flip, precision and the backend that ran the model
    (``BackendPlan.describe()``): anything that changes the features."""
    h = hashlib.sha256(json.dumps(dict(weights=weights_digest, preprocessing=preprocessing, flip=bool(flip),
                                       precision=precision, backend=backend, version=_CACHE_VERSION),
                                  sort_keys=True).encode())
    for it in items:
        try:
            st = os.stat(it.path)
            stamp = f'{st.st_size}:{st.st_mtime_ns}'
        except OSError:  # a missing image: embed names it
            stamp = 'missing'
        h.update(f'{it.path}\0{stamp}\n'.encode())
    return 'f' + h.hexdigest()[:32]


def _cached_features(cache: Path, key: str) -> Optional[torch.Tensor]:
    if not cache.exists():
        return None
    try:
        return load_file(str(cache)).get(key)
    except Exception:  # a damaged cache is recomputed
        return None


def cached_split_features(cache: Union[str, os.PathLike], items: Sequence[ReIDItem], key_parts: Dict[str, Any],
                          model: nn.Module, device: torch.device, options: Dict[str, Any],
                          desc: str) -> Optional[torch.Tensor]:
    """A split's features from the cache file ``cache`` when its key (:func:`features_key` of ``items`` and
    ``key_parts``) matches, else embedded (:func:`embed_sharded` with ``options``: every rank a share) and
    cached. Rank 0 alone reads and writes the cache; the features are returned on rank 0 (None elsewhere).
    ``python -m osnet_zoo.evaluate`` keeps one cache file per split in its output folder."""
    cache = Path(cache)
    feats = None
    with du.fail_together():
        if du.is_main_process():
            key = features_key(items, **key_parts)
            feats = _cached_features(cache, key)
    if du.broadcast_object(feats is not None):
        if du.is_main_process():
            print(f'features from cache: {cache} ({feats.shape[0]} images; same images, weights, preprocessing, '
                  'flip and precision)')
        return feats
    feats = embed_sharded([model], items, device, desc=desc, **options)
    if not du.is_main_process():
        return None
    atomic_save_safetensors({key: feats}, cache)
    return feats


def load_eval_splits(targets: Sequence[str], root: Union[str, os.PathLike, None] = None,
                     **options: Any) -> Dict[str, Split]:
    """``{target: (query items, gallery items)}`` for every evaluation target dataset."""
    splits = {}
    for target in targets:
        ds = load_datasets([target], root, **options)
        splits[target] = (ds.query, ds.gallery)
    return splits


# the figures of one target, in every results file (fractions in [0, 1]; CMC at rank k is cmc[k - 1])
METRIC_KEYS = ('rank1', 'rank5', 'rank10', 'rank20', 'mAP', 'mINP')


def target_metrics(result: Dict[str, Any], num_gallery: int, gallery_pids: Sequence[int],
                   epoch: Optional[int] = None) -> Dict[str, Any]:
    """One target's figures from ``evaluate_features`` / ``evaluate_rank``'s result: Rank-1/5/10/20, mAP and
    mINP as fractions (a rank beyond a short CMC reads its last entry), ``num_query``, ``num_valid_queries``
    (with a true match), ``num_gallery``, ``chance_rank1`` (1 / gallery identities), ``epoch`` (the training
    epoch, None outside training) and ``cmc`` (up to its max rank)."""
    cmc = [float(c) for c in result['cmc']]
    metrics = {f'rank{k}': cmc[min(k, len(cmc)) - 1] for k in (1, 5, 10, 20)}
    metrics.update(mAP=float(result['mAP']), mINP=float(result['mINP']), num_query=int(result['num_queries']),
                   num_valid_queries=int(result['num_valid_queries']), num_gallery=int(num_gallery),
                   chance_rank1=1.0 / max(len(set(int(p) for p in gallery_pids)), 1), epoch=epoch, cmc=cmc)
    return metrics


def results_document(targets: Dict[str, Dict[str, Any]], model: Optional[str], checkpoint: Optional[str],
                     distance: str, input_size: Sequence[int], precision: str, flip: bool = False,
                     rerank: bool = False, **extra: Any) -> Dict[str, Any]:
    """The ``results.json`` of train, evaluate and each train.protocol evaluation: how the features were made
    (model, checkpoint, distance, input_size [H, W], precision, flip, rerank, and any ``extra``), then
    ``targets``: {dataset: :func:`target_metrics`}."""
    return dict(model=model, checkpoint=None if checkpoint is None else str(checkpoint), distance=distance,
                input_size=[int(v) for v in input_size], precision=precision, flip=bool(flip), rerank=bool(rerank),
                **extra, targets=targets)


def rank_split(query_features: torch.Tensor, gallery_features: torch.Tensor, query: Sequence[ReIDItem],
               gallery: Sequence[ReIDItem], distance: str, device: torch.device, max_rank: int = 50,
               rerank: bool = False, single_gallery_shot: bool = False
               ) -> Tuple[Dict[str, Any], Optional[torch.Tensor]]:
    """CMC / mAP / mINP of the query features against the gallery features, identities and cameras from the
    items (Market1501 protocol; ``single_gallery_shot``: CUHK03's classic CMC). ``rerank``: k-reciprocal
    re-ranking of the whole distance matrix first. Returns ``(result, the re-ranked distances or None)``."""
    ids = [torch.tensor([getattr(it, field) for it in items]) for items, field in
           ((query, 'pid'), (gallery, 'pid'), (query, 'camid'), (gallery, 'camid'))]
    if not rerank:
        return evaluate_features(query_features, gallery_features, *ids, distance=distance, device=device,
                                 max_rank=max_rank, single_gallery_shot=single_gallery_shot), None
    dist = re_ranking(query_features, gallery_features, distance=distance, device=device)
    return evaluate_rank(dist, *ids, max_rank=max_rank, single_gallery_shot=single_gallery_shot), dist


def evaluate_models(models: Sequence[nn.Module], splits: Dict[str, Split], device: torch.device,
                    distance: str = 'euclidean', size: Tuple[int, int] = (256, 128),
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, batch_size: int = 64,
                    workers: int = 0, precision: str = 'fp32', flip: bool = False,
                    epoch: Optional[int] = None) -> Dict[str, Dict[str, Any]]:
    """:func:`target_metrics` of ``models`` on each split (features concatenated over the models: the
    DML ensemble), Market1501 protocol. Runs on every rank; the results are filled on the main process.
    The models are put in eval mode for the evaluation and back in their previous mode after it."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    options = dict(size=size, mean=mean, std=std, batch_size=batch_size, workers=workers, precision=precision,
                   flip=flip, desc='embedding')
    results: Dict[str, Dict[str, Any]] = {}
    try:
        for target, (query, gallery) in splits.items():
            qf = embed_sharded(models, query, device, **options)
            gf = embed_sharded(models, gallery, device, **options)
            if not du.is_main_process():
                continue
            r, _ = rank_split(qf, gf, query, gallery, distance, device)
            results[target] = target_metrics(r, len(gallery), [it.pid for it in gallery], epoch=epoch)
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
    return results
