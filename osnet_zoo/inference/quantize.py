"""INT8 for the CPU: post-training static quantization of the embedding model with a calibration set.

The calibration set is a few hundred person crops: the user's own (a folder searched recursively, a glob
pattern or one image file), or by default images of the training set of the run the model comes from (its
``config.json`` names the sources; the same images the run trained on, prepared as evaluation prepares them).
Two engines quantize the BN-folded fp32 ONNX export of :mod:`osnet_zoo.inference.export`:

* ``onnxruntime``: ``onnxruntime.quantization.quantize_static``, QDQ format, per-channel int8 weights, uint8
  activations calibrated with MinMax; the result is an ``.onnx`` file any onnxruntime (boxmot's ONNX
  backend) runs.
* ``openvino``: NNCF's ``nncf.quantize`` on the OpenVINO model of that ONNX file; the result is an OpenVINO
  IR (``.xml`` + ``.bin``) that OpenVINO runs.

:data:`DEFAULT_ENGINE` (OpenVINO's) is the one measured faster on our CPU at the same accuracy
(benchmarks/RESULTS.md, docs/deployment.md); without the ``int8`` extra onnxruntime's runs
(:func:`default_engine`). :class:`QuantizedModel` runs a quantized file; :func:`int8_runtime` quantizes a module once
and keeps the result in the cache (``$OSNET_ZOO_CACHE/int8``), keyed by the fp32 export's key, the engine and
the digest of the calibration images, as the ONNX export is cached.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import IMAGE_EXTENSIONS, find_images, load_datasets, normalize_batch
from ..data.datasets import DATASETS, PROTOCOLS
from ..data.datasets.listing import ListingError, read_listing
from ..data.images import ImageReadError
from ..data.loader import build_eval_loader
from ..evaluation.reid import evaluate_models
from ..files import atomic_path, atomic_write_json
from ..models.run_record import read_run_record
from ..weights import file_sha256
from ..weights.cache import cache_root
from .export import BOXMOT_FOLDER_MANIFEST, INPUT_NAME, OUTPUT_NAME, contract_path, export_model, metadata_path
from .onnx_runtime import DEFAULT_OPSET, onnx_cache_key, ort_session
from .openvino_runtime import IR_FOLDER_SUFFIX, OpenVinoModel

__all__ = ['ENGINES', 'DEFAULT_ENGINE', 'default_engine', 'engine_available', 'CALIBRATION_SIZE',
           'DEFAULT_MAX_RANK1_DROP', 'CalibrationError',
           'calibration_images', 'default_calibration', 'calibration_batches', 'calibration_digest', 'run_folder',
           'run_datasets',
           'quantize_onnx', 'quantize_openvino', 'quantize_model', 'QuantizedModel', 'int8_runtime',
           'int8_cache_dir', 'feature_cosine', 'export_int8', 'Int8AccuracyError']

_logger = logging.getLogger(__name__)

ENGINES = ('onnxruntime', 'openvino')
# measured faster at both batch sizes and both widths, and as accurate (benchmarks/RESULTS.md); used where the int8
# extra (nncf, openvino) is installed, else onnxruntime's (:func:`default_engine`)
DEFAULT_ENGINE = 'openvino'
CALIBRATION_SIZE = 300
DEFAULT_MAX_RANK1_DROP = 1.0  # points of Rank-1 (percent)
_SUFFIXES = {'onnxruntime': '.onnx', 'openvino': '.xml'}
_ENGINE_OF_FORMAT = {'onnx': 'onnxruntime', 'openvino': 'openvino'}
# bump when the quantization changes in a way the cache key does not see
_CACHE_FORMAT = 1


class CalibrationError(ValueError):
    """The calibration input cannot calibrate: no images, an unreadable image, a run without a training set."""


# ------------------------------------------------------------------------------------------- calibration data

def run_folder(path: Union[str, os.PathLike, None]) -> Optional[Path]:
    """The training run folder (the one holding the run's ``config.json`` with its ``sources``) of a checkpoint
    path that names a run, its ``final/`` or ``final/model.safetensors``; None for anything else (a torchreid
    file, a model folder published without its run, pretrained weights)."""
    if path is None:
        return None
    try:
        record = read_run_record(path)
    except (OSError, ValueError):
        return None
    if record is None:
        return None
    folder = record.folder.parent
    try:
        config = json.loads((folder / 'config.json').read_text())
    except (OSError, ValueError):
        return None
    return folder if isinstance(config, dict) and config.get('sources') else None


def default_calibration(calibration: Any, checkpoint_path: Union[str, os.PathLike, None] = None,
                        model: Any = None) -> Any:
    """``calibration`` when given, else the training run that ``checkpoint_path`` (or a ``'local-dir:RUN'``
    ``model``) names, whose training images calibrate; None when there is neither."""
    if calibration is not None:
        return calibration
    if checkpoint_path is None and isinstance(model, str) and model.startswith('local-dir:'):
        checkpoint_path = model[len('local-dir:'):]
    return run_folder(checkpoint_path)


def run_targets(checkpoint_path: Union[str, os.PathLike, None]) -> Optional[Tuple[List[str], Optional[str], Path]]:
    """The evaluation targets and the datasets root a training run recorded in its ``config.json`` (CSV listings
    as the absolute paths train wrote), and the run folder: what a command evaluates when its ``--dataset`` is left
    out. None when ``checkpoint_path`` names no training run."""
    folder = run_folder(checkpoint_path)
    if folder is None:
        return None
    config = json.loads((folder / 'config.json').read_text())
    return _recorded_targets(config), config.get('root'), folder


def _recorded_targets(config: Dict[str, Any]) -> List[str]:
    """A training run's evaluation targets as its ``config.json`` records them: its sources where it names none."""
    return list(config.get('targets') or config['sources'])


def run_datasets(folder: Union[str, os.PathLike]) -> Tuple[Any, Dict[str, Any], Dict[str, Any]]:
    """The training dataset, the evaluation splits (``{target: (query, gallery)}``) and the config of a training
    run, rebuilt from its ``config.json`` (sources, targets, root, combineall, split and dataset options) as the
    run built them."""
    config = json.loads((Path(folder) / 'config.json').read_text())
    sources, targets = list(config['sources']), _recorded_targets(config)
    per_dataset: Dict[str, Dict[str, Any]] = {}
    for name in dict.fromkeys([*sources, *targets]):  # the multi-split benchmarks take the run's split
        if name in PROTOCOLS:
            accepted = inspect.signature(DATASETS[name]).parameters
            options = {k: v for k, v in (config.get('dataset_options') or {}).items() if k in accepted}
            if config.get('split_id') is not None:
                options['split_id'] = config['split_id']
            per_dataset[name] = options
    train = load_datasets(sources, config.get('root'), bool(config.get('combineall')), per_dataset=per_dataset)
    splits = {}
    for target in targets:
        ds = load_datasets([target], config.get('root'), per_dataset=per_dataset)
        splits[target] = (ds.query, ds.gallery)
    return train, splits, config


def _spread(paths: Sequence[str], size: int) -> List[str]:
    """``size`` paths spread evenly over ``paths`` (all of them when there are fewer): every identity and
    camera of a sorted listing is represented, and the choice is the same on every call."""
    if len(paths) <= size:
        return list(paths)
    return [paths[int(i * len(paths) / size)] for i in range(size)]


def _list_images(source: str) -> List[str]:
    """The image files of a folder (searched recursively), a glob pattern or an image file, sorted; a
    CalibrationError naming ``source`` when it holds none or does not exist."""
    if not any(ch in source for ch in '*?[') and not os.path.exists(source):
        raise CalibrationError(f'--calibration {source}: no such folder, image file or matching glob pattern.')
    try:
        return find_images([source])
    except (FileNotFoundError, PermissionError) as e:
        raise CalibrationError(f'--calibration {source}: holds no images ({e}); give a folder of person crops '
                               'like the ones you will embed.') from None


def _listing_images(source: str) -> List[str]:
    """The images of a CSV listing (path,pid,camid,split; docs/data.md): its training rows, else all its rows."""
    try:
        dataset = read_listing(source)
    except ListingError as e:
        raise CalibrationError(f'--calibration: {e}') from None
    items = dataset.train or [*dataset.query, *dataset.gallery]
    return sorted(it.path for it in items)


def calibration_images(source: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
                       size: int = CALIBRATION_SIZE) -> List[str]:
    """The image paths that calibrate: ``source`` is a folder (searched recursively), a glob pattern, an image
    file, a CSV listing (its training images, else all), a list of image paths, or a training run (its folder,
    ``final/`` or ``final/model.safetensors``: images of its training set); at most ``size`` of them, spread
    evenly over the sorted listing. Raises CalibrationError naming the source when it holds no image."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise CalibrationError(f'--calibration-size must be an integer >= 1, got {size!r}.')
    if not isinstance(source, (str, os.PathLike)):
        paths = [os.fspath(p) for p in source]
        if not paths:
            raise CalibrationError('the calibration list is empty: give a folder of person crops or image paths.')
        return _spread(paths, size)
    source = os.fspath(source)
    folder = run_folder(source)
    if folder is not None:
        train = run_datasets(folder)[0].train
        return _spread(sorted(it.path for it in train), size)
    if os.path.isfile(source) and source.lower().endswith('.csv'):
        return _spread(_listing_images(source), size)
    if os.path.isfile(source) and not source.lower().endswith(IMAGE_EXTENSIONS):
        raise CalibrationError(f'--calibration {source}: not an image file (extensions: '
                               f'{", ".join(IMAGE_EXTENSIONS)}); give a folder of person crops, a glob pattern or a '
                               'training run.')
    return _spread(_list_images(source), size)


def calibration_batches(paths: Sequence[str], preprocessing: Dict[str, Any],
                        batch_size: int = 16) -> List[np.ndarray]:
    """The calibration images decoded, squashed to the model's input size and normalised as evaluation does:
    float32 NCHW arrays of up to ``batch_size`` images. An unreadable image is a CalibrationError naming it."""
    _, h, w = preprocessing['input_size']
    mean, std = preprocessing['mean'], preprocessing['std']
    loader = build_eval_loader(list(paths), (h, w), batch_size, mean=mean, std=std)
    try:
        return [normalize_batch(batch['image'], mean, std).numpy() for batch in loader]
    except ImageReadError as e:
        raise CalibrationError(f'calibration image: {e}') from None


def calibration_digest(paths: Sequence[str]) -> str:
    """sha256 over the calibration images' contents, in order: what the quantized model's ranges come from."""
    h = hashlib.sha256()
    for path in paths:
        h.update(file_sha256(path).encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ the engines

class _Reader:
    """onnxruntime's calibration data reader over the prepared batches (``get_next`` until None)."""

    def __init__(self, batches: Sequence[np.ndarray], input_name: str):
        self._items: Iterator[Dict[str, np.ndarray]] = iter([{input_name: b} for b in batches])

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        return next(self._items, None)


def quantize_onnx(fp32_path: Union[str, os.PathLike], out: Union[str, os.PathLike],
                  batches: Sequence[np.ndarray]) -> Path:
    """onnxruntime's static quantization of the fp32 ONNX file ``fp32_path`` into ``out`` (written atomically):
    QDQ, per-channel int8 weights, uint8 activations with MinMax ranges over ``batches``."""
    from onnxruntime import quantization as ortq  # a dependency; imported here so the torch paths do not load it

    class Reader(_Reader, ortq.CalibrationDataReader):
        pass

    out = Path(out)
    with tempfile.TemporaryDirectory(prefix='osnet_zoo_int8_') as tmp, atomic_path(out) as target:
        prepared = Path(tmp) / 'prepared.onnx'
        ortq.quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        ortq.quantize_static(str(prepared), str(target), Reader(batches, INPUT_NAME),
                             quant_format=ortq.QuantFormat.QDQ, per_channel=True,
                             activation_type=ortq.QuantType.QUInt8, weight_type=ortq.QuantType.QInt8,
                             calibrate_method=ortq.CalibrationMethod.MinMax,
                             extra_options={'CalibTensorRangeSymmetric': False})
    return out


def quantize_openvino(fp32_path: Union[str, os.PathLike], out: Union[str, os.PathLike],
                      batches: Sequence[np.ndarray]) -> Path:
    """NNCF's post-training quantization of the fp32 ONNX file ``fp32_path`` (read by OpenVINO) into the IR
    ``out`` (``.xml``, its ``.bin`` beside it), calibrated on ``batches``. Needs the ``int8`` extra."""
    try:
        import nncf
        import openvino as ov
    except ImportError as e:
        raise ImportError(f"the openvino INT8 engine needs nncf and openvino ({e.name} is missing): "
                          "pip install 'osnet-zoo[int8]'") from None
    out = Path(out)
    if out.suffix != '.xml':
        raise ValueError(f'{out}: an OpenVINO IR ends in .xml.')
    model = ov.convert_model(str(fp32_path))
    # each dataset item is one batch: subset_size counts items, so every batch calibrates
    quantized = nncf.quantize(model, nncf.Dataset(list(batches)), preset=nncf.QuantizationPreset.PERFORMANCE,
                              subset_size=len(batches))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='.int8_', dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        ov.save_model(quantized, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix('.bin'), out.with_suffix('.bin'))  # the weights first, the graph last
        os.replace(staged, out)
    return out


def quantize_model(fp32_path: Union[str, os.PathLike], out: Union[str, os.PathLike], batches: Sequence[np.ndarray],
                   engine: str = 'onnxruntime') -> Path:
    """Quantize the fp32 ONNX export ``fp32_path`` with ``engine`` ('onnxruntime': a QDQ ``.onnx``;
    'openvino': an IR ``.xml``) into ``out``, calibrated on ``batches``."""
    if engine not in ENGINES:
        raise ValueError(f'--int8-engine must be one of {", ".join(ENGINES)}, got {engine!r}.')
    if not batches:
        raise CalibrationError('no calibration images: give a folder of person crops with --calibration.')
    return (quantize_onnx if engine == 'onnxruntime' else quantize_openvino)(fp32_path, out, batches)


# --------------------------------------------------------------------------------------------- running INT8

class QuantizedModel(nn.Module):
    """A quantized embedding model (a QDQ ``.onnx`` run by onnxruntime, or an OpenVINO IR, its ``.xml`` or folder,
    run by :class:`~osnet_zoo.inference.openvino_runtime.OpenVinoModel`) on the CPU; an fp32 export runs the
    same way. Call it with a float32 NCHW batch; returns float32 features (N, D) on the CPU."""

    def __init__(self, path: Union[str, os.PathLike], threads: Optional[int] = None, spinning: bool = False):
        super().__init__()
        self.path = Path(path)
        self.engine = 'onnxruntime' if self.path.suffix == '.onnx' else 'openvino'
        if self.engine == 'onnxruntime':
            self._session = ort_session(self.path, threads, spinning)
            self._run = self._run_onnxruntime
        else:  # an IR (its folder or .xml), through the package's one OpenVINO wrapper
            self._openvino = OpenVinoModel(self.path, threads=threads)
            self._run = self._openvino.forward

    def _run_onnxruntime(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x.detach().to('cpu', torch.float32).contiguous())

    def extra_repr(self) -> str:
        return f'path={str(self.path)!r}, engine={self.engine!r}'


def feature_cosine(reference: nn.Module, quantized: nn.Module, batches: Sequence[np.ndarray]) -> Dict[str, float]:
    """Cosine similarity between the fp32 and the quantized embeddings of the same inputs: mean and minimum
    over the images (what an INT8 model costs where no labelled split can say it in Rank-1)."""
    cosines = []
    for batch in batches:
        x = torch.from_numpy(batch)
        with torch.inference_mode():
            cosines.append(F.cosine_similarity(reference(x).float(), quantized(x).float(), dim=1))
    every = torch.cat(cosines)
    return dict(mean=float(every.mean()), min=float(every.min()), images=int(every.numel()))


# ------------------------------------------------------------------------------------- the cached INT8 model

def engine_available(engine: str) -> bool:
    """Whether ``engine`` can run here: onnxruntime always (a dependency); openvino with nncf and openvino."""
    return engine == 'onnxruntime' or all(importlib.util.find_spec(m) is not None for m in ('nncf', 'openvino'))


def default_engine() -> str:
    """:data:`DEFAULT_ENGINE` where it can run, else onnxruntime."""
    return DEFAULT_ENGINE if engine_available(DEFAULT_ENGINE) else 'onnxruntime'


def int8_cache_dir() -> Path:
    """Where quantized models are kept: ``int8/`` in the package's cache (``$OSNET_ZOO_CACHE``, else
    ``~/.cache/osnet_zoo``)."""
    return cache_root() / 'int8'


def _engine_versions(engine: str) -> Dict[str, str]:
    if engine == 'onnxruntime':
        import onnxruntime
        return {'onnxruntime': onnxruntime.__version__}
    import nncf
    import openvino
    return {'nncf': nncf.__version__, 'openvino': openvino.__version__}


def _usable_entry(path: Path, key: Dict[str, Any]) -> bool:
    """Whether the cache entry ``path`` was written for ``key`` and still holds what its record says."""
    record_file = path.with_name(path.name + '.cache.json')
    try:
        record = json.loads(record_file.read_text())
        files = [path] + ([path.with_suffix('.bin')] if path.suffix == '.xml' else [])
        return (isinstance(record, dict) and record.get('key') == key
                and record.get('sha256') == [file_sha256(f) for f in files])
    except (OSError, ValueError):
        return False


def _write_entry(path: Path, key: Dict[str, Any]) -> None:
    files = [path] + ([path.with_suffix('.bin')] if path.suffix == '.xml' else [])
    atomic_write_json(path.with_name(path.name + '.cache.json'),
                      dict(key=key, sha256=[file_sha256(f) for f in files]), indent=1)


def _export_fp32(net: nn.Module, folder: Path, input_size: Tuple[int, int, int]) -> Path:
    """The checked fp32 ONNX export (BN folded, dynamic batch) that both engines quantize."""
    path = folder / 'fp32.onnx'
    export_model(net, path, fmt='onnx', dynamic_batch=True, opset=DEFAULT_OPSET, input_size=input_size)
    return path


def int8_runtime(net: nn.Module, calibration: Union[str, os.PathLike, Sequence[str]],
                 input_size: Optional[Tuple[int, int, int]] = None, engine: Optional[str] = None,
                 calibration_size: int = CALIBRATION_SIZE, threads: Optional[int] = None,
                 spinning: bool = False, preprocessing: Optional[Dict[str, Any]] = None) -> QuantizedModel:
    """``net`` quantized to INT8 by ``engine`` with ``calibration`` (see :func:`calibration_images`), from the
    cache when it holds the same model, input size, engine and calibration images, else quantized and kept
    there; run on ``threads`` CPU threads. ``preprocessing``: the model's (input size, mean, std). ``engine`` None:
    :func:`default_engine`."""
    engine = engine or default_engine()
    if engine not in ENGINES:
        raise ValueError(f'int8 engine must be one of {", ".join(ENGINES)}, got {engine!r}.')
    if calibration is None:
        raise CalibrationError("precision='int8' needs calibration images: calibration= / --calibration, a folder of "
                               'person crops like the ones you will embed (a training run as the model calibrates '
                               'on its own training images).')
    paths = calibration_images(calibration, calibration_size)
    prep = dict(preprocessing or {})
    input_size = tuple(input_size or prep['input_size'])
    key = dict(format=_CACHE_FORMAT, fp32=onnx_cache_key(net, input_size), engine=engine,
               calibration=calibration_digest(paths), images=len(paths),
               mean=list(prep.get('mean', ())), std=list(prep.get('std', ())), **_engine_versions(engine))
    cfg = getattr(net, 'pretrained_cfg', None) or {}
    name = ''.join(c if c.isalnum() or c in '_-' else '_' for c in str(cfg.get('architecture') or 'model'))
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = int8_cache_dir() / f'{name}-{digest}{_SUFFIXES[engine]}'
    if not _usable_entry(path, key):
        start = time.perf_counter()
        batches = calibration_batches(paths, {**prep, 'input_size': input_size})
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix='osnet_zoo_int8_') as tmp:
            quantize_model(_export_fp32(net, Path(tmp), input_size), path, batches, engine)
        _write_entry(path, key)
        _logger.info('osnet_zoo: quantized %s to INT8 (%s, %d calibration images) in %.1f s: %s', name, engine,
                     len(paths), time.perf_counter() - start, path)
    return QuantizedModel(path, threads=threads, spinning=spinning)


