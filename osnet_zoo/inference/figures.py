"""The papers' analysis figures as a library (the CLI: ``python -m osnet_zoo.visualize``).

* activation maps of the last convolutional feature maps (:func:`activation_maps`, :func:`overlay_activation`,
  :func:`run_actmap`);
* the aggregation-gate analysis: the gating vectors of the last omni-scale block (:func:`capture_gates`),
  clustered with a seeded k-means that never leaves a cluster empty (:func:`kmeans`,
  :func:`closest_to_centres`, :func:`run_gates`);
* the attribute picture of a model trained on PA-100K (:func:`run_attributes`).

The figures read OSNet's blocks; models come from the one builder,
:func:`osnet_zoo.inference.build_embedding_model` (see docs/visualize.md).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data import (
    ImageDataset, ReIDItem, build_dataset, build_test_transform, data_root, normalize_batch, read_image,
)
from ..data.datasets import IMAGE_EXTENSIONS, LABELLED_DATASETS, LabelledSplit
from ..evaluation.labelled import load_classifier, score_labelled
from ..files import atomic_write_json
from ..metrics.attribute_figure import attribute_figure, ground_truth_likelihoods
from ..metrics.plots import (
    LINE_HEIGHT, colour_bar, count_of, draw_text_lines, label_font, save_png, stack, title_band,
)
from ..models.osnet import ChannelGate, OmniScaleBlock
from ..models.run_record import require_run_record
from .model import resolve_preprocessing

__all__ = ['SPLITS', 'STRIP_BAR_WIDTH', 'activation_maps', 'overlay_activation', 'kmeans', 'closest_to_centres',
           'collect_items', 'compute_activation_maps', 'capture_gates', 'input_size', 'run_actmap', 'run_gates',
           'load_trained_folder', 'run_attributes']

SPLITS = ('query', 'gallery', 'train')
STRIP_BAR_WIDTH = 10  # the colour bar at the end of each per-image strip
MIN_FIGURE_WIDTH = 360  # px: the narrowest figure, so its title and colour key never squeeze into a few columns


# --------------------------------------------------------------------------------------------- arithmetic

def activation_maps(features: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) feature maps -> (B, h, w) activation maps: the sum of absolute values over channels,
    then each map divided by its L2 norm over the h*w positions (an all-zero map stays zero)."""
    if features.dim() != 4:
        raise ValueError(f'activation_maps expects (B, C, H, W) feature maps, got shape {tuple(features.shape)}')
    maps = features.float().abs().sum(1)
    b, h, w = maps.shape
    return F.normalize(maps.reshape(b, h * w), p=2, dim=1).reshape(b, h, w)


def overlay_activation(image: np.ndarray, amap: np.ndarray, alpha: float = 0.6,
                       colormap: str = 'jet') -> np.ndarray:
    """``image`` (H, W, 3) uint8 with ``amap`` (h, w) upsampled (bilinear) to H x W, scaled to [0, 1]
    per image, coloured with ``colormap`` (jet: blue low, red high) and blended: ``(1 - alpha) * image +
    alpha * colour``. Returns (H, W, 3) uint8."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'overlay_activation expects an (H, W, 3) uint8 image, got {image.shape} {image.dtype}')
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f'alpha must be in [0, 1], got {alpha}')
    h, w = image.shape[:2]
    up = F.interpolate(torch.as_tensor(amap, dtype=torch.float32)[None, None], size=(h, w), mode='bilinear',
                       align_corners=False)[0, 0].numpy()
    lo, hi = float(up.min()), float(up.max())
    up = (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)
    colour = colormaps[colormap](up)[..., :3] * 255.0
    return ((1.0 - alpha) * image.astype(np.float64) + alpha * colour).round().clip(0, 255).astype(np.uint8)


def _seed_centres(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """k-means++: the first centre a random point, each next one drawn with probability proportional to the
    squared distance to the nearest centre so far; once every point coincides with a centre, the first point
    not chosen yet."""
    n = x.shape[0]
    chosen = [int(torch.randint(n, (1,), generator=g))]
    d2 = ((x - x[chosen[0]]) ** 2).sum(1)
    for _ in range(1, k):
        total = float(d2.sum())
        if total > 0:
            nxt = int(torch.multinomial(d2 / total, 1, generator=g))
        else:  # fewer distinct points than k
            nxt = next(i for i in range(n) if i not in chosen)
        chosen.append(nxt)
        d2 = torch.minimum(d2, ((x - x[nxt]) ** 2).sum(1))
    return x[chosen].clone()


def _assign(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Each point to its nearest centre (ties: the lower cluster number), then every cluster left empty
    re-seeded with a point: the one farthest from its own centre among the clusters that can spare one (ties:
    the lower index). That point is then the cluster's only member, so its centre becomes that point."""
    d = torch.cdist(x, centres)
    labels = d.argmin(1)
    counts = torch.bincount(labels, minlength=len(centres))
    own = d.gather(1, labels[:, None])[:, 0]
    for c in torch.nonzero(counts == 0).flatten().tolist():
        movable = counts[labels] > 1  # k <= N: while a cluster is empty, another has two or more members
        i = int(own.masked_fill(~movable, -1.0).argmax())
        counts[labels[i]] -= 1
        labels[i], counts[c], own[i] = c, 1, 0.0
    return labels


