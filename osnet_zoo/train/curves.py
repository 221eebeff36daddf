"""The training curves picture: loss, accuracy and the evaluation (Rank-1 / mAP, or the task's metrics) per
epoch, from ``metrics.jsonl``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Union

import matplotlib

matplotlib.use('Agg')  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..files import atomic_path  # noqa: E402

__all__ = ['plot_curves', 'curves_figure']

PERCENT = (-2, 102)  # 0..100, a point at 0 or 100 drawn whole
# the evaluation's metrics per task: (key, marker, line style, legend name)
EVAL_METRICS = (('rank1', 'o', '-', 'R1'), ('mAP', 's', '--', 'mAP'), ('mA', 'o', '-', 'mA'), ('f1', 's', '--', 'f1'),
                ('top1', 'o', '-', 'top1'), ('top5', 's', '--', 'top5'))


def _epoch_axis(ax: Axes, epochs: List[int]) -> None:
    """Whole epochs on the x axis, half an epoch of margin either side: one epoch is a point above its number,
    not on an axis of fractions of an epoch."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if epochs:
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax.set_xlabel('epoch')


def curves_figure(records: List[Dict[str, Any]]) -> Figure:
    """Loss, accuracy and (where evaluated) Rank-1 / mAP per epoch, one figure of three panels; percentages on
    0..100, each evaluation series' last value in the legend (a single evaluation reads as a number)."""
    train = [r for r in records if r.get('kind') == 'train']
    evals = [r for r in records if r.get('kind') == 'eval']
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ep = [r['epoch'] for r in train]
    for key in ('loss', 'loss_ce', 'loss_triplet', 'loss_dml'):
        if train and key in train[0]:
            axes[0].plot(ep, [r[key] for r in train], marker='o', ms=3, label=key)
    axes[0].set(title='training loss')
    axes[0].legend()
    axes[1].plot(ep, [100 * r['acc'] for r in train], marker='o', ms=3)
    axes[1].set(title='training accuracy (%)', ylim=PERCENT)
    for target in sorted({r['target'] for r in evals}):
        rs = [r for r in evals if r['target'] == target]
        # re-ID runs log rank1/mAP; the attribute and classification runs their own metrics
        for key, marker, style, name in EVAL_METRICS:
            if key in rs[0]:
                y = [100 * r[key] for r in rs]
                axes[2].plot([r['epoch'] for r in rs], y, marker=marker, ls=style,
                             label=f'{target} {name}: {y[-1]:.1f}' + (f' (epoch {rs[-1]["epoch"]})' if len(rs) > 1
                                                                       else ''))
    axes[2].set(title='evaluation (%)', ylim=PERCENT)
    if evals:
        axes[2].legend()
    for ax, epochs in zip(axes, (ep, ep, ep + [r['epoch'] for r in evals])):
        _epoch_axis(ax, epochs)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_curves(records: List[Dict[str, Any]], out_png: Union[str, Path]) -> None:
    """:func:`curves_figure` of ``records`` (``metrics.jsonl``), written as a PNG."""
    fig = curves_figure(records)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format='png')
    plt.close(fig)
