"""Verification: "are these two crops the same person?" as a score, its ROC, and a recorded threshold.

The score of a pair is the cosine similarity of the two L2-normalised embeddings (:func:`cosine_scores`): one minus
the cosine distance ``python -m osnet_zoo.evaluate`` ranks with by default, and a decreasing function of the squared
euclidean distance of the *normalised* embeddings (``2 - 2 cos``), so the ROC is the same under either. (A run
recorded with ``euclidean`` is ranked by evaluate on the raw embeddings, which is another ordering; verification
always scores the normalised ones, as ``FeatureExtractor`` returns them, on a bounded scale.) A pair is called
"same person" when its score is ``>= threshold``.

From labelled pairs (:func:`pair_scores`: every query against every gallery image by default) come

* :func:`roc_curve`: the exact ROC, computed as scikit-learn's ``roc_curve`` computes it (every distinct score is a
  threshold, tied scores form one point, a first point (0, 0) at threshold +inf; ``drop_intermediate`` as
  scikit-learn's, default False: every point);
* :func:`operating_point`: the most true matches at a false-match rate at most a target (TPR at FPR), with the
  threshold that gives it; a target below one false match (``num_negative * fpr < 1``) is *unresolved*;
* :func:`equal_error_rate` (where the ROC polyline crosses FPR = 1 - TPR, linearly interpolated) and
  :func:`area_under_curve` (trapezoids, as scikit-learn's ``auc``);
* :func:`verification_metrics`, all of them as one dict; :func:`plot_roc` and :func:`plot_score_histogram`.

A chosen threshold is recorded (:func:`threshold_record`, :func:`write_threshold_record`) with what it is tied to:
the architecture, the digest of the weights (:func:`model_identity`) and the preprocessing that made the scores.
:func:`load_threshold` reads it back and refuses it, in one line, for another model or another preprocessing:
scores of another model are on another scale. ``python -m osnet_zoo.verify`` is the command line;
``FeatureExtractor.load_threshold`` / ``same_person`` / ``match`` use the record.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..files import atomic_path, atomic_write_json
from ..models.run_record import check_preprocessing
from ..weights import model_digest

__all__ = ['SCORE', 'TARGET_FPRS', 'RECORD_FILE', 'RECORD_FORMAT', 'PAIR_SETS', 'Roc', 'OperatingPoint',
           'cosine_scores', 'pair_labels', 'pair_scores', 'check_labels', 'roc_curve', 'operating_point', 'resolves',
           'equal_error_rate', 'eer_point', 'area_under_curve', 'verification_metrics', 'fpr_key', 'roc_rows',
           'plot_roc', 'plot_score_histogram', 'model_identity', 'threshold_record', 'write_threshold_record',
           'read_threshold_record', 'check_threshold_applies', 'load_threshold']

SCORE = 'cosine similarity of the L2-normalised embeddings; same person when score >= threshold'
TARGET_FPRS = (1e-2, 1e-3, 1e-4)  # the false-match rates every report gives the true-match rate at
RECORD_FILE = 'verification.json'
RECORD_FORMAT = 'osnet_zoo.verification/1'
# which pairs of a dataset are scored: every query image against every gallery image, or every two images of one split
PAIR_SETS = ('query-gallery', 'query', 'gallery', 'train')
# how the images were prepared: what a threshold is tied to beside the weights
_PREPROCESSING_KEYS = ('input_size', 'interpolation', 'mean', 'std', 'resize')


def cosine_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(Na, Nb) float32 cosine similarities of the rows of ``a`` and ``b`` (each L2-normalised first), on the CPU:
    the one score of :func:`pair_scores`, the command line and ``FeatureExtractor.same_person``."""
    a = F.normalize(torch.as_tensor(a).detach().float().cpu(), dim=1)
    b = F.normalize(torch.as_tensor(b).detach().float().cpu(), dim=1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f'feature dimensions differ: {a.shape[1]} vs {b.shape[1]}')
    return a @ b.T


