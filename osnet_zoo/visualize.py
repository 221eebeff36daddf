"""`python -m osnet_zoo.visualize`: the papers' analysis figures, for any model and any images.

``actmap``  activation maps of the last convolutional feature maps (conv5, ``model.forward_features``):
            the sum of absolute values over channels, then spatial L2 normalisation, upsampled to the
            input and overlaid on each image as a colour map (red = high). ``--compare`` puts a second
            model beside the first (the papers compare OSNet with the single-scale T = 1 baseline).
``gates``   the aggregation-gate analysis: the gating vectors of the streams in the last omni-scale block
            (one per stream, from the shared ``ChannelGate``), concatenated per image, clustered with
            k-means (no cluster left empty, even when many images share one gate vector); the images
            closest to each cluster centre are shown, one row per cluster. Uses the whole split unless
            --max-images says otherwise.
``attributes`` the attribute picture (ICCV 2019, Fig. 7) of a model trained with ``--recipe attributes_pa100k``:
            test images of PA-100K, each with the predicted likelihood of every attribute it has, green where
            it is right at 50%, red where it is not.

Examples::

    # activation maps of 32 query images of Market1501, OSNet beside its T = 1 baseline
    python -m osnet_zoo.visualize actmap --model osnet_x1_0 --checkpoint osnet_x1_0_market.pth \\
        --compare osnet_x1_0 --compare-checkpoint osnet_t1_market.pth --compare-args num_streams=1 \\
        --dataset market1501 --root ~/data --split query --max-images 32 --output runs/actmap

    # the same for your own crops (files or folders), with pretrained weights from the Hub
    python -m osnet_zoo.visualize actmap --model osnet_x1_0.msmt17_combineall crops/ person.jpg

    # gate clusters of the Market1501 query set: 6 clusters, the 15 images nearest each centre
    python -m osnet_zoo.visualize gates --model osnet_x1_0.msmt17_combineall \\
        --dataset market1501 --root ~/data --split query --clusters 6 --output runs/gates

    # try it without any download: random weights on the synthetic dataset (generated on first use)
    python -m osnet_zoo.visualize gates --model osnet_x0_25 --no-pretrained --root /tmp/data --clusters 3

    # Fig. 7: likelihoods on the ground-truth attributes of 6 PA-100K test images (a run of attributes_pa100k)
    python -m osnet_zoo.visualize attributes --run runs/pa100k --root ~/data --max-images 6

Outputs (in ``--output``): ``actmap`` writes ``actmaps.png`` (a title, the colour scale, then a grid: the
images, then one row of maps per model) and ``maps/NNNN_<image>.png`` (per image: the image, then its map for
each model, then a colour bar); ``gates`` writes ``gate_clusters.png`` (a title and legend, then the clusters,
each image's distance to the centre under it) and ``gate_clusters.json`` (every image's cluster and distance to
the centre, and each cluster's nearest images); ``attributes`` writes ``attributes.png`` and
``attributes.json`` (per image its ground-truth attributes with their probabilities).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader
from tqdm import tqdm

import osnet_zoo  # noqa: F401  (registers the models)
from osnet_zoo import cli
from osnet_zoo.data import (
    DatasetLayoutError, ImageDataset, ImageReadError, ReIDItem, build_dataset, build_test_transform, data_root,
    normalize_batch, read_image,
)
from osnet_zoo.data.datasets import IMAGE_EXTENSIONS, LABELLED_DATASETS, LabelledSplit
from osnet_zoo.evaluation_labelled import score_labelled
from osnet_zoo.files import atomic_write_json
from osnet_zoo.evaluation import autocast_dtype
from osnet_zoo.inference import apply_run_record, build_embedding_model, resolve_preprocessing
from osnet_zoo.metrics.attribute_figure import attribute_figure, ground_truth_likelihoods
from osnet_zoo.metrics.plots import LINE_HEIGHT, colour_bar, draw_text_lines, label_font, save_png, stack, title_band
from osnet_zoo.models.osnet import MIN_INPUT_SIZE, ChannelGate, OmniScaleBlock

__all__ = ['activation_maps', 'overlay_activation', 'collect_items', 'build_model', 'compute_activation_maps',
           'capture_gates', 'kmeans', 'closest_to_centres', 'run_actmap', 'run_gates', 'run_attributes',
           'load_trained_folder', 'get_args_parser', 'main']

SPLITS = ('query', 'gallery', 'train')
STRIP_BAR_WIDTH = 10  # the colour bar at the end of each per-image strip


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

def build_model(name: str, checkpoint: Optional[str] = None, pretrained: bool = True,
                model_args: Optional[Dict[str, Any]] = None) -> nn.Module:
    """The eval-mode embedding model (``osnet_zoo.inference.build_embedding_model``): a tagged name for
    pretrained weights, or ``checkpoint``; ``model_args`` (e.g. ``num_streams=1``) change the architecture."""
    if not name.startswith('osnet'):
        raise ValueError(f'unknown model {name!r}: the visualisations read OSNet\'s blocks (osnet_* models)')
    return build_embedding_model(name, pretrained=pretrained and checkpoint is None, checkpoint_path=checkpoint,
                                 model_args=model_args)


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


def _input_size(model: nn.Module, height: Optional[int], width: Optional[int]) -> Tuple[int, int]:
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
    then the first ``grid_images`` images: a row of images, then a row of overlays per model)."""
    if not items:
        raise ValueError('no images to visualise')
    first = next(iter(models.values()))
    size = size or _input_size(first, None, None)
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
    header = title_band(panels.width, f'Activation maps (conv5) of {" vs ".join(models)}, input {size[0]}x{size[1]}',
                        ['Colour: the sum of |feature| over channels at each position, upsampled and scaled to '
                         '0..1 per image (jet colour map, blended over the image).'])
    save_png(stack(header, _colour_scale(panels.width), panels), grid)
    return {'grid': str(grid), 'maps': written, 'models': list(models), 'input_size': list(size)}


