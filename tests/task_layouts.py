"""Tiny datasets in the released on-disk layouts of PA-100K, CIFAR-10/100 (binary) and ImageNet (class
folders), for tests: the readers and the training runs meet the real formats, at a few images."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
from PIL import Image

PA100K_ATTRIBUTES = ['Female', 'AgeOver60', 'Age18-60', 'AgeLess18', 'Front', 'Side', 'Back', 'Hat', 'Glasses',
                     'HandBag', 'ShoulderBag', 'Backpack', 'HoldObjectsInFront', 'ShortSleeve', 'LongSleeve',
                     'UpperStride', 'UpperLogo', 'UpperPlaid', 'UpperSplice', 'LowerStripe', 'LowerPattern',
                     'LongCoat', 'Trousers', 'Shorts', 'Skirt&Dress', 'boots']


def _cell(strings: Sequence[str]) -> np.ndarray:
    cell = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        cell[i, 0] = np.array([s])
    return cell


def make_pa100k(root: Path, sizes=(24, 8, 8), seed: int = 0, size=(32, 16)) -> Path:
    """``root/pa100k/annotation.mat`` + ``data/NNNNNN.jpg``: ``sizes`` train/val/test images. An image's
    attribute l is on when its colour channel l % 3 is bright, so the labels can be learnt."""
    from scipy.io import savemat
    rng = np.random.default_rng(seed)
    base = root / 'pa100k'
    (base / 'data').mkdir(parents=True, exist_ok=True)
    mat = {'attributes': _cell(PA100K_ATTRIBUTES)}
    number = 1
    for split, n in zip(('train', 'val', 'test'), sizes):
        names, labels = [], np.zeros((n, len(PA100K_ATTRIBUTES)), dtype=np.uint8)
        for i in range(n):
            bright = rng.random(3) < 0.5
            labels[i] = [bright[a % 3] for a in range(len(PA100K_ATTRIBUTES))]
            pixels = rng.integers(0, 60, (*size, 3)) + 180 * bright[None, None, :]
            name = f'{number:06d}.jpg'
            Image.fromarray(pixels.astype(np.uint8)).save(base / 'data' / name, quality=95)
            names.append(name)
            number += 1
        mat[f'{split}_images_name'] = _cell(names)
        mat[f'{split}_label'] = labels
    savemat(str(base / 'annotation.mat'), mat)
    return base


def _cifar_records(rng: np.random.Generator, n: int, num_classes: int, coarse: bool) -> bytes:
    labels = rng.integers(0, num_classes, n)
    pixels = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
    head = [labels // 5, labels] if coarse else [labels]
    return np.concatenate([np.stack(head, 1).astype(np.uint8), pixels], 1).tobytes()


def make_cifar10(root: Path, per_batch: int = 8, test: int = 8, seed: int = 0) -> Path:
    """``root/cifar10/cifar-10-batches-bin/``: five training batches and a test batch of random records."""
    rng = np.random.default_rng(seed)
    base = root / 'cifar10' / 'cifar-10-batches-bin'
    base.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        (base / f'data_batch_{i}.bin').write_bytes(_cifar_records(rng, per_batch, 10, False))
    (base / 'test_batch.bin').write_bytes(_cifar_records(rng, test, 10, False))
    (base / 'batches.meta.txt').write_text('\n'.join(['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                                                      'frog', 'horse', 'ship', 'truck']) + '\n\n')
    return base


def make_cifar100(root: Path, train: int = 40, test: int = 8, seed: int = 0) -> Path:
    """``root/cifar100/cifar-100-binary/``: train.bin, test.bin (coarse + fine label bytes) and the names."""
    rng = np.random.default_rng(seed)
    base = root / 'cifar100' / 'cifar-100-binary'
    base.mkdir(parents=True, exist_ok=True)
    (base / 'train.bin').write_bytes(_cifar_records(rng, train, 100, True))
    (base / 'test.bin').write_bytes(_cifar_records(rng, test, 100, True))
    (base / 'fine_label_names.txt').write_text('\n'.join(f'class{i}' for i in range(100)) + '\n')
    (base / 'coarse_label_names.txt').write_text('\n'.join(f'super{i}' for i in range(20)) + '\n')
    return base


def make_imagenet(root: Path, wnids: Sequence[str] = ('n01440764', 'n01443537', 'n01484850'), train: int = 6,
                  val: int = 2, seed: int = 0, size=(40, 48)) -> List[str]:
    """``root/imagenet/{train,val}/<wnid>/*.JPEG``: a few images per class, one colour per class."""
    rng = np.random.default_rng(seed)
    for c, wnid in enumerate(wnids):
        for split, n in (('train', train), ('val', val)):
            folder = root / 'imagenet' / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 40, (*size, 3)) + np.array([200 if k == c % 3 else 0 for k in range(3)])
                name = f'{wnid}_{i}.JPEG' if split == 'train' else f'ILSVRC2012_val_{c * 100 + i:08d}.JPEG'
                Image.fromarray(pixels.astype(np.uint8)).save(folder / name, format='JPEG')
    return list(wnids)
