"""Re-ID evaluation: distances, CMC / mAP / mINP (Market1501 and CUHK03 protocols), k-reciprocal re-ranking."""
from .distance import DISTANCES, pairwise_distance
from .features import evaluate_features
from .rank import evaluate_rank
from .reranking import re_ranking

__all__ = ['DISTANCES', 'evaluate_features', 'evaluate_rank', 'pairwise_distance', 're_ranking']