def run_gates(items: Sequence[ReIDItem], model: nn.Module, output: os.PathLike, device: torch.device,
              clusters: int = 6, per_cluster: int = 15, seed: int = 0, batch_size: int = 64, workers: int = 2,
              size: Optional[Tuple[int, int]] = None, thumb: Tuple[int, int] = (128, 64),
              model_name: str = 'the model') -> Dict[str, Any]:
    """The gate-cluster figure of ``items``: gating vectors of the last omni-scale block, k-means into
    ``clusters`` (seeded; clusters numbered by size, largest first), the ``per_cluster`` members nearest each
    centre drawn in one row per cluster, each with its distance to the centre, under a title naming
    ``model_name``. Writes ``output/gate_clusters.png`` and ``output/gate_clusters.json`` and returns the
    JSON's content."""
    if len(items) < clusters:
        raise ValueError(f'{len(items)} images cannot make {clusters} clusters: use more images or fewer clusters')
    size = size or _input_size(model, None, None)
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
        names.append(f'cluster {c + 1}\n{int((labels == c).sum())} images')
    distinct = int(torch.unique(gates, dim=0).shape[0])
    out = Path(output)
    panels = _panel_grid(rows, names, captions=captions)
    header = title_band(
        panels.width, f'Aggregation-gate clusters of {model_name}: {len(items)} images, k-means k={clusters} '
                      f'(seed {seed})',
        [f'Gate vectors: the last omni-scale block\'s aggregation gate, one vector per stream, concatenated '
         f'({gates.shape[1]} values per image; {distinct} distinct vectors among the images).',
         'Each row: one cluster, largest first; its images nearest the centre, left to right; under each, its '
         'Euclidean distance to the centre.'])
    save_png(stack(header, panels), out / 'gate_clusters.png')
    summary = {
        'num_images': len(items), 'num_clusters': clusters, 'seed': seed, 'gate_dim': int(gates.shape[1]),
        'distinct_gate_vectors': distinct,
        'clusters': [{'cluster': c, 'size': int((labels == c).sum()),
                      'nearest': [{'index': i, 'path': items[i].path, 'distance': d} for i, d in members]}
                     for c, members in enumerate(nearest)],
        'images': [{'index': i, 'path': it.path, 'pid': it.pid, 'camid': it.camid, 'cluster': int(labels[i]),
                    'distance': float(distances[i])} for i, it in enumerate(items)],
    }
    atomic_write_json(out / 'gate_clusters.json', summary)
    return summary


# ----------------------------------------------------------------------------------------------- the CLI

