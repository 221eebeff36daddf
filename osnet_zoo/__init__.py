"""osnet-zoo: OSNet omni-scale person re-identification networks as timm models.

``import osnet_zoo`` registers the OSNet family into timm and exposes loading; the extractor and the rest
(readers, training, sharded extraction, figures, publishing) are imported when first used::

    import timm, osnet_zoo
    model = timm.create_model('osnet_ain_x1_0', num_classes=0)  # 512-d re-ID embedding
    extractor = osnet_zoo.FeatureExtractor('osnet_x1_0', device='cpu')  # imports osnet_zoo.inference here
"""
from ._lazy import lazy_exports
from ._version import __version__
from . import threads as _threads

# a `python -m osnet_zoo...` process only, before torch loads (the one moment OpenMP reads its wait policy);
# a library import changes nothing
_threads.prepare_cli_process()

from .models import (
    OSNet, checkpoint_filter_fn, create_osnet, osnet_ain, osnet_ibn, osnet_x0_5, osnet_x0_25, osnet_x0_75,
    osnet_x1_0,
)
from .weights import CheckpointError, load_osnet_checkpoint, read_checkpoint

# imported on first access (osnet_zoo/_lazy.py)
_LAZY_EXPORTS = {'FeatureExtractor': '.inference', 'optimize_for_inference': '.inference'}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY_EXPORTS, globals())

__all__ = [
    'OSNet', 'checkpoint_filter_fn', 'create_osnet', 'osnet_x1_0', 'osnet_x0_75', 'osnet_x0_5', 'osnet_x0_25',
    'osnet_ibn', 'osnet_ain', 'CheckpointError', 'load_osnet_checkpoint', 'read_checkpoint',
    'FeatureExtractor', 'optimize_for_inference',
]
