"""Re-ID data: dataset readers, the synthetic default, image loading, transforms and identity sampling."""
from .datasets import (
    DATASETS, DatasetLayoutError, ReIDDataset, ReIDItem, build_dataset, cuhk03, dukemtmcreid, market1501, msmt17,
)
from .images import ImageDataset, ImageReadError, read_image, read_image_tensor, verify_images
from .sampler import RandomIdentitySampler
from .synthetic import SyntheticConfig, make_synthetic_reid, synthetic_reid
from .transforms import (
    RandomPatch, build_test_transform, build_train_transform, normalize_batch, sample_seed, seeded_rng,
)

__all__ = ['DATASETS', 'DatasetLayoutError', 'ReIDDataset', 'ReIDItem', 'build_dataset', 'market1501',
           'dukemtmcreid', 'msmt17', 'cuhk03', 'SyntheticConfig', 'make_synthetic_reid', 'synthetic_reid',
           'ImageDataset', 'ImageReadError', 'read_image', 'read_image_tensor', 'verify_images',
           'RandomIdentitySampler', 'RandomPatch', 'build_train_transform', 'build_test_transform', 'normalize_batch',
           'sample_seed', 'seeded_rng']