def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m osnet_zoo.visualize {actmap,gates}``."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group('model and images')
    g.add_argument('images', nargs='*', metavar='IMAGE_OR_FOLDER',
                   help='image files or folders (searched recursively); without them, --dataset is used')
    g.add_argument('--model',
                   help="osnet_* name; with a tag (osnet_x1_0.msmt17_combineall) for pretrained weights, or with "
                        "--checkpoint (default: a training run's own architecture)")
    g.add_argument('--checkpoint', help='checkpoint file to load (safetensors, .pth, .pth.tar; any OSNet layout), or '
                                        'a training run (its folder, final/ or final/model.safetensors: its '
                                        'architecture, input size and mean/std are used)')
    g.add_argument('--model-args', nargs='+', default=[], metavar='KEY=VALUE',
                   help='architecture arguments for --model, e.g. num_streams=1 (the T = 1 baseline)')
    g.add_argument('--no-pretrained', action='store_true', help='random weights (to try the pipeline only)')
    g.add_argument('--dataset', help='dataset name: market1501, dukemtmcreid, msmt17, cuhk03, synthetic, ... '
                                     '(default synthetic, generated under --root on first use)')
    g.add_argument('--root', default=os.environ.get('OSNET_ZOO_DATA', '~/.cache/osnet_zoo/data'),
                   help='folder holding the datasets (default: $OSNET_ZOO_DATA or ~/.cache/osnet_zoo/data)')
    g.add_argument('--split', default='query', choices=SPLITS, help='dataset split to show (default query)')
    r = common.add_argument_group('running')
    r.add_argument('--output', help='output folder (default runs/visualize/<command>)')
    r.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                   help='cpu, cuda, cuda:1, ... (default: cuda if available)')
    cli.add_precision(r, help='forward-pass precision: fp32, or bf16 / fp16 autocast')
    r.add_argument('--batch-size', type=int, default=32, help='images per forward pass (default: 32)')
    r.add_argument('--workers', type=int, default=2, help='data-loading processes (default 2)')
    r.add_argument('--height', type=int, help="input height (default: the model's pretrained_cfg, 256)")
    r.add_argument('--width', type=int, help="input width (default: the model's pretrained_cfg, 128)")

    doc = __doc__.split('\n\n')
    # the module docstring's paragraph on each command ('``name``  text...') is that command's description
    commands = {m.group(1): textwrap.fill(' '.join(m.group(2).split()), 100)
                for m in re.finditer(r'``(\w+)``\s+(.*?)(?=\n``|\Z)', doc[1], re.S)}
    examples = '\n\n'.join(doc[2:])
    parser = argparse.ArgumentParser(prog='python -m osnet_zoo.visualize', description='The papers\' analysis '
                                     'figures (OSNet, ICCV 2019 / TPAMI 2021), for any model and any images.',
                                     epilog='\n\n'.join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True, metavar='{actmap,gates,attributes}')
    act = sub.add_parser('actmap', parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                         help='activation maps overlaid on the images', description=commands['actmap'],
                         epilog=examples)
    act.add_argument('--compare', metavar='MODEL', help='a second model shown beside --model (same options below)')
    act.add_argument('--compare-checkpoint', help='checkpoint of the --compare model')
    act.add_argument('--compare-args', nargs='+', default=[], metavar='KEY=VALUE',
                     help='architecture arguments of the --compare model, e.g. num_streams=1')
    act.add_argument('--alpha', type=float, default=0.6, help='weight of the colour map in the overlay (0..1)')
    act.add_argument('--grid-images', type=int, default=16, help='images in the actmaps.png grid (default 16)')
    # --max-images per command: a default set on one sub-parser would reach the other through the shared
    # parent's argument (argparse's set_defaults changes the action's default, and parents share actions)
    act.add_argument('--max-images', type=int, default=32,
                     help='use this many images, spread evenly over the split (default 32)')
    gates = sub.add_parser('gates', parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                           help='k-means clusters of the aggregation-gate vectors',
                           description=commands['gates'], epilog=examples)
    gates.add_argument('--clusters', type=int, default=6, help='k of k-means (default 6)')
    gates.add_argument('--per-cluster', type=int, default=15, help='images shown per cluster (default 15)')
    gates.add_argument('--seed', type=int, default=0, help='k-means seed (default 0)')
    gates.add_argument('--max-images', type=int,
                       help='use this many images, spread evenly over the split (default: all of them)')
    attrs = sub.add_parser('attributes', formatter_class=argparse.RawDescriptionHelpFormatter,
                           help='likelihoods on the ground-truth attributes (Fig. 7)',
                           description=commands['attributes'], epilog=examples)
    attrs.add_argument('--run', required=True,
                       help='a training run of attributes_pa100k (its final/ folder is loaded), or a final/ folder')
    attrs.add_argument('--dataset', default='pa100k', choices=['pa100k'], help='attribute dataset (pa100k)')
    cli.add_root(attrs)
    attrs.add_argument('--split', default='test', choices=['train', 'val', 'test'], help='split (default test)')
    attrs.add_argument('--max-images', type=int, default=6, help='images shown, spread over the split (default 6)')
    attrs.add_argument('--threshold', type=float, default=0.5, help='probability of a positive (default 0.5)')
    cli.add_output(attrs, 'runs/visualize/attributes', 'output folder')
    cli.add_device(attrs)
    cli.add_precision(attrs, help='forward-pass precision: fp32, or bf16 / fp16 autocast')
    cli.add_batch_size(attrs, 32)
    cli.add_workers(attrs, 0, help='data-loading processes (default 0)')
    return parser