def _kept(pids: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """(identities, which rows have one): pid < 0 is an image of unknown identity (Market-1501's junk)."""
    pids = np.asarray(pids, dtype=np.int64)
    return pids[pids >= 0], pids >= 0


def pair_labels(pids: Sequence[int], other_pids: Optional[Sequence[int]] = None) -> np.ndarray:
    """The ``same`` labels of :func:`pair_scores`' pairs, from the identities alone (known before any image is
    embedded: :func:`check_labels` can refuse the data first)."""
    kept, _ = _kept(pids)
    if other_pids is None:
        rows, cols = np.triu_indices(len(kept), k=1)
        return kept[rows] == kept[cols]
    return (kept[:, None] == _kept(other_pids)[0][None, :]).ravel()


def pair_scores(features: torch.Tensor, pids: Sequence[int], other_features: Optional[torch.Tensor] = None,
                other_pids: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(scores, same) of labelled pairs, flat float64 and bool arrays: every row of ``features`` against every row of
    ``other_features`` (query x gallery), or, without ``other_features``, every two distinct rows of ``features``
    (each unordered pair once). Images of unknown identity (pid < 0: Market-1501's junk) form no pair; pid 0
    (distractors) is an identity like any other."""
    for given, ids, name in ((features, pids, 'features'), (other_features, other_pids, 'other_features')):
        if given is not None and (ids is None or len(given) != len(ids)):
            raise ValueError(f'{name}: {len(given)} rows, but {"no" if ids is None else len(ids)} identities')
    kept, keep = _kept(pids)
    feats = torch.as_tensor(features)[torch.from_numpy(keep)]
    if other_features is None:
        rows, cols = np.triu_indices(len(kept), k=1)
        scores = cosine_scores(feats, feats).numpy()[rows, cols]
    else:
        other = torch.as_tensor(other_features)[torch.from_numpy(_kept(other_pids)[1])]
        scores = cosine_scores(feats, other).numpy().ravel()
    return scores.astype(np.float64), pair_labels(pids, other_pids)


@dataclass(frozen=True)
class Roc:
    """An exact ROC: ``fps`` / ``tps`` (false / true matches accepted) at each threshold (accept ``score >=
    threshold``), thresholds decreasing from +inf; ``num_negative`` / ``num_positive`` pairs in all."""

    thresholds: np.ndarray
    fps: np.ndarray
    tps: np.ndarray
    num_negative: int
    num_positive: int

    @property
    def fpr(self) -> np.ndarray:
        return self.fps / self.num_negative

    @property
    def tpr(self) -> np.ndarray:
        return self.tps / self.num_positive


def check_labels(same: np.ndarray) -> None:
    """Refuse pairs of one kind only (no same-person or no different-person pair), in one line saying which."""
    positives = int(same.sum())
    if positives == 0:
        raise ValueError(f'no same-person pairs among the {len(same)} pairs (every pair is of two identities): a '
                         'ROC needs both kinds; give data where identities have two or more images')
    if positives == len(same):
        raise ValueError(f'no different-person pairs among the {len(same)} pairs (every pair is of one identity): '
                         'a ROC needs both kinds; give data with two or more identities')


def _check_pairs(scores: np.ndarray, same: np.ndarray) -> None:
    if scores.ndim != 1 or scores.shape != same.shape:
        raise ValueError(f'scores and labels must be two 1-D arrays of one length, got shapes {scores.shape} and '
                         f'{same.shape}')
    if not np.isfinite(scores).all():
        raise ValueError(f'{int((~np.isfinite(scores)).sum())} pair score(s) are NaN or infinite: the features '
                         'cannot be compared (check the images and the model precision)')
    check_labels(same)


def roc_curve(scores: Any, same: Any, drop_intermediate: bool = False) -> Roc:
    """The exact ROC of ``scores`` (higher: more alike) for the pairs ``same`` (True: one person), computed as
    scikit-learn's ``roc_curve(same, scores, drop_intermediate=...)``: the thresholds are the distinct scores in
    decreasing order after a first +inf (nothing accepted), tied scores are one point; ``drop_intermediate`` drops
    the points inside a straight horizontal or vertical run (the polyline is unchanged), as scikit-learn does.
    Raises a ValueError naming the problem when there are no same-person or no different-person pairs."""
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    _check_pairs(scores, same)
    order = np.argsort(scores, kind='mergesort')[::-1]
    ranked, labels = scores[order], same[order]
    ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # the last pair of each run of tied scores
    tps = np.cumsum(labels, dtype=np.int64)[ends]
    fps = 1 + ends - tps
    thresholds = ranked[ends]
    if drop_intermediate and len(fps) > 2:
        corners = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        thresholds, fps, tps = thresholds[corners], fps[corners], tps[corners]
    return Roc(thresholds=np.r_[np.inf, thresholds], fps=np.r_[0, fps], tps=np.r_[0, tps],
               num_negative=int(fps[-1]), num_positive=int(tps[-1]))


@dataclass(frozen=True)
class OperatingPoint:
    """One point of the ROC and the threshold that gives it on the scored pairs: ``score`` is its lowest accepted
    score (scikit-learn's threshold); ``threshold`` is halfway from it to the next lower score, so a score that
    moves by a rounding error does not change sides (accept ``score >= threshold``)."""

    threshold: float
    score: float
    fpr: float
    tpr: float
    false_matches: int
    true_matches: int
    num_negative: int
    num_positive: int


def _point(roc: Roc, index: int) -> OperatingPoint:
    thresholds = roc.thresholds
    if index == 0:  # nothing accepted: just above the highest score
        threshold = float(np.nextafter(thresholds[1], np.inf))
    elif index == len(thresholds) - 1:  # everything accepted: nothing lower to go halfway to
        threshold = float(thresholds[index])
    else:
        threshold = float((thresholds[index] + thresholds[index + 1]) / 2)
    return OperatingPoint(threshold=threshold, score=float(thresholds[index]),
                          fpr=float(roc.fpr[index]), tpr=float(roc.tpr[index]), false_matches=int(roc.fps[index]),
                          true_matches=int(roc.tps[index]), num_negative=roc.num_negative,
                          num_positive=roc.num_positive)


def _check_fpr(target_fpr: float, option: str = 'target FPR') -> float:
    if not (isinstance(target_fpr, (int, float)) and not isinstance(target_fpr, bool) and 0 < target_fpr < 1):
        raise ValueError(f'{option} must be a false-match rate between 0 and 1 (exclusive), e.g. 1e-3; got '
                         f'{target_fpr!r}')
    return float(target_fpr)


def resolves(num_negative: int, target_fpr: float) -> bool:
    """Whether ``num_negative`` different-person pairs can show a false-match rate of ``target_fpr``: one false
    match must be at most that rate (``num_negative >= 1 / target_fpr``); with fewer, the only rate at most the
    target is 0, and a TPR there says nothing about the target."""
    return num_negative * target_fpr >= 1 - 1e-9


def operating_point(roc: Roc, target_fpr: float) -> Optional[OperatingPoint]:
    """The point with the most true matches among those with FPR <= ``target_fpr`` (TPR at FPR), or None when the
    target is unresolved (fewer than 1 / ``target_fpr`` different-person pairs: see :func:`resolves`)."""
    target_fpr = _check_fpr(target_fpr)
    if not resolves(roc.num_negative, target_fpr):
        return None
    return _point(roc, int(np.searchsorted(roc.fpr, target_fpr, side='right')) - 1)


def equal_error_rate(roc: Roc) -> float:
    """The EER: where the ROC polyline crosses FPR = FNR (= 1 - TPR), linearly interpolated between the two points
    around the crossing (FPR + TPR rises strictly along the curve, so there is exactly one crossing)."""
    total = roc.fpr + roc.tpr
    i = int(np.searchsorted(total, 1.0, side='right')) - 1  # the last point with FPR <= FNR
    if i == len(total) - 1:
        return float(roc.fpr[i])
    alpha = (1.0 - total[i]) / (total[i + 1] - total[i])
    return float(roc.fpr[i] + alpha * (roc.fpr[i + 1] - roc.fpr[i]))


def eer_point(roc: Roc) -> OperatingPoint:
    """The ROC point nearest the equal-error crossing (the smaller ``|FNR - FPR|`` of the two around it; the
    stricter one on a tie): the threshold an "EER" operating point uses."""
    gap = np.abs(1.0 - roc.tpr - roc.fpr)
    i = int(np.searchsorted(roc.fpr + roc.tpr, 1.0, side='right')) - 1
    candidates = [j for j in (i, i + 1) if j < len(gap)]
    return _point(roc, min(candidates, key=lambda j: (gap[j], j)))


def area_under_curve(roc: Roc) -> float:
    """The area under the ROC by trapezoids (scikit-learn's ``auc`` of its ``roc_curve``: ties count one half)."""
    fpr, tpr = roc.fpr, roc.tpr
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def fpr_key(fpr: float) -> str:
    """``1e-3`` -> ``'1e-03'``: the key of a false-match rate in the reports."""
    return f'{fpr:.0e}'


def verification_metrics(roc: Roc, target_fprs: Sequence[float] = TARGET_FPRS) -> Dict[str, Any]:
    """The figures of a ROC as JSON-ready values: the pair counts, ``auc``, ``eer`` (and the ``eer_point``), and
    ``tpr_at_fpr``: per target FPR (key :func:`fpr_key`) the :class:`OperatingPoint` as a dict, or ``tpr`` None
    with a ``note`` saying how many different-person pairs that rate needs."""
    at: Dict[str, Dict[str, Any]] = {}
    for target in target_fprs:
        point = operating_point(roc, target)
        if point is None:
            at[fpr_key(target)] = dict(tpr=None, note=f'unresolved: needs >= {math.ceil(1 / target - 1e-9):,} '
                                                      f'different-person pairs, the data has {roc.num_negative:,}')
        else:
            at[fpr_key(target)] = asdict(point)
    return dict(num_positive=roc.num_positive, num_negative=roc.num_negative, auc=area_under_curve(roc),
                eer=equal_error_rate(roc), eer_point=asdict(eer_point(roc)), tpr_at_fpr=at)


def _figure() -> Tuple[Any, Any, Any]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=110)
    return plt, fig, ax


def _save(plt: Any, fig: Any, path: Union[str, os.PathLike]) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png')
    plt.close(fig)
    return Path(path)


def plot_roc(roc: Roc, path: Union[str, os.PathLike], chosen: Optional[OperatingPoint] = None,
             title: str = 'ROC') -> Path:
    """The ROC as a PNG, FPR on a log axis (down to one false match), the TPR at each resolved target FPR and the
    EER marked, and ``chosen`` (the recorded threshold) circled."""
    plt, fig, ax = _figure()
    fpr, tpr = roc.fpr, roc.tpr
    shown = fpr > 0
    eer = equal_error_rate(roc)
    ax.step(fpr[shown], tpr[shown], where='post', color='tab:blue',
            label=f'AUC {area_under_curve(roc):.4f}, EER {100 * eer:.2f}%')
    for target in TARGET_FPRS:
        point = operating_point(roc, target)
        if point is not None:
            ax.plot([target], [point.tpr], 'o', markersize=4, label=f'TPR {100 * point.tpr:.2f}% at FPR {target:g}')
    ax.plot([eer], [1 - eer], 'kx', label='equal error')
    if chosen is not None:
        ax.plot([max(chosen.fpr, 1 / roc.num_negative)], [chosen.tpr], 'o', markersize=10, fillstyle='none',
                color='tab:red', label=f'threshold {chosen.threshold:.6g}')
    ax.set_xscale('log')
    ax.set_xlim(1 / roc.num_negative / 2, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(f'false-match rate (FPR), {roc.num_negative:,} different-person pairs')
    ax.set_ylabel(f'true-match rate (TPR), {roc.num_positive:,} same-person pairs')
    ax.grid(True, which='both', alpha=0.3)
    ax.set_title(title)
    ax.legend(loc='lower right', fontsize=8)
    return _save(plt, fig, path)


def plot_score_histogram(scores: np.ndarray, same: np.ndarray, path: Union[str, os.PathLike],
                         threshold: Optional[float] = None, title: str = 'Pair scores') -> Path:
    """The scores of same-person and different-person pairs as two histograms (each scaled to its own count,
    shared bins) as a PNG, with the threshold as a vertical line."""
    plt, fig, ax = _figure()
    bins = np.linspace(float(scores.min()), float(scores.max()), 61)
    for mask, colour, label in ((~same, 'tab:red', 'different person'), (same, 'tab:green', 'same person')):
        ax.hist(scores[mask], bins=bins, density=True, alpha=0.5, color=colour,
                label=f'{label} ({int(mask.sum()):,} pairs)')
    if threshold is not None:
        ax.axvline(threshold, color='k', linestyle='--', label=f'threshold {threshold:.6g}')
    ax.set_xlabel('cosine similarity of the two embeddings')
    ax.set_ylabel('density (each kind of pair to its own count)')
    ax.set_title(title)
    ax.legend(loc='upper left', fontsize=8)
    return _save(plt, fig, path)


def model_identity(net: nn.Module, name: Optional[str] = None) -> Dict[str, Any]:
    """What a threshold is tied to in the model: its architecture (from its timm ``pretrained_cfg``, else
    ``name`` or the class) and the sha256 of its weights (:func:`osnet_zoo.weights.model_digest`: the same
    weights from any file or tag give the same digest)."""
    cfg = getattr(net, 'pretrained_cfg', None) or {}
    architecture = cfg.get('architecture') or (name.split('.')[0] if name else type(net).__name__)
    return dict(architecture=str(architecture), weights_digest=model_digest(net))


def _plain(preprocessing: Mapping[str, Any]) -> Dict[str, Any]:
    """The preprocessing keys a threshold is tied to, as JSON values (tuples as lists)."""
    return json.loads(json.dumps({k: preprocessing.get(k) for k in _PREPROCESSING_KEYS}))


def threshold_record(point: OperatingPoint, chosen_at: str, identity: Mapping[str, Any],
                     preprocessing: Mapping[str, Any], **facts: Any) -> Dict[str, Any]:
    """The ``verification.json`` document: the threshold (accept ``score >= threshold``), where it was chosen
    (``chosen_at``: ``'fpr<=0.001'`` or ``'eer'``) and its :class:`OperatingPoint`, the model ``identity``
    (:func:`model_identity`), the ``preprocessing`` (input_size, interpolation, mean, std, resize), and ``facts``
    (the data, the metrics, the checkpoint, ...)."""
    return dict(format=RECORD_FORMAT, score=SCORE, threshold=point.threshold, chosen_at=chosen_at,
                operating_point=asdict(point), model=dict(identity), preprocessing=_plain(preprocessing), **facts)


def write_threshold_record(folder: Union[str, os.PathLike], record: Mapping[str, Any]) -> Path:
    """Write ``record`` to ``folder``/verification.json atomically; returns the file."""
    path = Path(folder) / RECORD_FILE
    atomic_write_json(path, dict(record), indent=1)
    return path


def _record_path(path: Union[str, os.PathLike]) -> Path:
    path = Path(os.fspath(path)).expanduser()
    if path.is_dir():
        for candidate in (path / RECORD_FILE, path.parent / RECORD_FILE if path.name == 'final' else None):
            if candidate is not None and candidate.is_file():
                return candidate
        raise FileNotFoundError(f'{path} holds no {RECORD_FILE}: choose a threshold first with python -m '
                                f'osnet_zoo.verify --checkpoint {path} --dataset NAME_OR_CSV')
    if not path.is_file():
        raise FileNotFoundError(f'threshold record {path} does not exist (give a {RECORD_FILE} or the folder '
                                'python -m osnet_zoo.verify wrote it to)')
    return path


def read_threshold_record(path: Union[str, os.PathLike]) -> Tuple[Dict[str, Any], Path]:
    """The record at ``path`` (a ``verification.json``, or the folder holding it: a run folder, or its
    ``final/``) and the file it came from; a file that is no such record is an error naming it and the key."""
    path = _record_path(path)
    try:
        record = json.loads(path.read_text(encoding='utf-8'))
    except ValueError as e:
        raise ValueError(f'threshold record {path} is not valid JSON ({e})') from None
    if not isinstance(record, dict) or record.get('format') != RECORD_FORMAT:
        raise ValueError(f'{path} is not a threshold record (format {RECORD_FORMAT!r}, as python -m '
                         'osnet_zoo.verify writes it)')
    threshold = record.get('threshold')
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold):
        raise ValueError(f'{path}: threshold {threshold!r} is not a finite number; the file is damaged or was edited')
    model = record.get('model')
    if not isinstance(model, dict) or not all(isinstance(model.get(k), str) for k in ('architecture',
                                                                                      'weights_digest')):
        raise ValueError(f'{path}: model must name the architecture and weights_digest the threshold was chosen '
                         'for; the file is damaged or was edited')
    prep = record.get('preprocessing')
    if not isinstance(prep, dict) or any(k not in prep for k in _PREPROCESSING_KEYS):
        raise ValueError(f'{path}: preprocessing must give {", ".join(_PREPROCESSING_KEYS)}; the file is damaged '
                         'or was edited')
    check_preprocessing(prep, path)
    return record, path


def _describe_prep(prep: Mapping[str, Any]) -> str:
    size = prep.get('input_size') or (0, 0, 0)
    return (f"input {size[1]}x{size[2]}, {prep.get('interpolation')} resize ({prep.get('resize')}), "
            f"mean {prep.get('mean')}, std {prep.get('std')}")


def check_threshold_applies(record: Mapping[str, Any], where: Union[str, os.PathLike], identity: Mapping[str, Any],
                            preprocessing: Mapping[str, Any]) -> None:
    """Refuse, in one line naming ``where``, a threshold chosen for another model (architecture or weights) or
    with another preprocessing than ``identity`` / ``preprocessing`` (a model's scores are on its own scale)."""
    made, now = record['model'], dict(identity)
    if (made['architecture'], made['weights_digest']) != (now['architecture'], now['weights_digest']):
        raise ValueError(f"{where}: this threshold was chosen for {made['architecture']} (weights "
                         f"{made['weights_digest'][:12]}), not for this model, {now['architecture']} (weights "
                         f"{now['weights_digest'][:12]}): another model's scores are on another scale; choose one "
                         'for this model with python -m osnet_zoo.verify')
    recorded, current = _plain(record['preprocessing']), _plain(preprocessing)
    if recorded != current:
        keys = [k for k in _PREPROCESSING_KEYS if recorded.get(k) != current.get(k)]
        raise ValueError(f"{where}: this threshold was chosen with other preprocessing ({', '.join(keys)} differ): "
                         f'recorded {_describe_prep(recorded)}; this extractor: {_describe_prep(current)}; use the '
                         'recorded preprocessing or choose a threshold for this one with python -m osnet_zoo.verify')


def load_threshold(path: Union[str, os.PathLike], identity: Mapping[str, Any],
                   preprocessing: Mapping[str, Any]) -> Tuple[float, Dict[str, Any]]:
    """The recorded threshold at ``path`` (:func:`read_threshold_record`) for the model ``identity`` with
    ``preprocessing``, refused when they differ from the record's (:func:`check_threshold_applies`); returns
    ``(threshold, record)``."""
    record, where = read_threshold_record(path)
    check_threshold_applies(record, where, identity, preprocessing)
    return float(record['threshold']), record


def roc_rows(roc: Roc) -> List[Tuple[float, float, float, int, int]]:
    """(threshold, fpr, tpr, false matches, true matches) per point of ``roc``: the rows of the ROC's CSV."""
    return [(float(t), float(f), float(p), int(a), int(b))
            for t, f, p, a, b in zip(roc.thresholds, roc.fpr, roc.tpr, roc.fps, roc.tps)]
