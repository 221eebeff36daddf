"""Deployment: batched feature extraction, inference-time optimisation and export of OSNet."""
from .backend import BACKENDS, BackendPlan, build_runtime, select_backend
from .export import ExportCheckError, check_export, export_model
from .extractor import FeatureExtractor
from .model import build_embedding_model, resolve_preprocessing
from .optimize import (
    CudaGraphRunner, InferenceModel, StreamBatchedOmniScaleBlock, batch_streams, fold_batchnorm,
    optimize_for_inference,
)

__all__ = [
    'FeatureExtractor', 'BACKENDS', 'BackendPlan', 'select_backend', 'build_runtime', 'build_embedding_model',
    'resolve_preprocessing', 'export_model', 'check_export', 'ExportCheckError', 'optimize_for_inference',
    'fold_batchnorm', 'batch_streams', 'InferenceModel', 'CudaGraphRunner', 'StreamBatchedOmniScaleBlock',
]
