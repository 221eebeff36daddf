"""Reading images, the package's one image reader: every image comes out RGB, and a bad one is an error that
names it.

* :func:`read_image` / :func:`read_image_tensor`: a file, as a PIL image / a uint8 (3, H, W) tensor;
* :func:`to_rgb_tensor`: any single image a user hands over — a path, a PIL image, a numpy HWC array (RGB or
  BGR), a CHW tensor (uint8 or float in [0, 1]) — as an RGB (3, H, W) tensor;
* :class:`ImageDataset`: a torch Dataset over ReIDItems;
* :func:`find_images`: the image files of folders, glob patterns and files (extract, search, INT8 calibration).
"""
from __future__ import annotations

import contextlib
import glob
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import pil_to_tensor

try:
    from torchvision.io import ImageReadMode, decode_image, read_file
except ImportError:  # torchvision deprecates its decoders (0.29) for TorchCodec; PIL then does the work
    decode_image = None

from .datasets.base import IMAGE_EXTENSIONS, ReIDItem
from .seeding import seeded_rng

__all__ = ['ImageReadError', 'ImageNotFoundError', 'CHANNEL_ORDERS', 'read_image', 'read_image_tensor',
           'to_rgb_tensor', 'iter_images', 'check_layout', 'ImageDataset', 'verify_images', 'find_images']

CHANNEL_ORDERS = ('rgb', 'bgr')


class ImageReadError(OSError, ValueError):
    """An image file that is missing, truncated or not an image (an OSError, and a ValueError for callers
    that treat any bad input alike)."""


class ImageNotFoundError(ImageReadError, FileNotFoundError):
    """An image file that does not exist."""


def read_image(path: Union[str, os.PathLike]) -> Image.Image:
    """Decode ``path`` fully and return an RGB image; grayscale, palette and RGBA images are converted
    (alpha is dropped), 16-bit images scaled to 8 bits (the high byte). Raises ImageReadError naming the file when it
    cannot be decoded."""
    if not os.path.isfile(path):
        raise ImageNotFoundError(f'no such image file: {os.fspath(path)}')
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, not later inside a transform
            if img.mode in _DEEP_GRAY_MODES:
                return _deep_gray_to_rgb(img, path)
            return img.convert('RGB') if img.mode != 'RGB' else img.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        if isinstance(e, ImageReadError):
            raise
        raise ImageReadError(f'cannot read image {path}: {e}') from e


# PIL modes of 16-bit (and 32-bit integer) grayscale files: convert('RGB') would clip them to white
_DEEP_GRAY_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')


def _deep_gray_to_rgb(img: Image.Image, path: Union[str, os.PathLike]) -> Image.Image:
    """A 16-bit grayscale image as 8-bit RGB: the high byte of each pixel (what 16-bit RGB files give)."""
    values = np.asarray(img).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ImageReadError(f'cannot read image {path}: {img.mode} pixels span [{values.min()}, {values.max()}], '
                             'not a 16-bit image; convert it to 8-bit RGB first')
    eight = (values >> 8).astype(np.uint8)
    return Image.fromarray(np.repeat(eight[:, :, None], 3, axis=2), mode='RGB')


def read_image_tensor(path: Union[str, os.PathLike]) -> torch.Tensor:
    """Decode ``path`` to a uint8 RGB tensor (3, H, W), the same pixels as ``read_image`` (16-bit files
    keep the high byte of each value).

    torchvision's decoders (libjpeg-turbo, libpng) take about half the time of PIL plus the conversion to a
    tensor, which matters in training loaders; formats they do not read (BMP, TIFF, ...) go through PIL.
    Raises ImageReadError naming the file when it cannot be decoded.
    """
    if decode_image is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', DeprecationWarning)  # see the import above
                image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
            if image.dtype == torch.uint16:  # a 16-bit PNG: the high byte, as read_image gives
                return (image.to(torch.int32) >> 8).to(torch.uint8)
            if image.dtype == torch.uint8:
                return image
        except RuntimeError:
            pass  # not a format torchvision reads, or a bad file: PIL decides, and names the file if bad
    return pil_to_tensor(read_image(path))


def _is_pil(x: Any) -> bool:
    return isinstance(x, Image.Image)