# ------------------------------------------------------------------------------------------ the INT8 export

class Int8AccuracyError(RuntimeError):
    """The INT8 model loses more Rank-1 on the run's evaluation split than the bound allows; nothing written."""


def _int8_out(out: Union[str, os.PathLike, None], fp32_name: str, engine: str) -> Tuple[Path, Path]:
    """Where the INT8 export goes and the model file in it: onnxruntime ``<name>_int8.onnx`` (``out`` itself when
    it ends in .onnx); openvino the folder ``<name>_int8_openvino_model`` holding ``<name>_int8.xml`` / ``.bin``,
    the layout boxmot's OpenVINO backend takes (``out`` itself when it ends in ``_openvino_model``). Any other
    ``out`` is the folder they are written in (the working directory for None)."""
    stem = Path(fp32_name).stem + '_int8'
    out = Path(out) if out is not None else None
    if engine == 'onnxruntime':
        if out is not None and out.suffix:
            if out.suffix != '.onnx':
                raise ValueError(f'{out}: an INT8 ONNX export ends in .onnx (or give the folder to write it in).')
            return out, out
        target = (out or Path('.')) / f'{stem}.onnx'
        return target, target
    if out is not None and out.name.endswith(IR_FOLDER_SUFFIX):
        folder = out
    elif out is not None and out.suffix:
        raise ValueError(f'{out}: an OpenVINO export is a folder named <name>{IR_FOLDER_SUFFIX} (or give the folder '
                         'to write it in).')
    else:
        folder = (out or Path('.')) / f'{stem}{IR_FOLDER_SUFFIX}'
    return folder, folder / (folder.name[:-len(IR_FOLDER_SUFFIX)] + '.xml')


