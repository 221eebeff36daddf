"""``FeatureExtractor``: person crops in any common form -> L2-normalised re-ID embeddings."""
from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


from ..data.images import CHANNEL_ORDERS, check_layout, iter_images, to_rgb_tensor
from ..evaluation.verification import cosine_scores, load_threshold, model_identity
from ..precision import resolve_dtype
from ..threads import compute_threads
from .backend import build_runtime, select_backend
from .model import build_embedding_model, resolve_preprocessing
from .quantize import CALIBRATION_SIZE, default_calibration
from .resize_cv2 import resize_like_cv2

if TYPE_CHECKING:
    import PIL.Image

__all__ = ['FeatureExtractor', 'ImageInput', 'CHANNEL_ORDERS', 'RESIZES', 'clip_boxes', 'torch_threads']

ImageInput = Union[str, os.PathLike, 'PIL.Image.Image', np.ndarray, torch.Tensor]
# How a crop is squashed to the input size. 'antialias': the model's interpolation with antialiasing (as PIL and
# torchvision resize the training images). 'cv2': the pixels cv2.resize(crop, (W, H), interpolation=INTER_LINEAR)
# gives a uint8 crop, and so boxmot 25.0.0's ReID backends: bilinear, no antialiasing, OpenCV's fixed point
# (osnet_zoo.inference.resize_cv2). A crop already at the input size is not resized either way.
RESIZES = ('antialias', 'cv2')