def _pixels_to_chw(x: torch.Tensor, index: int, order: str, kind: str) -> torch.Tensor:
    """(C, H, W) uint8 or float tensor in ``order`` -> RGB (3, H, W); replicates single-channel images."""
    c, h, w = x.shape
    if h == 0 or w == 0:
        raise ValueError(f'input {index}: empty image ({kind} of shape {tuple(x.shape)}).')
    if c == 1:
        x = x.expand(3, h, w)
    elif c == 4:
        raise ValueError(f'input {index}: {kind} has 4 channels (RGBA/BGRA); drop the alpha channel first '
                         f'(e.g. arr[..., :3] or tensor[:3]).')
    elif c != 3:
        raise ValueError(f'input {index}: {kind} has {c} channels; expected 3 (colour) or 1 (grayscale).')
    elif order == 'bgr':
        x = x.flip(0)
    return x


def check_layout(image: Union[np.ndarray, torch.Tensor], name: str) -> None:
    """Refuse a numpy image that looks channels-first (numpy images are HWC) or a tensor that looks
    channels-last (tensors are CHW / BCHW); ``name`` says which input, e.g. ``'input 3'`` or ``'frame'``."""
    shape = tuple(image.shape)
    if isinstance(image, np.ndarray) and len(shape) == 3 and shape[2] not in (1, 3, 4) and shape[0] in (1, 3):
        raise ValueError(f'{name}: numpy image of shape {shape} looks channels-first; numpy inputs are HWC '
                         '(OpenCV / PIL layout). Pass CHW images as torch tensors.')
    if isinstance(image, torch.Tensor) and len(shape) >= 3 and shape[-3] not in (1, 3, 4) and shape[-1] in (3, 4):
        raise ValueError(f'{name}: tensor of shape {shape} looks channels-last; tensors are CHW / BCHW (use '
                         '.permute(2, 0, 1) for an HWC image).')


def _numpy_to_chw(arr: np.ndarray, index: int, order: str) -> torch.Tensor:
    if arr.dtype != np.uint8:
        raise ValueError(f'input {index}: numpy images must be uint8 HWC (got dtype {arr.dtype}); pass float '
                         'images as torch tensors (CHW, RGB, values in [0, 1]).')
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f'input {index}: numpy image of shape {arr.shape}; expected HWC (H, W, 3) or (H, W).')
    check_layout(arr, f'input {index}')
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:  # torch.from_numpy wants a writable buffer (e.g. np.asarray of a PIL image)
        arr = arr.copy()
    return _pixels_to_chw(torch.from_numpy(arr).permute(2, 0, 1), index, order, 'numpy image')


def _tensor_items(t: torch.Tensor, index: int) -> List[torch.Tensor]:
    if t.dim() == 3:
        items = [t]
    elif t.dim() == 4:
        items = list(t.unbind(0))
    else:
        raise ValueError(f'input {index}: tensor of shape {tuple(t.shape)}; expected CHW or BCHW.')
    check_layout(t, f'input {index}')
    if t.dtype != torch.uint8 and not t.is_floating_point():
        raise ValueError(f'input {index}: tensor dtype {t.dtype}; expected uint8 (0-255) or float (0-1).')
    if t.is_floating_point() and t.numel():
        lo, hi = torch.aminmax(t.detach())  # once per input tensor (one device sync)
        if not bool(torch.isfinite(lo) & torch.isfinite(hi)):  # NaN/inf would give all-NaN features
            kind = 'NaN' if bool(torch.isnan(t).any()) else 'inf'
            raise ValueError(f'input {index}: float tensor has {kind} pixels; images must be finite RGB/BGR '
                             'values in [0, 1].')
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f'input {index}: float tensor values span [{lo.item():.3g}, {hi.item():.3g}]; float images '
                'must be RGB/BGR in [0, 1] (not normalised yet). Pass uint8 tensors for 0-255 pixels.')
    return items


def iter_images(inputs: Any) -> Iterator[Tuple[int, Any]]:
    """``(input index, image)`` for each single image of ``inputs`` (a lone image is a batch of one; a
    BCHW tensor yields B images with the same index)."""
    if isinstance(inputs, (str, os.PathLike, np.ndarray, torch.Tensor)) or _is_pil(inputs):
        inputs = [inputs]
    elif not isinstance(inputs, Iterable):
        raise TypeError(f'Expected an image or a list of images, got {type(inputs).__name__}.')
    for index, item in enumerate(inputs):
        if isinstance(item, torch.Tensor):
            for sub in _tensor_items(item, index):
                yield index, sub
        else:
            yield index, item