def _accuracy(fp32: nn.Module, int8: nn.Module, folder: Path, prep: Dict[str, Any]) -> Dict[str, Any]:
    """Rank-1 and mAP (percent) of the fp32 and INT8 models on the run's own evaluation splits, at its input
    size and distance; the drop is the largest over the targets."""
    _, splits, config = run_datasets(folder)
    _, h, w = prep['input_size']
    options = dict(distance=config.get('distance') or 'euclidean', size=(h, w), mean=prep['mean'], std=prep['std'],
                   batch_size=32, device=torch.device('cpu'))
    before, after = (evaluate_models([m], splits, **options) for m in (fp32, int8))
    targets = {t: dict(fp32={'rank1': 100 * before[t]['rank1'], 'mAP': 100 * before[t]['mAP']},
                       int8={'rank1': 100 * after[t]['rank1'], 'mAP': 100 * after[t]['mAP']},
                       query=len(splits[t][0]), gallery=len(splits[t][1])) for t in splits}
    drop = max(v['fp32']['rank1'] - v['int8']['rank1'] for v in targets.values())
    return dict(measured='Rank-1 / mAP on the run\'s evaluation split', run=str(folder), distance=options['distance'],
                targets=targets, rank1_drop=drop)


def export_int8(model: Union[str, nn.Module, None], out: Union[str, os.PathLike, None] = None,
                calibration: Union[str, os.PathLike, Sequence[str], None] = None,
                calibration_size: int = CALIBRATION_SIZE, fmt: str = 'onnx',
                max_rank1_drop: float = DEFAULT_MAX_RANK1_DROP, pretrained: bool = True,
                checkpoint_path: Union[str, os.PathLike, None] = None) -> Tuple[Path, Dict[str, Any]]:
    """Quantize ``model`` to INT8, measure what it costs and write it with its contract and tracker metadata
    (:func:`osnet_zoo.inference.export.export_model`'s, with ``precision``, ``quantization`` and ``accuracy``
    added); return the path written and the contract. ``fmt`` 'onnx': onnxruntime's QDQ ``.onnx``; 'openvino':
    NNCF's IR in a ``<name>_int8_openvino_model`` folder.

    ``calibration``: see :func:`calibration_images` (default: the training images of the run that
    ``checkpoint_path`` names). Where ``checkpoint_path`` is a training run, the cost is Rank-1 / mAP before and
    after on the run's own evaluation split, and a Rank-1 drop above ``max_rank1_drop`` points raises
    Int8AccuracyError before anything is written. Otherwise (pretrained weights, a bare checkpoint) there is no
    evaluation split: the cost is the cosine between fp32 and INT8 embeddings of the calibration crops, and the
    bound is not checked (the contract says so)."""
    if isinstance(max_rank1_drop, bool) or not isinstance(max_rank1_drop, (int, float)):
        raise ValueError(f'--max-rank1-drop must be a number of Rank-1 points, got {max_rank1_drop!r}.')
    if fmt not in _ENGINE_OF_FORMAT:
        raise ValueError(f'--int8 writes --format onnx or openvino, not {fmt!r}.')
    engine = _ENGINE_OF_FORMAT[fmt]
    folder = run_folder(checkpoint_path)
    calibration = default_calibration(calibration, checkpoint_path)
    if calibration is None:
        raise CalibrationError('--int8 needs --calibration (a folder of person crops like the ones you will embed) '
                               'unless --checkpoint is a training run, whose training images calibrate.')
    paths = calibration_images(calibration, calibration_size)
    with tempfile.TemporaryDirectory(prefix='osnet_zoo_int8_') as tmp:
        tmp = Path(tmp)
        contract = export_model(model, tmp, fmt='onnx', pretrained=pretrained, checkpoint_path=checkpoint_path)
        fp32_path = tmp / contract['file']
        prep = dict(input_size=tuple(contract['preprocessing']['input_size']),
                    mean=contract['preprocessing']['mean'], std=contract['preprocessing']['std'])
        target, model_file = _int8_out(out, contract['file'], engine)
        batches = calibration_batches(paths, prep)
        staged = quantize_model(fp32_path, tmp / 'int8' / model_file.relative_to(target.parent), batches, engine)
        fp32, int8 = QuantizedModel(fp32_path), QuantizedModel(staged)
        accuracy = _accuracy(fp32, int8, folder, prep) if folder is not None else dict(
            measured='cosine between fp32 and INT8 embeddings of the calibration crops',
            not_measured='Rank-1 / mAP: no evaluation split (the model is not a training run), so the '
                         '--max-rank1-drop bound was not checked', rank1_drop=None)
        accuracy['cosine_on_calibration'] = feature_cosine(fp32, int8, batches)
        accuracy['max_rank1_drop'] = float(max_rank1_drop)
        if accuracy['rank1_drop'] is not None and accuracy['rank1_drop'] > max_rank1_drop:
            raise Int8AccuracyError(f'{target} not written: INT8 loses {accuracy["rank1_drop"]:.2f} Rank-1 points on '
                                    f'the run\'s evaluation split ({_summary(accuracy)}), more than '
                                    f'--max-rank1-drop {max_rank1_drop:g}: calibrate with more or more '
                                    'representative crops, try the other --int8-engine, or raise the bound.')
        staged = staged if engine == 'onnxruntime' else staged.parent
        return target, _write_int8(staged, target, tmp / contract['file'], contract, engine, paths, accuracy)


