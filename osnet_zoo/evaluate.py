"""`python -m osnet_zoo.evaluate`: evaluate an OSNet on re-ID benchmarks (CMC, mAP, mINP), with pictures.

Examples::

    python -m osnet_zoo.evaluate --model osnet_ain_x1_0.msmt17_combineall \\
        --dataset market1501 dukemtmcreid --root ~/data
    python -m osnet_zoo.evaluate --model osnet_x0_25 --checkpoint model.pth --dataset synthetic --root /tmp/data

For each target dataset it extracts query and gallery embeddings (progress bars), ranks the gallery for
every query under the dataset's protocol, prints R1/R5/R10/R20, mAP and mINP, and writes to ``--output``:
``results.json``, ``cmc.png`` (the CMC curves) and ``ranked_<dataset>.png`` (queries with their top-10,
true matches framed green, false red). Extracted features are cached in the output folder, so a run that
stops (or a second run with ``--rerank``) picks up where it was.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ['main', 'extract_features', 'build_model']


def build_model(name: str, checkpoint: Optional[str] = None) -> torch.nn.Module:
    """The embedding model: ``timm.create_model(name, pretrained=True)`` for tagged names
    (``osnet_x1_0.msmt17_combineall``), or the architecture with ``checkpoint`` loaded (any layout
    ``load_osnet_checkpoint`` reads)."""
    import timm

    import osnet_zoo  # noqa: F401  (registers the models)
    from osnet_zoo.weights import load_osnet_checkpoint

    arch = name.split('.')[0]
    if arch not in timm.list_models('osnet*'):
        raise SystemExit(f'error: unknown model {name!r}; OSNet models: {", ".join(timm.list_models("osnet*"))}')
    if checkpoint:
        model = timm.create_model(arch, pretrained=False, num_classes=0)
        load_osnet_checkpoint(model, checkpoint, strict=False)
        return model
    try:
        return timm.create_model(name, pretrained=True, num_classes=0)
    except RuntimeError as e:
        raise SystemExit(f'error: no pretrained weights for {name!r} ({e}); pass a tagged name such as '
                         f'{arch}.msmt17_combineall, or --checkpoint PATH') from None


@torch.inference_mode()
def extract_features(model: torch.nn.Module, items: Sequence, device: torch.device, batch_size: int = 64,
                     num_workers: int = 2, flip: bool = False, amp: bool = False, size: Tuple[int, int] = (256, 128),
                     mean=None, std=None, desc: str = 'features') -> torch.Tensor:
    """Embeddings of ``items`` (ReIDItems or paths), in order; with ``flip``, averaged with the mirrored image."""
    from tqdm import tqdm

    from osnet_zoo.data import ImageDataset, ReIDItem, build_test_transform, normalize_batch
    from osnet_zoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    items = [it if isinstance(it, ReIDItem) else ReIDItem(str(it), -1, -1) for it in items]
    mean, std = mean or IMAGENET_MEAN, std or IMAGENET_STD
    # workers decode and resize in uint8; batches travel as uint8 and are normalised on the device
    transform = build_test_transform(*size, mean, std, normalize=False)
    loader = torch.utils.data.DataLoader(ImageDataset(items, transform, as_tensor=True), batch_size=batch_size,
                                         shuffle=False, num_workers=num_workers, pin_memory=device.type == 'cuda')
    amp_dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
    feats: List[torch.Tensor] = []
    for batch in tqdm(loader, desc=desc, unit='batch', leave=False, file=sys.stderr):
        x = normalize_batch(batch['image'].to(device, non_blocking=True), mean, std)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            f = model(x).float()
            if flip:
                f = (f + model(x.flip(-1)).float()) / 2
        feats.append(f.cpu())
    return torch.cat(feats) if feats else torch.zeros(0, 0)


def _features_cached(cache: Path, key: str, compute) -> torch.Tensor:
    from safetensors.torch import load_file, save_file

    if cache.exists():
        try:
            data = load_file(str(cache))
            if key in data:
                return data[key]
        except Exception:  # a damaged cache is recomputed
            pass
    feats = compute()
    tmp = cache.with_name(cache.name + '.tmp')
    save_file({key: feats.contiguous()}, str(tmp))
    os.replace(tmp, cache)
    return feats


def _settings_key(args, items: Sequence) -> str:
    ckpt = Path(args.checkpoint) if args.checkpoint else None
    parts = [args.model, str(ckpt), str(ckpt.stat().st_mtime_ns) if ckpt and ckpt.exists() else '',
             str(args.flip), str(args.amp), str(args.height), str(args.width)] + [it.path for it in items]
    return 'f' + hashlib.sha1('\n'.join(parts).encode()).hexdigest()[:16]


def _write_json(path: Path, data: Dict) -> None:
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='python -m osnet_zoo.evaluate', description=__doc__.split('\n\n')[0],
                                epilog=__doc__.split('\n', 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', required=True,
                   help='osnet_* name; with a tag (osnet_x1_0.msmt17_combineall) for pretrained weights, or with '
                        '--checkpoint')
    p.add_argument('--checkpoint', help='checkpoint file to load (safetensors, .pth, .pth.tar)')
    p.add_argument('--dataset', nargs='+', default=['synthetic'],
                   help='target dataset(s): market1501, dukemtmcreid, msmt17, cuhk03 (= cuhk03_detected), '
                        'cuhk03_labeled, synthetic, synthetic_b (default: synthetic)')
    p.add_argument('--root', default=os.environ.get('OSNET_ZOO_DATA', '~/.cache/osnet_zoo/data'),
                   help='folder holding the datasets (default: $OSNET_ZOO_DATA or ~/.cache/osnet_zoo/data)')
    p.add_argument('--metric', default='cosine', choices=['cosine', 'euclidean'],
                   help='distance: cosine or squared euclidean (default cosine)')
    p.add_argument('--rerank', action='store_true', help='k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)')
    p.add_argument('--flip', action='store_true', help='average the features of each image and its mirror')
    p.add_argument('--cuhk03-single-shot', action='store_true',
                   help='CUHK03 classic single-gallery-shot CMC (10 seeded draws)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--workers', type=int, default=2, help='data-loading processes')
    p.add_argument('--amp', action='store_true', help='mixed precision feature extraction (fp16 GPU, bf16 CPU)')
    p.add_argument('--height', type=int, help="input height (default: the model's pretrained_cfg, 256)")
    p.add_argument('--width', type=int, help="input width (default: the model's pretrained_cfg, 128)")
    p.add_argument('--max-rank', type=int, default=50)
    p.add_argument('--output', default='runs/evaluate', help='output folder (default runs/evaluate)')
    return p


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = _parser().parse_args(argv)
    from osnet_zoo.data import DatasetLayoutError, build_dataset
    from osnet_zoo.metrics import evaluate_features, evaluate_rank, re_ranking
    from osnet_zoo.metrics.plots import pick_queries, plot_cmc, ranked_results_grid, summary_line
    from osnet_zoo.metrics.distance import pairwise_distance

    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda but no CUDA device is available')
    model = build_model(args.model, args.checkpoint).eval().to(device)
    cfg = getattr(model, 'pretrained_cfg', {}) or {}
    _, cfg_h, cfg_w = cfg.get('input_size', (3, 256, 128))
    args.height, args.width = args.height or cfg_h, args.width or cfg_w
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    print(f'model {args.model}' + (f' ({args.checkpoint})' if args.checkpoint else '') +
          f', input {args.height}x{args.width}, metric {args.metric}' + (', re-ranking' if args.rerank else '') +
          (', flip' if args.flip else '') + (', AMP' if args.amp else '') + f', device {device}')

    results: Dict[str, Dict] = {}
    for name in args.dataset:
        try:
            ds = build_dataset(name, args.root)
        except (DatasetLayoutError, KeyError) as e:
            raise SystemExit(f'error: {e.args[0] if isinstance(e, KeyError) else e}') from None
        print(ds.summary())
        feats = {}
        for split in ('query', 'gallery'):
            items = getattr(ds, split)
            key = _settings_key(args, items)
            feats[split] = _features_cached(
                out / f'features_{name}_{split}.safetensors', key,
                lambda: extract_features(model, items, device, args.batch_size, args.workers, args.flip, args.amp,
                                         (args.height, args.width), cfg.get('mean'), cfg.get('std'),
                                         desc=f'{name} {split}'))
        ids = [np.array([getattr(it, f) for it in getattr(ds, s)]) for s, f in
               (('query', 'pid'), ('gallery', 'pid'), ('query', 'camid'), ('gallery', 'camid'))]
        t0 = time.perf_counter()
        single_shot = dict(single_gallery_shot=args.cuhk03_single_shot and name.startswith('cuhk03'))
        if args.rerank:
            dist = re_ranking(feats['query'], feats['gallery'], metric=args.metric, device=device)
            res = evaluate_rank(dist, *ids, max_rank=args.max_rank, **single_shot)
        else:
            dist = None
            res = evaluate_features(feats['query'], feats['gallery'], *ids, metric=args.metric, device=device,
                                    max_rank=args.max_rank, **single_shot)
        elapsed = time.perf_counter() - t0
        print(summary_line(name, res) + f'  [{elapsed:.2f} s]')
        results[name] = res
        picks = pick_queries(res)
        rows = dist[picks].numpy() if dist is not None else pairwise_distance(
            feats['query'][picks], feats['gallery'], args.metric).numpy()
        ranked_results_grid(rows, picks, ds.query, ds.gallery, out / f'ranked_{name}.png')

    summary = {
        'model': args.model, 'checkpoint': args.checkpoint, 'metric': args.metric, 'rerank': args.rerank,
        'flip': args.flip, 'amp': args.amp, 'input_size': [args.height, args.width], 'device': str(device),
        'date': time.strftime('%Y-%m-%d %H:%M:%S'),
        'targets': {name: {
            'R1': float(r['cmc'][0]), 'R5': float(r['cmc'][min(4, len(r['cmc']) - 1)]),
            'R10': float(r['cmc'][min(9, len(r['cmc']) - 1)]), 'R20': float(r['cmc'][min(19, len(r['cmc']) - 1)]),
            'mAP': r['mAP'], 'mINP': r['mINP'], 'num_queries': r['num_queries'],
            'num_valid_queries': r['num_valid_queries'], 'cmc': [float(c) for c in r['cmc']]}
            for name, r in results.items()},
    }
    _write_json(out / 'results.json', summary)
    plot_cmc(results, out / 'cmc.png', title=f'{args.model}: CMC')
    print(f'wrote {out / "results.json"}, {out / "cmc.png"}, ' +
          ', '.join(str(out / f'ranked_{n}.png') for n in results))
    return summary


if __name__ == '__main__':
    main()