def kmeans(x: torch.Tensor, k: int, seed: int = 0, iters: int = 300) -> Tuple[torch.Tensor, torch.Tensor]:
    """k-means (Lloyd's algorithm, k-means++ seeding from ``seed``) of the rows of ``x`` (N, D), in float64.

    Returns ``(centres (k, D), labels (N,))``; the same inputs and seed give the same result. Every cluster
    has at least one point, whatever the data (identical points, fewer distinct points than ``k``, outliers):
    an assignment that leaves a cluster empty re-seeds it with the point farthest from its own centre, taken
    from a cluster that keeps at least one. With fewer distinct points than ``k``, clusters of identical points
    share a centre.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    n = x.shape[0]
    if x.dim() != 2 or n == 0:
        raise ValueError(f'kmeans expects a non-empty (N, D) matrix, got shape {tuple(x.shape)}')
    if not 1 <= k <= n:
        raise ValueError(f'cannot make {k} clusters of {n} points (need 1 <= k <= N)')
    if not torch.isfinite(x).all():
        raise ValueError('kmeans got non-finite values (NaN or inf) in its input')
    centres = _seed_centres(x, k, torch.Generator().manual_seed(seed))
    labels = None
    for _ in range(iters):
        new = _assign(x, centres)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        centres = torch.stack([x[labels == c].mean(0) for c in range(k)])  # no cluster is empty
    return centres, labels


def closest_to_centres(x: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor,
                       per_cluster: int = 15) -> List[List[Tuple[int, float]]]:
    """For each cluster, up to ``per_cluster`` of its members, nearest to its centre first:
    ``[[(index, distance), ...], ...]`` (ties broken by index)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    centres = torch.as_tensor(centres, dtype=torch.float64)
    out = []
    for c in range(len(centres)):
        members = torch.nonzero(labels == c).flatten()
        dist = (x[members] - centres[c]).norm(dim=1)
        order = torch.from_numpy(np.argsort(dist.numpy(), kind='stable'))[:per_cluster]
        out.append([(int(members[i]), float(dist[i])) for i in order])
    return out


# ------------------------------------------------------------------------------------------ models, data

def collect_items(images: Sequence[str] = (), dataset: Optional[str] = None, root: Optional[str] = None,
                  split: str = 'query', max_images: Optional[int] = None) -> List[ReIDItem]:
    """The images to show: the given files and folders (searched recursively, sorted; identity and camera
    unknown, -1), or ``split`` of ``dataset`` under ``root``. ``max_images`` keeps that many, evenly spread
    over the list (so a sorted split keeps many identities), in order."""
    if images and dataset:
        raise ValueError('give image files/folders or --dataset, not both')
    if split not in SPLITS:
        raise ValueError(f'unknown split {split!r}; choose one of {", ".join(SPLITS)}')
    items: List[ReIDItem] = []
    if images:
        for src in images:
            p = Path(src).expanduser()
            if p.is_dir():
                found = sorted(f for f in p.rglob('*') if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
                if not found:
                    raise FileNotFoundError(f'folder {p} holds no images ({", ".join(IMAGE_EXTENSIONS)})')
                items += [ReIDItem(str(f), -1, -1) for f in found]
            elif p.is_file():
                items.append(ReIDItem(str(p), -1, -1))
            else:
                raise FileNotFoundError(f'image or folder {p} does not exist')
    else:
        if root is None:
            raise ValueError('--root is needed with --dataset')
        items = list(getattr(build_dataset(dataset or 'synthetic', root), split))
        if not items:
            raise ValueError(f'the {split} split of {dataset or "synthetic"} under {root} holds no images')
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f'--max-images must be >= 1, got {max_images}')
        if len(items) > max_images:
            keep = np.unique(np.linspace(0, len(items) - 1, max_images).round().astype(int))
            items = [items[i] for i in keep]
    return items


