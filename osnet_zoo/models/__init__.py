"""OSNet model family (registered into timm on import)."""
from .complexity import count_mult_adds, count_params
from .factory import build_model_from_genotype, create_osnet, osnet_ain, osnet_ibn, table5_model
from .genotype import AIN_GENOTYPE, GENOTYPE_FORMAT, load_genotype, save_genotype, validate_genotype
from .osnet import (
    AGGREGATIONS, AIN_BLOCK_NORMS, BLOCK_NORMS, CONV_TYPES, GATE_TYPES, IBN_BLOCK_NORMS, OSNET_ARCHS, TABLE5_MODELS,
    ChannelGate, LiteConv3x3, OmniScaleBlock, OSNet, StaticGate,
    checkpoint_filter_fn, osnet_ain_x0_5, osnet_ain_x0_25, osnet_ain_x0_75, osnet_ain_x1_0, osnet_arch,
    osnet_ibn_x1_0, osnet_x0_5, osnet_x0_25, osnet_x0_75, osnet_x1_0,
)
