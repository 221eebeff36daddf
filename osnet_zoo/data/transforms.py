"""Train and test transforms (torchvision.transforms.v2), as in the OSNet papers.

Train: random flip, random crop (enlarge by 1/8 then crop back, half of the time), random patch, colour
jitter, random erasing; test: resize to 256x128 and normalise. Inputs are PIL images or uint8 tensors.
The training loader stops at uint8 (a quarter of the bytes to pin and copy) and ``normalize_batch``
finishes on the device.

The random draws come from torch's and Python's global generators, as in torchvision; ``seeded_rng`` pins
them for one sample, which is how the training loader makes every augmented sample a function of
(seed, epoch, position) alone, whichever worker process produces it.
"""
from __future__ import annotations

import math
import os
import random
from collections import deque
from typing import Any, Optional, Sequence, Tuple, Union

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .images import read_image_tensor
from .seeding import sample_seed, seeded_rng

__all__ = ['IMAGENET_MEAN', 'IMAGENET_STD', 'RandomPatch', 'build_train_transform', 'build_test_transform',
           'TRAIN_AUGMENTATIONS', 'normalize_batch', 'sample_seed', 'seeded_rng']

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_AUGMENTATIONS = ('random_flip', 'random_crop', 'random_patch', 'color_jitter', 'random_erase')


class RandomPatch(v2.Transform):
    """Random patch (Zhou et al., TPAMI 2021): paste a patch cut from another image onto this one.

    With probability ``p`` a random patch (area fraction ``area``, aspect ``aspect``) of another image,
    maybe flipped and slightly rotated, is pasted at a random place: synthetic occlusion by other people
    and things. Where the patch comes from:

    - ``donors`` given (image paths, e.g. the training set): a donor drawn uniformly at random. The output
      then depends only on the input and the random draws, so seeded samples are reproducible in any
      worker process and after a resume. The training loader uses this.
    - no donors: the paper's pool. Every call cuts a patch from the incoming image into a pool
      (``pool_capacity`` patches), and pasting starts once it holds ``min_pool_size``. The pool is state of
      the process it lives in, so its output depends on what that process saw before.
    """

    def __init__(self, p: float = 0.5, pool_capacity: int = 50000, min_pool_size: int = 100,
                 area: Tuple[float, float] = (0.01, 0.5), aspect: Tuple[float, float] = (0.1, 10.0),
                 p_flip: float = 0.5, p_rotate: float = 0.5, max_degrees: float = 10.0,
                 donors: Optional[Sequence[Union[str, os.PathLike]]] = None):
        super().__init__()
        self.p, self.min_pool_size = p, min_pool_size
        self.area, self.aspect = area, aspect
        self.p_flip, self.p_rotate, self.max_degrees = p_flip, p_rotate, max_degrees
        self.pool: deque = deque(maxlen=pool_capacity)
        self.donors = [str(d) for d in donors] if donors is not None else None
        if self.donors is not None and not self.donors:
            raise ValueError('RandomPatch: donors is empty; give image paths or None for the pool.')

    def _cut(self, img: torch.Tensor) -> Optional[torch.Tensor]:
        h, w = img.shape[-2:]
        size = self._patch_size(h, w)
        if size is None:
            return None
        y, x = random.randint(0, h - size[0]), random.randint(0, w - size[1])
        return img[..., y:y + size[0], x:x + size[1]]

    def _donor_patch(self) -> Optional[torch.Tensor]:
        path = self.donors[random.randrange(len(self.donors))]
        return self._cut(read_image_tensor(path))

    def _patch_size(self, h: int, w: int) -> Optional[Tuple[int, int]]:
        for _ in range(100):
            area = random.uniform(*self.area) * h * w
            ratio = math.exp(random.uniform(math.log(self.aspect[0]), math.log(self.aspect[1])))
            ph, pw = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
            if 0 < ph < h and 0 < pw < w:
                return ph, pw
        return None

    def transform(self, inpt: Any, params: dict) -> Any:
        """The v2 ``Transform`` hook: an image tensor (..., C, H, W) with a patch pasted on (a copy), or
        the input itself when nothing is pasted; labels and other non-images pass through."""
        if not isinstance(inpt, torch.Tensor) or inpt.ndim < 3:
            return inpt  # labels and other passengers go through untouched
        img = inpt
        h, w = img.shape[-2:]
        if self.donors is not None:
            if random.random() > self.p:
                return img
            patch = self._donor_patch()
            if patch is None:
                return img
            if patch.dtype != img.dtype:  # donors decode to uint8; match an image already in float
                patch = TF.to_dtype(patch, img.dtype, scale=True)
        else:
            cut = self._cut(img)
            if cut is not None:
                self.pool.append(cut.clone())
            if len(self.pool) < self.min_pool_size or random.random() > self.p:
                return img
            patch = random.choice(self.pool)
        if random.random() < self.p_flip:
            patch = patch.flip(-1)
        if random.random() < self.p_rotate:
            patch = TF.rotate(patch, random.uniform(-self.max_degrees, self.max_degrees))
        ph, pw = min(patch.shape[-2], h), min(patch.shape[-1], w)
        y, x = random.randint(0, h - ph), random.randint(0, w - pw)
        out = img.clone()
        out[..., y:y + ph, x:x + pw] = patch[..., :ph, :pw]
        return out


