"""``FeatureExtractor``: person crops in any common form -> L2-normalised re-ID embeddings."""
from __future__ import annotations

import copy
import os
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .optimize import InferenceModel, optimize_for_inference, resolve_dtype

if TYPE_CHECKING:
    import PIL.Image

__all__ = ['FeatureExtractor', 'build_embedding_model', 'ImageInput', 'resolve_preprocessing', 'load_image',
           'CHANNEL_ORDERS']

ImageInput = Union[str, os.PathLike, 'PIL.Image.Image', np.ndarray, torch.Tensor]
CHANNEL_ORDERS = ('rgb', 'bgr')

# OSNet's re-ID preprocessing, used for a module that carries no timm pretrained_cfg.
_OSNET_DEFAULT_CFG = dict(input_size=(3, 256, 128), interpolation='bilinear', mean=(0.485, 0.456, 0.406),
                          std=(0.229, 0.224, 0.225), crop_pct=1.0, crop_mode='squash')


def resolve_preprocessing(model: nn.Module, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The preprocessing contract of ``model``: input_size (C, H, W), interpolation, mean, std, crop_pct,
    crop_mode — from its timm ``pretrained_cfg`` (OSNet's re-ID defaults for a bare module), then
    ``overrides``. Only the squash resize (no crop, ``crop_pct`` 1) is supported: re-ID crops are resized
    whole to H x W."""
    from timm.data import resolve_data_config
    cfg = getattr(model, 'pretrained_cfg', None)
    if not cfg or 'input_size' not in cfg:
        cfg = _OSNET_DEFAULT_CFG
    data_config = resolve_data_config(pretrained_cfg=dict(cfg))
    config = {k: data_config[k] for k in ('input_size', 'interpolation', 'mean', 'std', 'crop_pct', 'crop_mode')}
    config.update(overrides or {})
    config['input_size'] = tuple(int(v) for v in config['input_size'])
    config['mean'] = tuple(float(v) for v in config['mean'])
    config['std'] = tuple(float(v) for v in config['std'])
    if len(config['input_size']) != 3 or config['input_size'][0] != 3:
        raise ValueError(f"input_size must be (3, H, W), got {config['input_size']}.")
    if config['interpolation'] not in ('bilinear', 'bicubic', 'nearest'):
        raise ValueError(f"Unsupported interpolation {config['interpolation']!r} (bilinear, bicubic or nearest).")
    if config['crop_mode'] != 'squash' and float(config['crop_pct']) != 1.0:
        raise ValueError(f"Only the re-ID squash resize is supported (crop_pct 1.0 or crop_mode 'squash'); got "
                         f"crop_mode={config['crop_mode']!r}, crop_pct={config['crop_pct']}.")
    return config


def load_image(path: Union[str, os.PathLike], index: Optional[int] = None) -> 'PIL.Image.Image':
    """Open an image file as RGB (grayscale is replicated, an alpha channel dropped), errors naming it."""
    from PIL import Image, UnidentifiedImageError
    where = f'input {index} ({os.fspath(path)})' if index is not None else os.fspath(path)
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert('RGB') if img.mode != 'RGB' else img.copy()
    except FileNotFoundError as e:
        raise FileNotFoundError(f'{where}: no such image file') from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f'{where}: cannot read the image (corrupt, truncated or not an image): {e}') from e


def _is_pil(x: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
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


def _numpy_to_chw(arr: np.ndarray, index: int, order: str) -> torch.Tensor:
    if arr.dtype != np.uint8:
        raise ValueError(f'input {index}: numpy images must be uint8 HWC (got dtype {arr.dtype}); pass float '
                         'images as torch tensors (CHW, RGB, values in [0, 1]).')
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f'input {index}: numpy image of shape {arr.shape}; expected HWC (H, W, 3) or (H, W).')
    if arr.shape[2] not in (1, 3, 4) and arr.shape[0] in (1, 3):
        raise ValueError(f'input {index}: numpy image of shape {arr.shape} looks channels-first; numpy inputs '
                         'are HWC (OpenCV / PIL layout). Pass CHW images as torch tensors.')
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
    if t.dim() >= 3 and t.shape[-3] not in (1, 3, 4) and t.shape[-1] in (3, 4):
        raise ValueError(f'input {index}: tensor of shape {tuple(t.shape)} looks channels-last; tensors are '
                         'CHW / BCHW (use .permute(2, 0, 1) for an HWC image).')
    if t.dtype != torch.uint8 and not t.is_floating_point():
        raise ValueError(f'input {index}: tensor dtype {t.dtype}; expected uint8 (0-255) or float (0-1).')
    if t.is_floating_point() and t.numel():
        lo, hi = torch.aminmax(t.detach())  # once per input tensor (one device sync)
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f'input {index}: float tensor values span [{lo.item():.3g}, {hi.item():.3g}]; float images '
                'must be RGB/BGR in [0, 1] (not normalised yet). Pass uint8 tensors for 0-255 pixels.')
    return items


def _flatten_inputs(inputs: Any) -> Iterator[Any]:
    """Yields single images (a BCHW tensor yields B of them); a lone image is a batch of one."""
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


def build_embedding_model(model: Union[str, nn.Module], pretrained: bool = True,
                          checkpoint_path: Union[str, os.PathLike, None] = None) -> nn.Module:
    """An eval-mode module returning embeddings.

    ``model`` is a timm name (created with ``num_classes=0``; pretrained weights unless ``checkpoint_path``
    names a local checkpoint, loaded with ``load_osnet_checkpoint(strict=False)``) or a module (copied; an
    OSNet with a classifier has it removed, so that it returns the embedding).
    """
    if isinstance(model, str):
        import timm
        from ..weights import load_osnet_checkpoint
        if checkpoint_path is not None:
            net = timm.create_model(model, pretrained=False, num_classes=0)
            load_osnet_checkpoint(net, checkpoint_path, strict=False)
        else:
            net = timm.create_model(model, pretrained=pretrained, num_classes=0)
    elif isinstance(model, nn.Module):
        if checkpoint_path is not None:
            raise ValueError('checkpoint_path is for a model name; load the checkpoint into your module '
                             'yourself (osnet_zoo.load_osnet_checkpoint).')
        net = copy.deepcopy(model)
        if getattr(net, 'num_classes', 0) and hasattr(net, 'reset_classifier'):
            net.reset_classifier(0)  # use the embedding, not the logits
    else:
        raise TypeError(f'model must be a timm model name or an nn.Module, got {type(model).__name__}.')
    return net.eval()


class FeatureExtractor:
    """Re-ID embeddings for person crops, batched, in inference mode.

    >>> extractor = FeatureExtractor('osnet_x0_25.msmt17_combineall', device='cuda', precision='bf16')
    >>> feats = extractor([frame[y0:y1, x0:x1] for (x0, y0, x1, y1) in boxes], channel_order='bgr')

    Inputs (alone or in a list, mixed freely; output rows follow the input order, a BCHW tensor
    contributing B rows):

    * file paths and PIL images — decoded to RGB (grayscale replicated, alpha dropped);
    * numpy HWC uint8 arrays (or HW grayscale) in ``channel_order`` ('rgb', or 'bgr' for OpenCV frames);
    * torch tensors CHW or BCHW, uint8 (0-255) or float (0-1), in ``channel_order``, on any device.

    Every image is resized (squashed, no crop) to the model's input size with its interpolation
    (antialiased), then normalised with its mean / std — all from the model's timm ``pretrained_cfg``.
    """

    def __init__(
            self,
            model: Union[str, nn.Module] = 'osnet_x1_0',
            device: Union[str, torch.device, None] = None,
            precision: str = 'fp32',
            batch_size: int = 64,
            channel_order: str = 'rgb',
            normalize: bool = True,
            pretrained: bool = True,
            checkpoint_path: Union[str, os.PathLike, None] = None,
            optimize: bool = False,
            compile: Union[bool, str] = False,
            cuda_graph: bool = False,
            backend: str = 'torch',
            threads: Optional[int] = None,
            preprocessing: Optional[Dict[str, Any]] = None,
    ):
        """
        Args:
            model: a timm model name (e.g. 'osnet_x0_25.msmt17_combineall'; created with ``num_classes=0``) or a module
                returning embeddings (an OSNet with a classifier is used up to its embedding; the module is
                copied, never modified).
            device: 'cpu', 'cuda', ... (default: CUDA when available).
            precision: 'fp32', 'bf16' or 'fp16' for the network; features are returned in float32.
            batch_size: images per forward pass.
            channel_order: colour order of numpy / tensor inputs ('rgb' or 'bgr'); can be set per call.
            normalize: L2-normalise the features (can be set per call).
            pretrained: load the named model's pretrained weights (timm hub); ignored for modules.
            checkpoint_path: a local checkpoint (torchreid or osnet_zoo, .pth or .safetensors) loaded into
                the named model with ``load_osnet_checkpoint(strict=False)`` instead of pretrained weights.
            optimize: run ``optimize_for_inference`` (BN folding, stream batching where it pays, channels_last).
            compile: also ``torch.compile`` (True or a mode string); implies ``optimize``.
            cuda_graph: on CUDA, capture a graph for ``batch_size`` (the last partial chunk is padded);
                implies ``optimize``.
            backend: 'torch', or 'onnxruntime' (CPU, fp32): the model is exported to ONNX (checked against
                PyTorch) and run by onnxruntime — the fastest CPU path we measured (needs the
                ``export`` extra: onnx, onnxruntime).
            threads: onnxruntime intra-op threads (default: one per physical core).
            preprocessing: overrides of the preprocessing contract (input_size, mean, std, interpolation).
        """
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f'channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}.')
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
        self.device = torch.device(device if device is not None else ('cuda' if torch.cuda.is_available() else 'cpu'))
        self.dtype = resolve_dtype(precision)
        self.precision = precision
        self.batch_size = int(batch_size)
        self.channel_order = channel_order
        self.normalize = normalize

        net = build_embedding_model(model, pretrained, checkpoint_path)
        self.preprocessing = resolve_preprocessing(net, preprocessing)
        self.model_name = model if isinstance(model, str) else type(model).__name__
        self.feature_dim = int(getattr(net, 'head_hidden_size', 0) or getattr(net, 'num_features', 0)) or None
        optimize = optimize or bool(compile) or cuda_graph
        if cuda_graph and self.device.type != 'cuda':
            raise ValueError(f'cuda_graph=True needs a CUDA device, got {self.device}.')
        if backend not in ('torch', 'onnxruntime'):
            raise ValueError(f"backend must be 'torch' or 'onnxruntime', got {backend!r}.")
        self.backend = backend
        self.model: Any  # an nn.Module, an InferenceModel or an OnnxRuntimeModel
        if backend == 'onnxruntime':
            if self.device.type != 'cpu' or self.dtype != torch.float32 or optimize:
                raise ValueError("backend='onnxruntime' runs on the CPU in fp32, without optimize / compile / "
                                 'cuda_graph (onnxruntime does its own graph optimisation).')
            from .onnx_runtime import OnnxRuntimeModel
            # preprocessing runs between the calls: spinning onnxruntime threads would slow it down
            self.model = OnnxRuntimeModel(net, threads=threads, spinning=False)
        elif optimize:
            self.model = optimize_for_inference(
                net, precision=self.dtype, device=self.device, compile=compile,
                cuda_graph_batch_sizes=(self.batch_size,) if cuda_graph else (),
                input_size=self.preprocessing['input_size'])
        else:
            self.model = net.to(device=self.device, dtype=self.dtype).eval()
        self.cuda_graph = cuda_graph
        self._mean = torch.tensor(self.preprocessing['mean'], device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(self.preprocessing['std'], device=self.device).view(1, 3, 1, 1) * 255

    # ------------------------------------------------------------------------------------ preprocessing

    def _to_chw(self, index: int, item: Any, order: str) -> torch.Tensor:
        """One image -> RGB (3, h, w) uint8 or float tensor (float in 0-255), not yet resized."""
        if isinstance(item, (str, os.PathLike)):
            item = load_image(item, index)
        if _is_pil(item):
            if item.mode != 'RGB':
                item = item.convert('RGB')
            if item.width == 0 or item.height == 0:
                raise ValueError(f'input {index}: empty PIL image ({item.width}x{item.height}).')
            return torch.from_numpy(np.asarray(item, dtype=np.uint8).copy()).permute(2, 0, 1)
        if isinstance(item, np.ndarray):
            return _numpy_to_chw(item, index, order)
        if isinstance(item, torch.Tensor):
            x = _pixels_to_chw(item, index, order, 'tensor')
            return x.float() * 255 if x.is_floating_point() else x
        raise TypeError(f'input {index}: unsupported type {type(item).__name__}; expected a path, PIL image, '
                        'numpy HWC uint8 array or torch tensor.')

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """(3, h, w) -> float32 (1, 3, H, W) on the device, 0-255 range."""
        _, h, w = self.preprocessing['input_size']
        x = x.to(self.device, non_blocking=True).unsqueeze(0).float()
        if tuple(x.shape[-2:]) == (h, w):
            return x
        mode = self.preprocessing['interpolation']
        if mode == 'nearest':
            return F.interpolate(x, size=(h, w), mode='nearest')
        out = F.interpolate(x, size=(h, w), mode=mode, align_corners=False, antialias=True)
        return out.clamp_(0, 255) if mode == 'bicubic' else out

    def preprocess(self, inputs: Any, channel_order: Optional[str] = None) -> torch.Tensor:
        """Images -> the normalised float32 batch (N, 3, H, W) the network sees (on the device)."""
        batches = [b for b, _ in self._batches(inputs, channel_order)]
        return torch.cat(batches) if batches else self._empty_error()

    def _empty_error(self):
        raise ValueError('No images given (empty input).')

    def _batches(self, inputs: Any, channel_order: Optional[str]) -> Iterator[Tuple[torch.Tensor, List[int]]]:
        order = channel_order or self.channel_order
        if order not in CHANNEL_ORDERS:
            raise ValueError(f'channel_order must be one of {CHANNEL_ORDERS}, got {order!r}.')
        chunk: List[torch.Tensor] = []
        indices: List[int] = []
        for index, item in _flatten_inputs(inputs):
            chunk.append(self._resize(self._to_chw(index, item, order)))
            indices.append(index)
            if len(chunk) == self.batch_size:
                yield self._normalise(chunk), indices
                chunk, indices = [], []
        if chunk:
            yield self._normalise(chunk), indices

    def _normalise(self, chunk: List[torch.Tensor]) -> torch.Tensor:
        return (torch.cat(chunk) - self._mean) / self._std

    # --------------------------------------------------------------------------------------- inference

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        n = batch.shape[0]
        if self.cuda_graph and n < self.batch_size:  # the graph has a fixed batch: pad the last chunk
            pad = batch[-1:].expand(self.batch_size - n, *batch.shape[1:])
            batch = torch.cat([batch, pad])
        if isinstance(self.model, nn.Module) and not isinstance(self.model, InferenceModel):
            out = self.model(batch.to(self.dtype))
        else:  # InferenceModel / OnnxRuntimeModel take the float32 batch
            out = self.model(batch)
        return out[:n].float()

    @torch.inference_mode()
    def __call__(self, inputs: Any, channel_order: Optional[str] = None,
                 normalize: Optional[bool] = None) -> torch.Tensor:
        """Embeddings (N, D) float32 on ``device`` (L2-normalised unless ``normalize=False``)."""
        outs = [self._forward(batch) for batch, _ in self._batches(inputs, channel_order)]
        if not outs:
            self._empty_error()
        feats = torch.cat(outs)
        if feats.dim() != 2:
            raise ValueError(f'The model returned shape {tuple(feats.shape)}; expected (N, D) embeddings.')
        if self.normalize if normalize is None else normalize:
            feats = F.normalize(feats, dim=1)
        return feats

    def iter_batches(self, inputs: Iterable[Any], channel_order: Optional[str] = None,
                     normalize: Optional[bool] = None) -> Iterator[Tuple[List[int], torch.Tensor]]:
        """Like ``__call__`` but lazily: yields (input indices, features) per chunk of ``batch_size``."""
        norm = self.normalize if normalize is None else normalize
        for batch, indices in self._batches(inputs, channel_order):
            with torch.inference_mode():
                feats = self._forward(batch)
                yield indices, F.normalize(feats, dim=1) if norm else feats

    def __repr__(self) -> str:
        c, h, w = self.preprocessing['input_size']
        return (f'FeatureExtractor(model={self.model_name!r}, device={str(self.device)!r}, '
                f'precision={self.precision!r}, backend={self.backend!r}, batch_size={self.batch_size}, '
                f'input={h}x{w}, channel_order={self.channel_order!r}, normalize={self.normalize})')
