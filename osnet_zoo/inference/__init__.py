"""Deployment: batched feature extraction and inference-time optimisation of OSNet."""
from .extractor import FeatureExtractor, build_embedding_model, load_image, resolve_preprocessing
from .optimize import (
    CudaGraphRunner, InferenceModel, StreamBatchedOmniScaleBlock, batch_streams, fold_batchnorm,
    optimize_for_inference,
)

__all__ = [
    'FeatureExtractor', 'build_embedding_model', 'load_image', 'resolve_preprocessing', 'optimize_for_inference',
    'fold_batchnorm', 'batch_streams', 'InferenceModel', 'CudaGraphRunner', 'StreamBatchedOmniScaleBlock',
]