def build_train_transform(height: int = 256, width: int = 128,
                          augmentations: Sequence[str] = ('random_flip', 'random_crop', 'random_erase'),
                          mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                          patch_donors: Optional[Sequence[Union[str, os.PathLike]]] = None,
                          normalize: bool = True) -> v2.Compose:
    """The training pipeline with the chosen ``augmentations`` (any of ``TRAIN_AUGMENTATIONS``).

    random_crop: half of the time resize to 9/8 of the size and crop back at random, else plain resize;
    color_jitter: brightness 0.2, contrast 0.15; random_erase: p=0.5, area 2-40%, erased to the mean;
    random_patch: see ``RandomPatch`` (``patch_donors``: the images it cuts patches from; default its pool).
    ``normalize=False`` ends at a uint8 (3, H, W) tensor (erasing fills the mean colour, rounded); apply
    ``normalize_batch`` to the batch, on the device, to get what ``normalize=True`` returns.
    """
    unknown = set(augmentations) - set(TRAIN_AUGMENTATIONS)
    if unknown:
        raise ValueError(f'unknown augmentations {sorted(unknown)}; choose from {TRAIN_AUGMENTATIONS}')
    steps: list = [v2.ToImage()]
    if 'random_patch' in augmentations:
        steps.append(RandomPatch(donors=patch_donors))
    resize = v2.Resize((height, width), antialias=True)
    if 'random_crop' in augmentations:
        big = (int(round(height * 1.125)), int(round(width * 1.125)))
        steps.append(v2.RandomChoice([resize, v2.Compose([v2.Resize(big, antialias=True),
                                                          v2.RandomCrop((height, width))])]))
    else:
        steps.append(resize)
    if 'random_flip' in augmentations:
        steps.append(v2.RandomHorizontalFlip())
    if 'color_jitter' in augmentations:
        steps.append(v2.ColorJitter(brightness=0.2, contrast=0.15))
    if normalize:
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if 'random_erase' in augmentations:
        fill: Any = 0 if normalize else [int(round(255 * m)) for m in mean]
        steps.append(v2.RandomErasing(p=0.5, scale=(0.02, 0.4), ratio=(0.3, 3.33), value=fill))
    return v2.Compose(steps)


def normalize_batch(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD,
                    memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """uint8 images (N, 3, H, W), on any device, to normalised float32 ``(x / 255 - mean) / std`` in
    ``memory_format`` (the layout change is done on the uint8 input, where it is four times cheaper)."""
    if images.dtype != torch.uint8:
        raise TypeError(f'normalize_batch expects uint8 images, got {images.dtype}')
    scale = 255.0 * torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    shift = 255.0 * torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    return images.contiguous(memory_format=memory_format).float().sub_(shift).div_(scale)


def build_test_transform(height: int = 256, width: int = 128, mean: Sequence[float] = IMAGENET_MEAN,
                         std: Sequence[float] = IMAGENET_STD, normalize: bool = True) -> v2.Compose:
    """Resize (squash, in uint8) to height x width, scale to [0, 1], normalise. ``normalize=False`` stops
    at the resized uint8 tensor; ``normalize_batch`` then gives the same values on the device."""
    steps = [v2.ToImage(), v2.Resize((height, width), antialias=True)]
    if normalize:
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(steps)
