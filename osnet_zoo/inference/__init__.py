"""Deployment: batched feature extraction (in memory, or sharded and resumable into a file), inference-time
optimisation and export of OSNet; the papers' figures live beside them in :mod:`osnet_zoo.inference.figures`."""
from .backend import BACKENDS, BackendPlan, build_runtime, select_backend
from .export import ExportCheckError, check_export, export_model
from .extractor import FeatureExtractor
from .model import DEFAULT_MODEL, build_embedding_model, resolve_preprocessing
from ..models.run_record import RunRecord, apply_run_record, read_run_record
from ..data import find_images  # kept here too: it was public API of osnet_zoo.inference
from .sharded import extract_features, load_features, map_features
from .optimize import (
    CudaGraphRunner, InferenceModel, StreamBatchedOmniScaleBlock, batch_streams, fold_batchnorm,
    optimize_for_inference,
)

__all__ = [
    'FeatureExtractor', 'BACKENDS', 'BackendPlan', 'select_backend', 'build_runtime', 'build_embedding_model',
    'resolve_preprocessing', 'DEFAULT_MODEL', 'RunRecord', 'read_run_record', 'apply_run_record', 'export_model',
    'check_export', 'ExportCheckError', 'optimize_for_inference',
    'fold_batchnorm', 'batch_streams', 'InferenceModel', 'CudaGraphRunner', 'StreamBatchedOmniScaleBlock',
    'extract_features', 'find_images', 'load_features', 'map_features',
]