def clip_boxes(boxes_xyxy: Any, height: int, width: int, min_size: int = 2) -> Tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) x0, y0, x1, y1 in pixels -> integer crop windows clipped to a ``height`` x ``width``
    frame, and which boxes are kept.

    The rule: each coordinate is rounded to the nearest pixel edge, then clipped to [0, width] (x) or
    [0, height] (y); the crop is ``frame[y0:y1, x0:x1]``. A box is skipped (``kept`` False) when a
    coordinate is not finite, or when its clipped crop is narrower or lower than ``min_size`` pixels
    (empty, inverted, degenerate or entirely outside the frame).
    """
    boxes = boxes_xyxy.detach().cpu().numpy() if isinstance(boxes_xyxy, torch.Tensor) else np.asarray(boxes_xyxy)
    boxes = boxes.astype(np.float64)
    if boxes.size == 0:  # no detections in this frame
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f'boxes_xyxy must have shape (N, 4) (x0, y0, x1, y1), got {tuple(boxes.shape)}.')
    finite = np.isfinite(boxes).all(axis=1)
    rounded = np.where(np.isfinite(boxes), np.round(boxes), 0)
    upper = np.array([width, height, width, height], dtype=np.float64)
    windows = np.clip(rounded, 0, upper).astype(np.int64)
    kept = finite & (windows[:, 2] - windows[:, 0] >= min_size) & (windows[:, 3] - windows[:, 1] >= min_size)
    return windows, kept

def _check_options(channel_order: str, batch_size: int, resize: str) -> None:
    """Refuse a FeatureExtractor option outside its range, naming it."""
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f'channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}.')
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
    if resize not in RESIZES:
        raise ValueError(f'resize must be one of {RESIZES}, got {resize!r}.')


@contextlib.contextmanager
def torch_threads(count: Optional[int]) -> Iterator[None]:
    """Run the block with ``count`` torch CPU threads, then give the caller's count back (None: as it is)."""
    before = torch.get_num_threads()
    if count is None or count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class FeatureExtractor:
    """Re-ID embeddings for person crops, batched, in inference mode.

    >>> extractor = FeatureExtractor('osnet_x0_25.msmt17_combineall', device='cuda', precision='bf16')
    >>> feats = extractor([frame[y0:y1, x0:x1] for (x0, y0, x1, y1) in boxes], channel_order='bgr')
    >>> feats, kept = extractor.from_boxes(frame, boxes_xyxy, channel_order='bgr')  # clipped, skips empty boxes

    Inputs (alone or in a list, mixed freely; output rows follow the input order, a BCHW tensor
    contributing B rows):

    * file paths and PIL images — decoded to RGB (grayscale replicated, alpha dropped);
    * numpy HWC uint8 arrays (or HW grayscale) in ``channel_order`` ('rgb', or 'bgr' for OpenCV frames);
    * torch tensors CHW or BCHW, uint8 (0-255) or float (0-1), in ``channel_order``, on any device.

    Every image is resized (squashed, no crop) to the model's input size with its interpolation
    (antialiased; ``resize='cv2'``: OpenCV's bilinear, as boxmot resizes), then normalised with its mean / std —
    all from the model's timm ``pretrained_cfg``.

    Threads, on the CPU (issue 31): the network runs on ``threads`` (onnxruntime's intra-op pool, or torch's
    count during each call, given back after it); by default ``torch.get_num_threads()`` capped to the CPUs
    this process may use (affinity, cgroup quota) less ``workers``, or torch's count as it is when
    ``OMP_NUM_THREADS`` is set (:func:`osnet_zoo.threads.compute_threads`). With ``spin=False`` (default)
    waiting threads sleep: onnxruntime's pools do not spin, and the small torch ops between the network calls
    (resizing the crops) run on one thread, so no busy-waiting pool takes the CPU another process or our next
    step needs (beside one busy process the old default was 22x slower than idle). ``spin=True`` is the old
    behaviour: the lowest latency on an idle machine only. Torch's own OpenMP pool spins unless the process
    started with ``OMP_WAIT_POLICY=PASSIVE`` (docs/deployment.md).

    INT8 (CPU): ``precision='int8'`` runs the model quantized by post-training static quantization
    (:mod:`osnet_zoo.inference.quantize`; by default NNCF's OpenVINO IR, measured faster, where the ``int8`` extra
    is installed, else onnxruntime's QDQ graph; ``backend='onnxruntime'`` / ``'openvino'`` choose),
    calibrated on ``calibration`` (person crops: a folder, a glob pattern or a list of image paths; default: the
    training images of the run ``checkpoint_path`` names), at most ``calibration_size`` of them; quantized once
    and cached (``$OSNET_ZOO_CACHE/int8``), keyed by the weights and the calibration images' contents.
    """

    def __init__(
            self,
            model: Union[str, nn.Module, None] = None,
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
            backend: str = 'auto',
            threads: Optional[int] = None,
            preprocessing: Optional[Dict[str, Any]] = None,
            fixed_batch: bool = False,
            resize: str = 'antialias',
            spin: bool = False,
            workers: int = 0,
            calibration: Any = None, calibration_size: int = CALIBRATION_SIZE,
    ):
        """
        Args:
            model: a timm model name (e.g. 'osnet_x0_25.msmt17_combineall'; created with ``num_classes=0``), a trained
                model's folder as ``'local-dir:runs/osnet'`` (a run, its final/ or final/model.safetensors) or a module
                returning embeddings (an OSNet with a classifier is used up to its embedding; the module is
                copied, never modified).
            device: 'cpu', 'cuda', ... (default: CUDA when available).
            precision: 'fp32', 'bf16' or 'fp16' for the network, or 'int8' (the class docstring); features in float32.
            batch_size: images per forward pass.
            channel_order: colour order of numpy / tensor inputs ('rgb' or 'bgr'); can be set per call.
            normalize: L2-normalise the features (can be set per call).
            pretrained: load the named model's pretrained weights (timm hub); ignored for modules.
            checkpoint_path: a local checkpoint (torchreid or osnet_zoo, .pth or .safetensors) loaded into
                the named model with ``load_osnet_checkpoint(strict=False)`` instead of pretrained weights; a
                training run (its folder, final/ or final/model.safetensors) also gives the architecture (when
                ``model`` is None) and the input size and mean/std it was trained with.
            optimize: run the PyTorch model through ``optimize_for_inference`` (BN folding, stream batching
                where it pays, channels_last).
            compile: also ``torch.compile`` (True or a mode string); implies ``optimize``.
            cuda_graph: on CUDA, capture a graph for ``batch_size`` (the last partial chunk is padded);
                implies ``optimize``.
            backend: 'auto' (default): the fastest path for the device and precision (``osnet_zoo.inference.backend``):
                on the CPU in fp32 onnxruntime or, where openvino is installed, whichever a one-time timing on this
                machine finds faster (exports checked against PyTorch once, cached in ``$OSNET_ZOO_CACHE``); elsewhere
                the optimised PyTorch model. 'torch', 'onnxruntime' or 'openvino' force one; ``self.plan`` says why.
            threads: CPU threads of the network (default: torch's count capped to the CPUs this process may use
                less ``workers``; see the class docstring).
            preprocessing: overrides of the preprocessing contract (input_size, mean, std, interpolation).
            fixed_batch: the calls bring full batches of ``batch_size`` (a folder, a dataset; the last chunk
                may be smaller): on CUDA, ``backend='auto'`` then also captures a CUDA graph for it.
            resize: 'antialias' (default) or 'cv2' (``cv2.resize`` INTER_LINEAR's pixels, boxmot's): :data:`RESIZES`.
            spin: let waiting threads busy-wait, the old behaviour (see the class docstring).
            workers: the caller's threads or processes running beside the extractor (decoding images).
            calibration, calibration_size: ``precision='int8'``: the crops that calibrate the quantized model (a
                folder, glob, CSV listing or training run; default: the run's training images) and how many.
        """
        _check_options(channel_order, batch_size, resize)
        self.resize = resize
        self.device = torch.device(device if device is not None else ('cuda' if torch.cuda.is_available() else 'cpu'))
        self.dtype = resolve_dtype(precision)
        self.precision = precision
        self.batch_size = int(batch_size)
        self.channel_order, self.normalize = channel_order, normalize

        net = build_embedding_model(model, pretrained, checkpoint_path)
        self.preprocessing = resolve_preprocessing(net, preprocessing)
        self.model_name = (model if isinstance(model, str) else type(model).__name__ if model is not None
                           else net.pretrained_cfg.get('architecture', type(net).__name__))
        self.feature_dim = int(getattr(net, 'head_hidden_size', 0) or getattr(net, 'num_features', 0)) or None
        # what a verification threshold is tied to (load_threshold); None until one is loaded
        self.identity, self.threshold = model_identity(net, self.model_name), None
        plan = select_backend(backend, self.device, precision, optimize, compile, cuda_graph, fixed_batch)
        self._calibration = (default_calibration(calibration, checkpoint_path, model), calibration_size)
        self.spin, self.threads = bool(spin), compute_threads(torch.get_num_threads(), workers, threads)
        self.model, self.plan = self._build_runtime(net, plan, compile)
        self.backend, self.cuda_graph = self.plan.backend, self.plan.cuda_graph
        self._mean = torch.tensor(self.preprocessing['mean'], device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(self.preprocessing['std'], device=self.device).view(1, 3, 1, 1) * 255

    def _build_runtime(self, net: nn.Module, plan: Any, compile: Union[bool, str]) -> Tuple[nn.Module, Any]:
        """An nn.Module, an InferenceModel or an OnnxRuntimeModel, and its plan (another one when onnxruntime
        was chosen automatically and the model could not be exported)."""
        with torch_threads(self.threads):  # an export and its check run on the network's threads too
            return build_runtime(net, plan, self.device, self.precision, self.batch_size,
                                 self.preprocessing['input_size'], threads=self.threads, spinning=self.spin,
                                 compile=compile, calibration=self._calibration[0],
                                 calibration_size=self._calibration[1])

    # ------------------------------------------------------------------------------------ preprocessing

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """(3, h, w) -> float32 (1, 3, H, W) on the device, 0-255 range."""
        _, h, w = self.preprocessing['input_size']
        x = x.to(self.device, non_blocking=True).unsqueeze(0).float()
        if tuple(x.shape[-2:]) == (h, w):
            return x
        if self.resize == 'cv2':
            return resize_like_cv2(x, (h, w))
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
        for index, item in iter_images(inputs):
            with torch_threads(self._preprocess_threads()):
                chunk.append(self._resize(to_rgb_tensor(item, index, order)))
            indices.append(index)
            if len(chunk) == self.batch_size:
                yield self._normalise(chunk), indices
                chunk, indices = [], []
        if chunk:
            yield self._normalise(chunk), indices

    def _preprocess_threads(self) -> Optional[int]:
        """One torch thread for the small ops between network calls on the CPU (no OpenMP team to wake and
        to spin), unless ``spin`` asked for the old behaviour; None: torch's count as it is."""
        return 1 if self.device.type == 'cpu' and not self.spin else None

    def _normalise(self, chunk: List[torch.Tensor]) -> torch.Tensor:
        with torch_threads(self._preprocess_threads()):
            return (torch.cat(chunk) - self._mean) / self._std

    # --------------------------------------------------------------------------------------- inference

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.device.type != 'cpu' or self.plan.backend != 'torch':
            return self._run_network(batch)
        with torch_threads(self.threads):  # the caller's count is given back after the call
            return self._run_network(batch)

    def _run_network(self, batch: torch.Tensor) -> torch.Tensor:
        n = batch.shape[0]
        if self.cuda_graph and n < self.batch_size:  # the graph has a fixed batch: pad the last chunk
            pad = batch[-1:].expand(self.batch_size - n, *batch.shape[1:])
            batch = torch.cat([batch, pad])
        if self.plan.backend == 'torch' and not self.plan.optimize:
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

    @torch.inference_mode()
    def from_boxes(self, frame: Union[np.ndarray, torch.Tensor], boxes_xyxy: Any,
                   channel_order: Optional[str] = None, normalize: Optional[bool] = None,
                   min_size: int = 2) -> Tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of the detections ``boxes_xyxy`` (N, 4: x0, y0, x1, y1 in pixels) in one ``frame``:
        the call a tracker makes each frame.

        ``frame`` is a numpy HWC uint8 image (an OpenCV frame: pass ``channel_order='bgr'``) or a CHW
        tensor. Boxes are rounded and clipped to the frame and boxes whose clipped crop is under
        ``min_size`` pixels wide or high are skipped (see :func:`clip_boxes`); the kept crops go through
        the network in batches of ``batch_size``, exactly as ``extractor([crop, ...])`` would.

        Returns ``(features, kept)``: features (N, D) float32, one row per box in the input order, zero
        rows for skipped boxes; ``kept`` (N,) bool on the same device.
        """
        if isinstance(frame, (np.ndarray, torch.Tensor)):
            check_layout(frame, 'frame')  # the crops' checks would come too late: every box skipped
        if isinstance(frame, np.ndarray):
            if frame.ndim not in (2, 3):
                raise ValueError(f'frame: numpy image of shape {frame.shape}; expected HWC (H, W, 3) or (H, W).')
            height, width = frame.shape[:2]
        elif isinstance(frame, torch.Tensor):
            if frame.dim() != 3:
                raise ValueError(f'frame: tensor of shape {tuple(frame.shape)}; expected CHW.')
            height, width = frame.shape[1:]
        else:
            raise TypeError(f'frame must be a numpy HWC array or a CHW tensor, got {type(frame).__name__}.')
        windows, kept = clip_boxes(boxes_xyxy, int(height), int(width), min_size)
        if isinstance(frame, np.ndarray):
            crops = [frame[y0:y1, x0:x1] for x0, y0, x1, y1 in windows[kept]]
        else:
            crops = [frame[:, y0:y1, x0:x1] for x0, y0, x1, y1 in windows[kept]]
        kept_t = torch.from_numpy(kept).to(self.device)
        if crops:
            feats = self(crops, channel_order=channel_order, normalize=normalize)
            out = feats.new_zeros(len(windows), feats.shape[1])
            out[kept_t] = feats
            return out, kept_t
        dim = self.feature_dim
        if dim is None:  # a module that does not say its embedding size: ask it once
            _, h, w = self.preprocessing['input_size']
            dim = int(self(torch.zeros(3, h, w, dtype=torch.uint8)).shape[1])
        return torch.zeros(len(windows), dim, device=self.device), kept_t

    def iter_batches(self, inputs: Iterable[Any], channel_order: Optional[str] = None,
                     normalize: Optional[bool] = None) -> Iterator[Tuple[List[int], torch.Tensor]]:
        """Like ``__call__`` but lazily: yields (input indices, features) per chunk of ``batch_size``."""
        norm = self.normalize if normalize is None else normalize
        for batch, indices in self._batches(inputs, channel_order):
            with torch.inference_mode():
                feats = self._forward(batch)
                yield indices, F.normalize(feats, dim=1) if norm else feats

    # ------------------------------------------------------------------------------------ verification

    def load_threshold(self, path: Union[str, os.PathLike]) -> 'FeatureExtractor':
        """Use the "same person" threshold that ``python -m osnet_zoo.verify`` recorded at ``path`` (its
        ``verification.json``, or the folder holding it: the run folder) in :meth:`same_person` and :meth:`match`;
        returns the extractor. Refused (a ValueError naming the file and what differs) when the threshold was
        chosen for other weights, another architecture or another preprocessing (input size, interpolation,
        mean / std, ``resize``) than this extractor's: scores are only comparable to the threshold of the model
        and the pixels that made them."""
        self.threshold, self.threshold_record = load_threshold(
            path, self.identity, {**self.preprocessing, 'resize': self.resize})
        return self

    def _features_of(self, x: Any, channel_order: Optional[str]) -> torch.Tensor:
        """Rows of embeddings: ``x`` itself when it is one (D,) or several (N, D) float embeddings of this
        model's size (a numpy array or a tensor), else the embeddings of the images ``x``."""
        if isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim in (1, 2) and x.shape[-1] == self.feature_dim and (
                x.dtype.is_floating_point if isinstance(x, torch.Tensor) else np.issubdtype(x.dtype, np.floating)):
            return torch.as_tensor(x).reshape(-1, self.feature_dim)
        return self(x, channel_order=channel_order, normalize=True)

    def similarity(self, a: Any, b: Any, channel_order: Optional[str] = None) -> torch.Tensor:
        """(len(a), len(b)) cosine similarities, on the CPU: ``a`` and ``b`` are crops (any input form of
        ``__call__``) or embeddings ((D,) or (N, D)); the score ``python -m osnet_zoo.verify`` calibrates."""
        return cosine_scores(self._features_of(a, channel_order), self._features_of(b, channel_order))

    def _require_threshold(self) -> float:
        if self.threshold is None:
            raise ValueError('no threshold loaded: choose one with python -m osnet_zoo.verify, then '
                             'extractor.load_threshold(RUN_FOLDER or verification.json)')
        return self.threshold

    def same_person(self, a: Any, b: Any, channel_order: Optional[str] = None) -> Union[bool, torch.Tensor]:
        """Whether ``a`` and ``b`` show the same person under the loaded threshold (:meth:`load_threshold`;
        similarity >= threshold). One crop or embedding each: a bool; N and N: a (N,) bool tensor, pair by
        pair (``a[i]`` with ``b[i]``); one against N: each of the N against it."""
        threshold = self._require_threshold()
        scores = self.similarity(a, b, channel_order)
        if scores.shape == (1, 1):
            return bool(scores[0, 0] >= threshold)
        if scores.shape[0] == scores.shape[1]:
            return torch.diagonal(scores) >= threshold
        if 1 in scores.shape:
            return scores.flatten() >= threshold
        raise ValueError(f'same_person compares pair by pair: got {scores.shape[0]} and {scores.shape[1]} '
                         'inputs; give as many of each (or one against many), or use match() for every pair')

    def match(self, query: Any, gallery: Any, channel_order: Optional[str] = None) -> torch.Tensor:
        """(len(query), len(gallery)) bool tensor: which gallery entries pass the loaded threshold for each query
        (crops or embeddings on either side); ``similarity`` gives the scores behind it."""
        return self.similarity(query, gallery, channel_order) >= self._require_threshold()

    def __repr__(self) -> str:
        c, h, w = self.preprocessing['input_size']
        return (f'FeatureExtractor(model={self.model_name!r}, device={str(self.device)!r}, '
                f'precision={self.precision!r}, backend={self.plan.describe()!r}, batch_size={self.batch_size}, '
                f'input={h}x{w}, resize={self.resize!r}, channel_order={self.channel_order!r}, '
                f'normalize={self.normalize}, threads={self.threads}, spin={self.spin})')
