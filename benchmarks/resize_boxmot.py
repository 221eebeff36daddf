"""Which resize for a tracker's crops: Rank-1 / mAP of a trained run with each ``FeatureExtractor(resize=...)``
('antialias', ours; 'cv2', boxmot's) on the synthetic test split rendered at several sizes (a tracker's crops are
rarely at the input size), and how close resize='cv2' comes to OpenCV's own resize (cosine between the features
of the same images, when cv2 is installed: boxmot brings it). Results: benchmarks/RESULTS.md, docs/trackers.md.

    python -m osnet_zoo.train --output /tmp/tracker_run --epochs 2
    python benchmarks/resize_boxmot.py /tmp/tracker_run --root /tmp/resize_data --scales 1 2 3
"""
import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from osnet_zoo import FeatureExtractor
from osnet_zoo.data.datasets.synthetic import synthetic_reid
from osnet_zoo.metrics.distance import pairwise_distance
from osnet_zoo.metrics.rank import evaluate_rank


def _scores(run: Path, dataset, resize: str) -> dict:
    extractor = FeatureExtractor(checkpoint_path=run, device='cpu', resize=resize)
    query = extractor([item.path for item in dataset.query])
    gallery = extractor([item.path for item in dataset.gallery])
    result = evaluate_rank(pairwise_distance(query, gallery, 'euclidean').numpy(),
                           [i.pid for i in dataset.query], [i.pid for i in dataset.gallery],
                           [i.camid for i in dataset.query], [i.camid for i in dataset.gallery])
    return {'rank1': float(result['cmc'][0]), 'mAP': float(result['mAP'])}


def _opencv_agreement(run: Path, dataset) -> float:
    """The lowest cosine between resize='cv2' features of the gallery images and the features of the same
    images resized by cv2.resize (INTER_LINEAR, as boxmot does) first."""
    import cv2

    ours = FeatureExtractor(checkpoint_path=run, device='cpu', resize='cv2')
    _, h, w = ours.preprocessing['input_size']
    pictures = [np.asarray(Image.open(item.path).convert('RGB')) for item in dataset.gallery]
    resized = [cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) for p in pictures]
    return float((ours(pictures) * ours(resized)).sum(1).min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('run', type=Path, help='a training run of python -m osnet_zoo.train')
    parser.add_argument('--root', type=Path, default=Path('/tmp/resize_data'), help='where the renders go')
    parser.add_argument('--scales', type=int, nargs='+', default=[1, 2, 3],
                        help='render the synthetic set at this multiple of 128x64')
    parser.add_argument('--num-test-ids', type=int, default=50, help='test identities of each render (the default set)')
    parser.add_argument('--num-train-ids', type=int, default=100, help='training identities (rendered, not used)')
    parser.add_argument('--output', type=Path, help='also write the figures here (JSON)')
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    rows = []
    for scale in args.scales:
        dataset = synthetic_reid(args.root / f'x{scale}', height=128 * scale, width=64 * scale,
                                 num_test_ids=args.num_test_ids, num_train_ids=args.num_train_ids)
        start = time.perf_counter()
        row = {'scale': scale, 'render': f'{128 * scale}x{64 * scale}', 'query': len(dataset.query),
               'gallery': len(dataset.gallery)}
        for resize in ('antialias', 'cv2'):
            row[resize] = _scores(args.run, dataset, resize)
        if importlib.util.find_spec('cv2') is not None:
            row['cv2_vs_opencv_min_cosine'] = _opencv_agreement(args.run, dataset)
        row['seconds'] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(json.dumps(row))
    if args.output:
        args.output.write_text(json.dumps(rows, indent=1))


if __name__ == '__main__':
    main()
