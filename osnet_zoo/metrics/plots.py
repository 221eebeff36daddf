"""Pictures of an evaluation: CMC curves, and ranked results (query + top-k, true matches framed green)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict, Mapping, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw

__all__ = ['plot_cmc', 'ranked_results_grid', 'pick_queries']

GREEN, RED, GREY = (0, 170, 0), (210, 0, 0), (90, 90, 90)


def _save_atomic(path: Union[str, os.PathLike], save) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.stem}-', suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        save(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a picture is for everyone
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def plot_cmc(results: Mapping[str, Mapping], path: Union[str, os.PathLike], title: str = 'CMC') -> Path:
    """One CMC curve per entry of ``results`` (name -> evaluate_rank's dict), written as a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for name, res in results.items():
        cmc = np.asarray(res['cmc']) * 100
        ranks = np.arange(1, len(cmc) + 1)
        ax.plot(ranks, cmc, marker='o', markersize=2.5,
                label=f'{name}: R1 {cmc[0]:.1f}%, mAP {100 * res["mAP"]:.1f}%')
    ax.set_xlabel('rank')
    ax.set_ylabel('matching rate (%)')
    ax.set_xscale('log')
    ax.set_xticks([1, 5, 10, 20, 50])
    ax.set_xticklabels(['1', '5', '10', '20', '50'])
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(loc='lower right', fontsize=8)
    fig.tight_layout()
    out = _save_atomic(path, lambda p: fig.savefig(p, format='png'))
    plt.close(fig)
    return out


def pick_queries(result: Mapping, num: int = 8, seed: int = 0) -> np.ndarray:
    """Valid queries for the picture: spread from the best to the worst AP, so both successes and failures show."""
    ap = np.asarray(result['ap'])
    valid = np.flatnonzero(~np.isnan(ap))
    order = valid[np.argsort(-ap[valid], kind='stable')]
    if len(order) <= num:
        return order
    return order[np.linspace(0, len(order) - 1, num).round().astype(int)]


def ranked_results_grid(query_dist: np.ndarray, query_indices: Sequence[int], query_items: Sequence,
                        gallery_items: Sequence, path: Union[str, os.PathLike], topk: int = 10,
                        cell: tuple = (128, 64)) -> Path:
    """A PNG with one row per query: the query (grey frame), then its top-``topk`` gallery images under the
    protocol (same identity and camera removed), true matches framed green, false red.

    ``query_dist[i]`` is the distance row of query ``query_indices[i]``; items are ReIDItems
    (path, pid, camid).
    """
    h, w = cell
    pad, border = 6, 4
    rows = len(query_indices)
    canvas = Image.new('RGB', (pad + (topk + 1) * (w + pad) + pad, pad + rows * (h + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    g_pids = np.array([it.pid for it in gallery_items])
    g_cams = np.array([it.camid for it in gallery_items])

    def paste(item_path: str, col: int, row: int, colour) -> None:
        x = pad + col * (w + pad) + (pad if col > 0 else 0)
        y = pad + row * (h + pad)
        draw.rectangle([x - 1, y - 1, x + w, y + h], fill=colour)
        try:
            with Image.open(item_path) as im:
                tile = im.convert('RGB').resize((w - 2 * border, h - 2 * border))
        except OSError:
            tile = Image.new('RGB', (w - 2 * border, h - 2 * border), (0, 0, 0))
        canvas.paste(tile, (x + border - 1, y + border - 1))

    for row, (q, dist) in enumerate(zip(query_indices, query_dist)):
        qi = query_items[q]
        paste(qi.path, 0, row, GREY)
        keep = ~((g_pids == qi.pid) & (g_cams == qi.camid))
        order = np.flatnonzero(keep)[np.argsort(np.asarray(dist)[keep], kind='stable')[:topk]]
        for col, g in enumerate(order, start=1):
            paste(gallery_items[g].path, col, row, GREEN if g_pids[g] == qi.pid else RED)
    return _save_atomic(path, lambda p: canvas.save(p, format='PNG'))


def summary_line(name: str, res: Dict) -> str:
    cmc = res['cmc']
    r = {k: cmc[k - 1] * 100 if len(cmc) >= k else float('nan') for k in (1, 5, 10, 20)}
    return (f'{name:<16} R1 {r[1]:6.2f}  R5 {r[5]:6.2f}  R10 {r[10]:6.2f}  R20 {r[20]:6.2f}  '
            f'mAP {100 * res["mAP"]:6.2f}  mINP {100 * res["mINP"]:6.2f}  '
            f'({res["num_valid_queries"]}/{res["num_queries"]} queries)')
