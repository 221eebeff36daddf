"""Reading re-ID crops: every image comes out RGB, and a bad file is an error that names it."""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import pil_to_tensor

try:
    from torchvision.io import ImageReadMode, decode_image, read_file
except ImportError:  # torchvision deprecates its decoders (0.29) for TorchCodec; PIL then does the work
    decode_image = None

from .datasets.base import ReIDItem

__all__ = ['ImageReadError', 'read_image', 'read_image_tensor', 'ImageDataset', 'verify_images']


class ImageReadError(OSError):
    """An image file that is missing, truncated or not an image."""


def read_image(path: Union[str, os.PathLike]) -> Image.Image:
    """Decode ``path`` fully and return an RGB image; grayscale, palette and RGBA images are converted
    (alpha is dropped). Raises ImageReadError naming the file when it cannot be decoded."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, not later inside a transform
            return img.convert('RGB') if img.mode != 'RGB' else img.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageReadError(f'cannot read image {path}: {e}') from e


def read_image_tensor(path: Union[str, os.PathLike]) -> torch.Tensor:
    """Decode ``path`` to a uint8 RGB tensor (3, H, W), the same pixels as ``read_image``.

    torchvision's decoders (libjpeg-turbo, libpng) take about half the time of PIL plus the conversion to a
    tensor, which matters in training loaders; formats they do not read (BMP, TIFF, ...) go through PIL.
    Raises ImageReadError naming the file when it cannot be decoded.
    """
    if decode_image is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', DeprecationWarning)  # see the import above
                return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        except RuntimeError:
            pass  # not a format torchvision reads, or a bad file: PIL decides, and names the file if bad
    return pil_to_tensor(read_image(path))


class ImageDataset(Dataset):
    """A torch Dataset over ReIDItems: ``{'image', 'pid', 'camid', 'dsetid', 'path', 'index'}`` per item.

    The transform receives a PIL image, or with ``as_tensor`` a uint8 (3, H, W) tensor (faster to decode).
    """

    def __init__(self, items: Sequence[ReIDItem], transform: Optional[Callable[[Any], Any]] = None,
                 as_tensor: bool = False):
        self.items = list(items)
        self.transform = transform
        self.as_tensor = as_tensor

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        item = self.items[index]
        img = read_image_tensor(item.path) if self.as_tensor else read_image(item.path)
        return {'image': self.transform(img) if self.transform else img, 'pid': item.pid, 'camid': item.camid,
                'dsetid': item.dsetid, 'path': item.path, 'index': index}


def _check(path: str) -> Optional[Tuple[str, str]]:
    try:
        read_image(path)
    except ImageReadError as e:
        return path, str(e.__cause__ or e)
    return None


def verify_images(items: Sequence[Union[ReIDItem, str]], num_workers: int = 4) -> List[Tuple[str, str]]:
    """Decode every image up front; returns ``(path, reason)`` for each bad one (empty list: all good).

    Run it before a long job so that a broken file stops nothing halfway through an epoch.
    """
    paths = [it.path if isinstance(it, ReIDItem) else str(it) for it in items]
    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        return [bad for bad in pool.map(_check, paths, chunksize=64) if bad is not None]
