"""Pictures of an evaluation: CMC curves, and ranked results (query + top-k, true matches framed green, each
picture labelled with its rank, identity, camera and distance to the query, under a title and a legend); and
the pieces the figures share: a title band with colour swatches, a colour bar."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..files import atomic_path

__all__ = ['plot_cmc', 'ranked_results_grid', 'ranked_legend', 'ranked_rows_picture', 'pick_queries',
           'ranked_cell_label', 'draw_text_lines', 'label_font', 'save_png', 'summary_line', 'title_band',
           'title_band_lines', 'wrap_text', 'fit_text', 'colour_bar', 'stack', 'count_of']

GREEN, RED, GREY = (0, 170, 0), (210, 0, 0), (90, 90, 90)
TEXT = (20, 20, 20)
LINE_HEIGHT = 12  # pixels per label line at the 10 px font
TITLE_SIZE, TITLE_HEIGHT = 13, 18  # the title line's font size and height


def save_png(image: Image.Image, path: Union[str, os.PathLike]) -> Path:
    """Write ``image`` as a PNG at ``path``, atomically (folders created)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format='PNG')
    return Path(path)


def label_font(size: int = 10) -> ImageFont.ImageFont:
    """Pillow's built-in font (no font file needed) at ``size`` px; the fixed bitmap font without FreeType."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType: the one bitmap size
        return ImageFont.load_default()


def draw_text_lines(draw: ImageDraw.ImageDraw, xy: Tuple[int, int], lines: Sequence[str], width: int,
                    font: Optional[ImageFont.ImageFont] = None, fill: Tuple[int, int, int] = TEXT) -> None:
    """Draw ``lines`` top-down from ``xy``, each centred in ``width`` px (a line too long is cut with '…')."""
    font = font or label_font()
    x, y = xy
    for i, line in enumerate(lines):
        text = fit_text(draw, line, width, font)
        offset = max(0, (width - int(draw.textlength(text, font=font))) // 2)
        draw.text((x + offset, y + i * LINE_HEIGHT), text, fill=fill, font=font)


def count_of(n: int, noun: str) -> str:
    """``'1 image'``, ``'3 images'``."""
    return f'{n} {noun}' + ('' if n == 1 else 's')


def fit_text(draw: ImageDraw.ImageDraw, text: str, room: int, font: ImageFont.ImageFont) -> str:
    """``text``, cut with '…' until it fits in ``room`` px."""
    while text and draw.textlength(text, font=font) > room:
        text = text[:-2] + '…' if len(text) > 1 else ''
    return text


def wrap_text(text: str, room: int, font: Optional[ImageFont.ImageFont] = None) -> List[str]:
    """``text`` broken into lines at spaces, each at most ``room`` px wide in ``font`` (a single word wider than
    that is cut with '…')."""
    font = font or label_font()
    draw = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    lines: List[str] = []
    for word in text.split():
        candidate = f'{lines[-1]} {word}' if lines else word
        if lines and draw.textlength(candidate, font=font) <= room:
            lines[-1] = candidate
        else:
            lines.append(fit_text(draw, word, room, font))
    return lines


def title_band_lines(width: int, title: str, lines: Sequence[str] = (), pad: int = 6) -> Tuple[List[str], List[str]]:
    """What :func:`title_band` writes: the title's lines (13 px) and the other lines (10 px), each wrapped to
    the band's width, so nothing is cut off."""
    room = max(1, width - 2 * pad)
    return (wrap_text(title, room, label_font(TITLE_SIZE)),
            [part for line in lines for part in wrap_text(line, room, label_font())])


