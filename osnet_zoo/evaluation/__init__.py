"""Evaluation as a library: re-ID (``reid``: the features of a split, CMC / mAP / mINP per target, the one
results schema) and labelled tasks (``labelled``: a classifier's attribute metrics or top-1 / top-5).
``python -m osnet_zoo.evaluate`` is their command line; training and the architecture search call them too."""
from .reid import (
    METRIC_KEYS, Split, cached_split_features, embed, embed_sharded, evaluate_models, features_key,
    load_eval_splits, rank_split, results_document, target_metrics,
)

__all__ = ['embed', 'embed_sharded', 'features_key', 'cached_split_features', 'load_eval_splits', 'rank_split',
           'evaluate_models', 'Split', 'target_metrics', 'results_document', 'METRIC_KEYS']