def _summary(accuracy: Dict[str, Any]) -> str:
    """``market1501: Rank-1 61.2% -> 60.8%, mAP 40.1% -> 39.9%`` per target."""
    return '; '.join(f"{t}: Rank-1 {v['fp32']['rank1']:.1f}% -> {v['int8']['rank1']:.1f}%, mAP {v['fp32']['mAP']:.1f}% "
                     f"-> {v['int8']['mAP']:.1f}%" for t, v in accuracy.get('targets', {}).items())


def _write_int8(staged: Path, target: Path, fp32_path: Path, contract: Dict[str, Any], engine: str,
                paths: Sequence[str], accuracy: Dict[str, Any]) -> Dict[str, Any]:
    """Put the quantized file (an IR: its folder) in place of ``target`` and write the fp32 export's contract and
    metadata beside it (an IR folder: inside it, and boxmot's manifest), updated for the INT8 model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if engine == 'onnxruntime':
        with atomic_path(target) as tmp:
            os.replace(staged, tmp)
    else:  # the whole folder at once; a previous export of that name is replaced
        with tempfile.TemporaryDirectory(prefix=f'.{target.name}.', dir=target.parent) as old:
            if target.is_dir():
                os.replace(target, Path(old) / 'previous')
            shutil.move(str(staged), str(target))
    quantization = dict(engine=engine, **_engine_versions(engine), calibration_images=len(paths),
                        calibration_digest=calibration_digest(paths),
                        method='QDQ, per-channel int8 weights, uint8 activations, MinMax' if engine == 'onnxruntime'
                        else 'NNCF post-training quantization, performance preset')
    fmt = 'onnx' if engine == 'onnxruntime' else 'openvino'
    contract = dict(contract, format=fmt, file=target.name, precision='int8', quantization=quantization,
                    accuracy=accuracy)
    atomic_write_json(contract_path(target), contract)
    metadata = json.loads(metadata_path(fp32_path).read_text())
    metadata.update(format=fmt, file=target.name, precision='int8')
    atomic_write_json(metadata_path(target), metadata)
    if fmt == 'openvino':  # what boxmot reads when given the folder itself
        atomic_write_json(target / BOXMOT_FOLDER_MANIFEST, metadata)
    return contract