def title_band(width: int, title: str, lines: Sequence[str] = (),
               swatches: Sequence[Tuple[Tuple[int, int, int], str]] = (), pad: int = 6) -> Image.Image:
    """A white band ``width`` px wide: ``title`` (13 px), then ``swatches`` on one line (a filled square of each
    colour followed by its text), then ``lines`` (10 px), all left-aligned; the title and the lines wrap at the
    band's width (:func:`title_band_lines`), a swatch too long is cut with '…'."""
    font, big = label_font(), label_font(TITLE_SIZE)
    title_lines, lines = title_band_lines(width, title, lines, pad)
    height = (pad + TITLE_HEIGHT * len(title_lines) + (LINE_HEIGHT if swatches else 0) + LINE_HEIGHT * len(lines)
              + pad // 2)
    band = Image.new('RGB', (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(band)
    y = pad
    for line in title_lines:
        draw.text((pad, y), line, fill=TEXT, font=big)
        y += TITLE_HEIGHT
    if swatches:
        x = pad
        for colour, text in swatches:
            draw.rectangle([x, y + 1, x + 9, y + 10], fill=colour)
            text = fit_text(draw, text, max(0, width - pad - x - 13), font)
            draw.text((x + 13, y), text, fill=TEXT, font=font)
            x += 13 + int(draw.textlength(text, font=font)) + 14
        y += LINE_HEIGHT
    for line in lines:
        draw.text((pad, y), line, fill=TEXT, font=font)
        y += LINE_HEIGHT
    return band


def colour_bar(length: int, thickness: int, colormap: str = 'jet', vertical: bool = False) -> np.ndarray:
    """The colour map as a (thickness, length, 3) uint8 bar, 0 on the left and 1 on the right (``vertical``:
    (length, thickness, 3), 1 at the top)."""
    from matplotlib import colormaps
    ramp = (colormaps[colormap](np.linspace(0.0, 1.0, length))[:, :3] * 255).round().astype(np.uint8)
    bar = np.repeat(ramp[None], thickness, axis=0)
    return np.ascontiguousarray(bar.transpose(1, 0, 2)[::-1]) if vertical else bar


def stack(*parts: Image.Image) -> Image.Image:
    """The pictures one below the other, left-aligned, on white."""
    canvas = Image.new('RGB', (max(p.width for p in parts), sum(p.height for p in parts)), (255, 255, 255))
    y = 0
    for part in parts:
        canvas.paste(part, (0, y))
        y += part.height
    return canvas


def _format_distance(distance: float) -> str:
    # cosine distances live in [0, 2]; squared euclidean ones can be large: four or five digits fit a cell
    if abs(distance) < 10:
        return f'{distance:.3f}'
    return f'{distance:.2f}' if abs(distance) < 100 else f'{distance:.0f}'


def ranked_cell_label(rank: Optional[int], pid: Optional[int], camid: Optional[int],
                      distance: Optional[float] = None) -> List[str]:
    """The label lines under one picture of the ranked grid: ``rank`` None is the query, else the 1-based
    rank and the distance to the query (``#1  d=0.123``: the font's narrow space alone would run them
    together); then the identity and the camera (1-based, as in the file names: camid 0 is ``c1``), unless the
    identity is None (not known)."""
    if rank is None:
        head = 'query'
    else:
        head = f'#{rank}' + (f'  d={_format_distance(float(distance))}' if distance is not None else '')
    if pid is None:  # a search's image without a listing: no identity known
        return [head]
    return [head, f'ID {pid}', f'cam {camid + 1}']


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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png')
    plt.close(fig)
    return Path(path)


def pick_queries(result: Mapping, num: int = 8, seed: int = 0) -> np.ndarray:
    """Valid queries for the picture: spread from the best to the worst AP, so both successes and failures show."""
    ap = np.asarray(result['ap'])
    valid = np.flatnonzero(~np.isnan(ap))
    order = valid[np.argsort(-ap[valid], kind='stable')]
    if len(order) <= num:
        return order
    return order[np.linspace(0, len(order) - 1, num).round().astype(int)]


def ranked_legend(width: int, title: str, distance: str = 'distance', labels: bool = True) -> Image.Image:
    """The ranked grid's title band: ``title``, the frame colours, and how to read a picture's label
    (``distance`` names the distance, e.g. 'cosine distance')."""
    swatches = [(GREY, 'query'), (GREEN, 'same identity (a true match)'), (RED, 'another identity')]
    lines = ['Each row: a query, then its nearest gallery images left to right (same identity on the same camera '
             'excluded, as the protocol does).']
    if labels:
        lines.append(f'Under each picture: #rank and d, the {distance} to the query (smaller = nearer), the '
                     'identity, the camera.')
    return title_band(width, title, lines, swatches)


def ranked_results_grid(query_dist: np.ndarray, query_indices: Sequence[int], query_items: Sequence,
                        gallery_items: Sequence, path: Union[str, os.PathLike], topk: int = 10,
                        cell: tuple = (128, 64), labels: bool = True, title: str = 'Ranked results',
                        distance: str = 'distance') -> Path:
    """A PNG with one row per query: the query (grey frame), then its top-``topk`` gallery images under the
    protocol (same identity and camera removed), true matches framed green, false red. With ``labels``
    each picture has a band below it: ``query`` or the rank and distance, the identity, the camera
    (see :func:`ranked_cell_label`). Above the rows, ``title`` and a legend of the colours and labels
    (:func:`ranked_legend`; ``distance`` names the distance in it).

    ``query_dist[i]`` is the distance row of query ``query_indices[i]``; items are ReIDItems
    (path, pid, camid).
    """
    g_pids = np.array([it.pid for it in gallery_items])
    g_cams = np.array([it.camid for it in gallery_items])
    rows = []
    for q, dist in zip(query_indices, query_dist):
        qi = query_items[q]
        dist = np.asarray(dist)
        keep = ~((g_pids == qi.pid) & (g_cams == qi.camid))
        order = np.flatnonzero(keep)[np.argsort(dist[keep], kind='stable')[:topk]]
        rows.append((qi, [(gallery_items[g], float(dist[g]), GREEN if g_pids[g] == qi.pid else RED)
                          for g in order]))
    canvas = ranked_rows_picture(rows, topk, cell, labels)
    return save_png(stack(ranked_legend(canvas.width, title, distance, labels), canvas), path)


def ranked_rows_picture(rows: Sequence[Tuple[object, Sequence[Tuple[object, float, Tuple[int, int, int]]]]],
                        topk: int, cell: tuple = (128, 64), labels: bool = True) -> Image.Image:
    """The rows of a ranked-list picture: each row is ``(query item, [(gallery item, distance, frame colour),
    ...])`` in rank order, drawn as the query (grey frame) then up to ``topk`` gallery images. Items have
    ``path``, ``pid`` and ``camid`` (a pid of None: an unknown identity, no identity or camera line). An
    unreadable image is drawn black."""
    h, w = cell
    pad, border = 6, 4
    band = 3 * LINE_HEIGHT + 2 if labels else 0
    row_h = h + band + pad
    canvas = Image.new('RGB', (pad + (topk + 1) * (w + pad) + pad, pad + len(rows) * row_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = label_font()

    def paste(item, col: int, row: int, colour, label: List[str]) -> None:
        x = pad + col * (w + pad) + (pad if col > 0 else 0)
        y = pad + row * row_h
        draw.rectangle([x - 1, y - 1, x + w, y + h], fill=colour)
        try:
            with Image.open(item.path) as im:
                tile = im.convert('RGB').resize((w - 2 * border, h - 2 * border))
        except OSError:
            tile = Image.new('RGB', (w - 2 * border, h - 2 * border), (0, 0, 0))
        canvas.paste(tile, (x + border - 1, y + border - 1))
        if labels:
            draw_text_lines(draw, (x - 1, y + h + 2), label, w + 1, font)

    for row, (qi, ranked) in enumerate(rows):
        paste(qi, 0, row, GREY, ranked_cell_label(None, qi.pid, qi.camid))
        for col, (gi, dist, colour) in enumerate(ranked[:topk], start=1):
            paste(gi, col, row, colour, ranked_cell_label(col, gi.pid, gi.camid, dist))
    return canvas


def summary_line(name: str, res: Dict) -> str:
    """One printable line of a result: R1 / R5 / R10 / R20, mAP and mINP in %, and the valid queries."""
    cmc = res['cmc']
    r = {k: cmc[k - 1] * 100 if len(cmc) >= k else float('nan') for k in (1, 5, 10, 20)}
    return (f'{name:<16} R1 {r[1]:6.2f}  R5 {r[5]:6.2f}  R10 {r[10]:6.2f}  R20 {r[20]:6.2f}  '
            f'mAP {100 * res["mAP"]:6.2f}  mINP {100 * res["mINP"]:6.2f}  '
            f'({res["num_valid_queries"]}/{res["num_queries"]} queries)')