def load_trained_folder(run: str) -> Tuple[nn.Module, Path]:
    """The model of a training run (``RUN/final``) or a final/ folder, with its classifier, in eval mode."""
    folder = Path(run).expanduser()
    if (folder / 'final' / 'config.json').is_file():
        folder = folder / 'final'
    if not (folder / 'config.json').is_file() or not (folder / 'model.safetensors').is_file():
        raise FileNotFoundError(f'--run {run}: neither a finished training run (RUN/final/) nor a model folder '
                                '(config.json + model.safetensors)')
    return timm.create_model(f'local-dir:{folder}', pretrained=True).eval(), folder


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


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the CLI; returns what was written (the gates JSON, or the actmap file list)."""
    args = get_args_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError('--device cuda but no CUDA device is available')
    if args.command == 'attributes':
        cli.check_at_least(batch_size=(args.batch_size, 1), workers=(args.workers, 0))
        out = Path(args.output)
        result = run_attributes(args.run, args.dataset, args.root, args.split, out, device, args.max_images,
                                args.threshold, args.batch_size, args.workers, args.precision)
        print(f'wrote {out / "attributes.png"} and {out / "attributes.json"} ({len(result["images"])} images)')
        return result
    cli.check_at_least(batch_size=(args.batch_size, 1), workers=(args.workers, 0),
                       height=(args.height, MIN_INPUT_SIZE), width=(args.width, MIN_INPUT_SIZE),
                       grid_images=(getattr(args, 'grid_images', None), 1),
                       clusters=(getattr(args, 'clusters', None), 1),
                       per_cluster=(getattr(args, 'per_cluster', None), 1))
    model_args = cli.parse_key_values(args.model_args, '--model-args')
    compare_args = cli.parse_key_values(getattr(args, 'compare_args', []), '--compare-args')
    out = Path(args.output or f'runs/visualize/{args.command}')
    if out.exists() and not out.is_dir():  # before any model runs: the figures could not be written there
        raise NotADirectoryError(f'--output {out} is a file, not a folder.')
    items = collect_items(args.images, args.dataset, args.root, args.split, args.max_images)
    apply_run_record(args)  # a training run: its architecture, model args, input size and mean/std
    model = build_model(args.model, args.checkpoint, not args.no_pretrained, model_args).to(device)
    size = _input_size(model, args.height, args.width)
    print(f'{args.command}: {len(items)} images, model {args.model}'
          + (f' ({args.checkpoint})' if args.checkpoint else '') + f', input {size[0]}x{size[1]}, device {device}'
          + ('' if args.precision == 'fp32' else f', {args.precision}'))
    dtype = autocast_dtype(args.precision)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        return _run_command(args, items, model, size, compare_args, out, device)


def _run_command(args: argparse.Namespace, items: List[ReIDItem], model: nn.Module, size: Tuple[int, int],
                 compare_args: Dict[str, Any], out: Path, device: torch.device) -> Dict[str, Any]:
    if args.command == 'actmap':
        models = {args.model: model}
        if args.compare:
            name = ' '.join([args.compare] + args.compare_args)
            models[name if name not in models else f'{name} (2)'] = build_model(
                args.compare, args.compare_checkpoint, not args.no_pretrained, compare_args).to(device)
        result = run_actmap(items, models, out, device, args.batch_size, args.workers, size, args.alpha,
                            args.grid_images)
        print(f'wrote {result["grid"]} and {len(result["maps"])} maps in {out / "maps"}')
    else:
        result = run_gates(items, model, out, device, args.clusters, args.per_cluster, args.seed, args.batch_size,
                           args.workers, size, model_name=args.model)
        sizes = ', '.join(str(c['size']) for c in result['clusters'])
        print(f'wrote {out / "gate_clusters.png"} and {out / "gate_clusters.json"} (cluster sizes {sizes})')
    return result


if __name__ == '__main__':
    # bad models, checkpoints, data roots, images, output folders: one line naming the thing, no traceback
    sys.exit(cli.run(main))