def to_rgb_tensor(item: Any, index: int = 0, channel_order: str = 'rgb') -> torch.Tensor:
    """One image -> RGB (3, h, w): uint8, or float in 0-255 for float tensors; not resized.

    ``item`` is a file path, a PIL image, a numpy HWC (or HW) uint8 array, or a CHW tensor (uint8, or float
    in [0, 1]); arrays and tensors are in ``channel_order`` ('rgb', or 'bgr' for OpenCV frames). Errors
    name the input by ``index``.
    """
    if isinstance(item, (str, os.PathLike)):
        try:
            item = read_image(item)
        except ImageReadError as e:
            raise type(e)(f'input {index} ({os.fspath(item)}): {e}') from e
    if _is_pil(item):
        if item.mode in _DEEP_GRAY_MODES:
            item = _deep_gray_to_rgb(item, f'input {index}')
        elif item.mode != 'RGB':
            item = item.convert('RGB')
        if item.width == 0 or item.height == 0:
            raise ValueError(f'input {index}: empty PIL image ({item.width}x{item.height}).')
        return torch.from_numpy(np.asarray(item, dtype=np.uint8).copy()).permute(2, 0, 1)
    if isinstance(item, np.ndarray):
        return _numpy_to_chw(item, index, channel_order)
    if isinstance(item, torch.Tensor):
        x = _pixels_to_chw(item, index, channel_order, 'tensor')
        return x.float() * 255 if x.is_floating_point() else x
    raise TypeError(f'input {index}: unsupported type {type(item).__name__}; expected a path, PIL image, '
                    'numpy HWC uint8 array or torch tensor.')


class ImageDataset(Dataset):
    """A torch Dataset over ReIDItems: ``{'image', 'pid', 'camid', 'dsetid', 'path', 'index'}`` per item.

    The transform receives a PIL image, or with ``as_tensor`` a uint8 (3, H, W) tensor (faster to decode).
    A key is an index, or an ``(index, seed)`` pair (from :class:`~osnet_zoo.data.EpochBatches`): then the
    transform draws its randomness from generators seeded with ``seed`` alone, so a sample's augmentation
    does not depend on which worker process builds it.
    """

    def __init__(self, items: Sequence[ReIDItem], transform: Optional[Callable[[Any], Any]] = None,
                 as_tensor: bool = False):
        self.items = list(items)
        self.transform = transform
        self.as_tensor = as_tensor

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        item = self.items[index]
        img = read_image_tensor(item.path) if self.as_tensor else read_image(item.path)
        if self.transform is not None:
            with seeded_rng(seed) if seed is not None else contextlib.nullcontext():
                img = self.transform(img)
        return {'image': img, 'pid': item.pid, 'camid': item.camid, 'dsetid': item.dsetid, 'path': item.path,
                'index': index}


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


def find_images(sources: Sequence[str]) -> List[str]:
    """Image paths from folders (searched recursively), glob patterns and files, in a stable order
    (each source sorted, sources in the given order, duplicates dropped)."""
    found: List[str] = []
    for source in sources:
        if any(ch in source for ch in '*?['):
            matches = sorted(p for p in glob.glob(source, recursive=True)
                             if os.path.isfile(p) and p.lower().endswith(IMAGE_EXTENSIONS))
            if not matches:
                raise FileNotFoundError(f'No images match the pattern {source!r} (extensions: '
                                        f'{", ".join(IMAGE_EXTENSIONS)}).')
        elif os.path.isdir(source):
            matches = sorted(os.path.join(root, name) for root, _, names in os.walk(source, onerror=_unreadable)
                             for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
            if not matches:
                raise FileNotFoundError(f'No images found under the folder {source!r} (extensions: '
                                        f'{", ".join(IMAGE_EXTENSIONS)}).')
        elif os.path.isfile(source):
            matches = [source]
        else:
            raise FileNotFoundError(f'{source!r} is neither a folder, an image file nor a glob pattern that matches.')
        found.extend(os.path.normpath(p) for p in matches)
    # one row per image file: a directory symlink loop ("**" follows it) or a second link to a file found
    # already would repeat it
    seen: set = set()
    return [p for p in found if not (os.path.realpath(p) in seen or seen.add(os.path.realpath(p)))]


def _unreadable(error: OSError) -> None:
    """``os.walk``'s error handler: a folder that cannot be listed stops the listing, naming it."""
    raise PermissionError(f'cannot list the folder {error.filename}: {error.strerror}; its images would be '
                          'missing from the output (fix its permissions or leave it out).') from None
