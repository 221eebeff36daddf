"""Re-ID data, one home per stage: datasets -> sampler -> transforms -> loader (images: the one image reader)."""
from .datasets import (
    DATASETS, ENTRY_POINT_GROUP, IMAGE_EXTENSIONS, DatasetLayoutError, ListingError, ReIDDataset, ReIDItem,
    available_datasets, build_dataset, cuhk03, dukemtmcreid, folder_rows, market1501, msmt17, read_folder,
    read_listing, register_dataset, split_people, write_listing,
)
from .images import (
    CHANNEL_ORDERS, ImageDataset, ImageNotFoundError, ImageReadError, find_images, iter_images, read_image,
    read_image_tensor, to_rgb_tensor, verify_images,
)
from .loader import (
    DEFAULT_DATA_ROOT, TrainLoader, build_eval_loader, build_train_loader, data_root, device_batches, load_datasets,
)
from .sampler import EpochBatches, RandomIdentitySampler
from .seeding import sample_seed, seeded_rng
from .datasets.synthetic import SyntheticConfig, make_synthetic_reid, synthetic_reid
from .transforms import (
    IMAGENET_MEAN, IMAGENET_STD, RandomPatch, build_test_transform, build_train_transform, normalize_batch,
)

__all__ = ['DATASETS', 'IMAGE_EXTENSIONS', 'DatasetLayoutError', 'ReIDDataset', 'ReIDItem', 'build_dataset',
           'market1501',
           'dukemtmcreid', 'msmt17', 'cuhk03', 'SyntheticConfig', 'make_synthetic_reid', 'synthetic_reid',
           'ImageDataset', 'ImageReadError', 'ImageNotFoundError', 'CHANNEL_ORDERS', 'iter_images', 'to_rgb_tensor',
           'read_image', 'read_image_tensor', 'verify_images', 'find_images',
           'RandomIdentitySampler', 'RandomPatch', 'build_train_transform', 'build_test_transform', 'normalize_batch',
           'sample_seed', 'seeded_rng', 'IMAGENET_MEAN', 'IMAGENET_STD', 'EpochBatches', 'DEFAULT_DATA_ROOT',
           'data_root', 'load_datasets', 'device_batches', 'TrainLoader', 'build_train_loader', 'build_eval_loader',
           'register_dataset', 'available_datasets', 'ENTRY_POINT_GROUP', 'read_listing', 'read_folder',
           'folder_rows', 'write_listing', 'ListingError', 'split_people']
