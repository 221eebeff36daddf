"""The training curves picture: loss, accuracy and the evaluation (Rank-1 / mAP, or the task's metrics) per
epoch, from ``metrics.jsonl``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Union

import matplotlib

matplotlib.use('Agg')  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from ..files import atomic_path  # noqa: E402

__all__ = ['plot_curves']


def plot_curves(records: List[Dict[str, Any]], out_png: Union[str, Path]) -> None:
    """Loss, accuracy and (where evaluated) Rank-1 / mAP per epoch, one PNG."""
    train = [r for r in records if r.get('kind') == 'train']
    evals = [r for r in records if r.get('kind') == 'eval']
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ep = [r['epoch'] for r in train]
    for key in ('loss', 'loss_ce', 'loss_triplet', 'loss_dml'):
        if train and key in train[0]:
            axes[0].plot(ep, [r[key] for r in train], marker='o', ms=3, label=key)
    axes[0].set(title='training loss', xlabel='epoch')
    axes[0].legend()
    axes[1].plot(ep, [100 * r['acc'] for r in train], marker='o', ms=3)
    axes[1].set(title='training accuracy (%)', xlabel='epoch')
    for target in sorted({r['target'] for r in evals}):
        rs = [r for r in evals if r['target'] == target]
        # re-ID runs log rank1/mAP; the attribute and classification runs their own metrics
        for key, marker, style in (('rank1', 'o', '-'), ('mAP', 's', '--'), ('mA', 'o', '-'), ('f1', 's', '--'),
                                   ('top1', 'o', '-'), ('top5', 's', '--')):
            if key in rs[0]:
                axes[2].plot([r['epoch'] for r in rs], [100 * r[key] for r in rs], marker=marker, ls=style,
                             label=f'{target} {"R1" if key == "rank1" else key}')
    axes[2].set(title='evaluation (%)', xlabel='epoch')
    if evals:
        axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format='png')
    plt.close(fig)