def _batches(items: Sequence[ReIDItem], size: Tuple[int, int], batch_size: int, workers: int, desc: str):
    """Yields ``(uint8 images (B, 3, H, W) resized to ``size``, batch)`` over ``items``, with a progress bar."""
    transform = build_test_transform(*size, normalize=False)
    loader = DataLoader(ImageDataset(items, transform), batch_size=batch_size, shuffle=False, num_workers=workers)
    yield from ((batch['image'], batch) for batch in tqdm(loader, desc=desc, unit='batch', file=sys.stderr))


def input_size(model: nn.Module, height: Optional[int] = None, width: Optional[int] = None) -> Tuple[int, int]:
    """(height, width) the images are resized to: the given ones, else the model's preprocessing."""
    _, h, w = resolve_preprocessing(model)['input_size']
    return height or h, width or w


@torch.inference_mode()
def compute_activation_maps(model: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Activation maps (B, h, w) of the conv5 maps of ``model`` for uint8 ``images`` (B, 3, H, W),
    normalised with the model's preprocessing."""
    cfg = resolve_preprocessing(model)
    x = normalize_batch(images.to(device), cfg['mean'], cfg['std'])
    return activation_maps(model.forward_features(x)).cpu()


def _last_block_gates(model: nn.Module) -> List[nn.Module]:
    blocks = [m for m in model.modules() if isinstance(m, OmniScaleBlock)]
    if not blocks:
        raise ValueError(f'{type(model).__name__} has no omni-scale blocks: the gate analysis needs an OSNet')
    gates = [m for m in blocks[-1].modules() if isinstance(m, ChannelGate)]
    if not gates:
        raise ValueError('the last omni-scale block has no aggregation gate (ChannelGate)')
    return gates


@torch.inference_mode()
def capture_gates(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The gating vectors of the last omni-scale block for the normalised batch ``x``: (B, T * C), the
    sigmoid outputs of its gate for each of its T streams, in stream order, concatenated.

    Read with forward hooks on the gate's last layer (``fc2``; the gate is ``sigmoid(fc2(...))``), so the
    model runs unchanged."""
    captured: List[torch.Tensor] = []

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        captured.append(torch.sigmoid(output.detach().float()).flatten(1))

    handles = [gate.fc2.register_forward_hook(hook) for gate in _last_block_gates(model)]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return torch.cat(captured, 1).cpu()


# --------------------------------------------------------------------------------------------- figures

def _panel_grid(rows: List[List[np.ndarray]], row_names: Sequence[str], pad: int = 4,
                captions: Optional[List[List[str]]] = None) -> Image.Image:
    """Equal-sized pictures in rows, each row named in a band on the left; ``captions`` (one string per
    picture) are written in a line under each picture."""
    h, w = rows[0][0].shape[:2]
    font = label_font()
    draw_probe = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    band = max(int(draw_probe.textlength(line, font=font)) for name in row_names for line in name.split('\n'))
    band = min(band + 2 * pad, 200)
    cols = max(len(r) for r in rows)
    row_h = h + pad + (LINE_HEIGHT if captions else 0)
    canvas = Image.new('RGB', (band + pad + cols * (w + pad), pad + len(rows) * row_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (pictures, name) in enumerate(zip(rows, row_names)):
        y = pad + r * row_h
        lines = name.split('\n')
        draw_text_lines(draw, (0, y + (h - LINE_HEIGHT * len(lines)) // 2), lines, band, font)
        for c, pic in enumerate(pictures):
            canvas.paste(Image.fromarray(pic), (band + c * (w + pad), y))
            if captions:
                draw_text_lines(draw, (band + c * (w + pad), y + h), [captions[r][c]], w, font)
    return canvas


def _colour_scale(width: int, colormap: str = 'jet') -> Image.Image:
    """A horizontal colour bar with its ends named, for the activation-map figure."""
    font = label_font()
    bar_w = min(300, width - 16)
    key = Image.new('RGB', (width, 16 + LINE_HEIGHT + 4), (255, 255, 255))
    key.paste(Image.fromarray(colour_bar(bar_w, 12, colormap)), (6, 2))
    draw = ImageDraw.Draw(key)
    draw.text((6, 16), '0: lowest in the image', fill=(20, 20, 20), font=font)
    right = '1: highest'
    draw.text((6 + bar_w - int(draw.textlength(right, font=font)), 16), right, fill=(20, 20, 20), font=font)
    return key


def _safe_stem(path: str) -> str:
    return ''.join(ch if ch.isalnum() or ch in '-_.' else '_' for ch in Path(path).stem)[:80]


def run_actmap(items: Sequence[ReIDItem], models: Dict[str, nn.Module], output: os.PathLike,
               device: torch.device, batch_size: int = 32, workers: int = 2, size: Optional[Tuple[int, int]] = None,
               alpha: float = 0.6, grid_images: int = 16) -> Dict[str, Any]:
    """Activation-map figures of ``items`` for each of ``models`` (name -> model, one or two). Writes
    ``output/maps/NNNN_<image>.png`` (the image, then its overlay per model, then a vertical colour bar: the
    colour map from 0 at the bottom to 1 at the top) and ``output/actmaps.png`` (a title, the colour scale,
    then the first ``grid_images`` images: a row of images, then a row of overlays per model). Returns the files
    written and ``caption``, the text of the title band (it wraps, never cut, on a figure at least
    ``MIN_FIGURE_WIDTH`` px wide)."""
    if not items:
        raise ValueError('no images to visualise')
    first = next(iter(models.values()))
    size = size or input_size(first)
    out = Path(output)
    grid_rows: List[List[np.ndarray]] = [[] for _ in range(len(models) + 1)]
    written = []
    for images, batch in _batches(items, size, batch_size, workers, 'activation maps'):
        maps = [compute_activation_maps(m, images, device) for m in models.values()]
        for i in range(len(images)):
            picture = images[i].permute(1, 2, 0).numpy()
            overlays = [overlay_activation(picture, mp[i].numpy(), alpha) for mp in maps]
            index = int(batch['index'][i])
            gap = np.full((size[0], 4, 3), 255, np.uint8)
            bar = colour_bar(size[0], STRIP_BAR_WIDTH, vertical=True)
            strip = np.concatenate([p for pic in [picture] + overlays + [bar] for p in (gap, pic)][1:], axis=1)
            target = out / 'maps' / f'{index:04d}_{_safe_stem(batch["path"][i])}.png'
            save_png(Image.fromarray(strip), target)
            written.append(str(target))
            if index < grid_images:
                for row, pic in zip(grid_rows, [picture] + overlays):
                    row.append(pic)
    names = ['image'] + list(models)
    grid = out / 'actmaps.png'
    panels = _panel_grid(grid_rows, names)
    # a few small images make a narrow grid: the title and its key get room of their own (and wrap within it)
    width = max(panels.width, MIN_FIGURE_WIDTH)
    caption = {'title': f'Activation maps (conv5) of {" vs ".join(models)}, input {size[0]}x{size[1]}',
               'lines': ['Colour: the sum of |feature| over channels at each position, upsampled and scaled to '
                         '0..1 per image (jet colour map, blended over the image).']}
    save_png(stack(title_band(width, caption['title'], caption['lines']), _colour_scale(width), panels), grid)
    return {'grid': str(grid), 'maps': written, 'models': list(models), 'input_size': list(size), 'caption': caption}


def run_gates(items: Sequence[ReIDItem], model: nn.Module, output: os.PathLike, device: torch.device,
              clusters: int = 6, per_cluster: int = 15, seed: int = 0, batch_size: int = 64, workers: int = 2,
              size: Optional[Tuple[int, int]] = None, thumb: Tuple[int, int] = (128, 64),
              model_name: str = 'the model') -> Dict[str, Any]:
    """The gate-cluster figure of ``items``: gating vectors of the last omni-scale block, k-means into
    ``clusters`` (seeded; clusters numbered by size, largest first), the ``per_cluster`` members nearest each
    centre drawn in one row per cluster, each with its distance to the centre, under a title naming
    ``model_name``. Writes ``output/gate_clusters.png`` and ``output/gate_clusters.json`` and returns the
    JSON's content (``caption``: the text drawn, the title band and each row's name)."""
    if len(items) < clusters:
        raise ValueError(f'{len(items)} images cannot make {clusters} clusters: use more images or fewer clusters')
    size = size or input_size(model)
    cfg = resolve_preprocessing(model)
    vectors = []
    for images, _ in _batches(items, size, batch_size, workers, 'gates'):
        vectors.append(capture_gates(model, normalize_batch(images.to(device), cfg['mean'], cfg['std'])))
    gates = torch.cat(vectors)
    centres, labels = kmeans(gates, clusters, seed=seed)
    # number the clusters by size, largest first (ties by first member), so the figure reads top-down
    sizes = torch.bincount(labels, minlength=clusters)
    order = sorted(range(clusters), key=lambda c: (-int(sizes[c]), int(torch.nonzero(labels == c)[0])))
    rank = {c: i for i, c in enumerate(order)}
    labels = torch.tensor([rank[int(c)] for c in labels])
    centres = centres[order]
    nearest = closest_to_centres(gates, centres, labels, per_cluster)
    distances = (gates.double() - centres[labels]).norm(dim=1)

    rows, names, captions = [], [], []
    for c, members in enumerate(nearest):
        row = []
        for index, _ in members:
            thumbnail = read_image(items[index].path).resize((thumb[1], thumb[0]), Image.BILINEAR)
            row.append(np.asarray(thumbnail))
        rows.append(row)
        captions.append([f'{d:.3f}' for _, d in members])
        names.append(f'cluster {c + 1}\n{count_of(int((labels == c).sum()), "image")}')
    distinct = int(torch.unique(gates, dim=0).shape[0])
    out = Path(output)
    panels = _panel_grid(rows, names, captions=captions)
    caption = {'title': f'Aggregation-gate clusters of {model_name}: {count_of(len(items), "image")}, '
                        f'k-means k={clusters} (seed {seed})',
               'lines': [f'Gate vectors: the last omni-scale block\'s aggregation gate, one vector per stream, '
                         f'concatenated ({gates.shape[1]} values per image; {count_of(distinct, "distinct vector")} among '
                         'the images).',
                         'Each row: one cluster, largest first; its images nearest the centre, left to right; under '
                         'each, its Euclidean distance to the centre.'],
               'rows': [name.replace('\n', ', ') for name in names]}
    header = title_band(max(panels.width, MIN_FIGURE_WIDTH), caption['title'], caption['lines'])
    save_png(stack(header, panels), out / 'gate_clusters.png')
    summary = {
        'num_images': len(items), 'num_clusters': clusters, 'seed': seed, 'gate_dim': int(gates.shape[1]),
        'distinct_gate_vectors': distinct,
        'clusters': [{'cluster': c, 'size': int((labels == c).sum()),
                      'nearest': [{'index': i, 'path': items[i].path, 'distance': d} for i, d in members]}
                     for c, members in enumerate(nearest)],
        'images': [{'index': i, 'path': it.path, 'pid': it.pid, 'camid': it.camid, 'cluster': int(labels[i]),
                    'distance': float(distances[i])} for i, it in enumerate(items)],
        'caption': caption,  # the text drawn: the title band and each row's name
    }
    atomic_write_json(out / 'gate_clusters.json', summary)
    return summary


def load_trained_folder(run: str) -> Tuple[nn.Module, Path]:
    """The model of a training run (``RUN/final``) or a final/ folder, with its classifier, in eval mode."""
    folder = require_run_record(run, '--run').folder
    return load_classifier(None, str(folder)).eval(), folder


@torch.inference_mode()
def run_attributes(run: str, dataset: str, root: str, split: str, output: os.PathLike, device: torch.device,
                   max_images: int, threshold: float, batch_size: int, workers: int,
                   precision: str = 'fp32') -> Dict[str, Any]:
    """Fig. 7 for ``max_images`` images of ``split``: attributes.png and attributes.json in ``output``."""
    if max_images < 1 or not 0 < threshold < 1:
        raise ValueError('--max-images must be >= 1 and --threshold within (0, 1)')
    model, folder = load_trained_folder(run)
    data = LABELLED_DATASETS[dataset](data_root(root))
    part = getattr(data, split)
    if model.num_classes != data.num_classes:
        raise ValueError(f'{folder} predicts {model.num_classes} outputs, {dataset} has {data.num_classes} '
                         'attributes: is it a run of attributes_pa100k?')
    keep = np.unique(np.linspace(0, len(part) - 1, min(max_images, len(part))).round().astype(int)).tolist()
    subset = LabelledSplit(part.labels[keep], paths=[part.paths[i] for i in keep])
    pcfg = model.pretrained_cfg
    _, height, width = pcfg['input_size']
    probabilities = score_labelled(model.to(device), 'attributes', subset, device, (height, width), pcfg['mean'],
                                   pcfg['std'], (), batch_size, workers, precision,
                                   with_probabilities=True)['probabilities']
    rows = [ground_truth_likelihoods(p.tolist(), y.tolist(), data.classes, threshold)
            for p, y in zip(probabilities, subset.labels)]
    out = Path(output)
    save_png(attribute_figure([np.asarray(read_image(p)) for p in subset.paths], rows), out / 'attributes.png')
    result = dict(model=str(folder), dataset=dataset, split=split, threshold=threshold,
                  images=[dict(path=p, attributes=r) for p, r in zip(subset.paths, rows)])
    atomic_write_json(out / 'attributes.json', result)
    return result


