"""Architecture search of the instance-norm placement in OSNet (OSNet-AIN, TPAMI 2021, section 3.3).

``python -m osnet_zoo.nas --help`` runs it; :func:`build_model_from_genotype` turns its result (or the
shipped published placement, ``'osnet_ain'``) into an ``OSNet``.
"""
from ..models import AIN_GENOTYPE, build_model_from_genotype, load_genotype, save_genotype, validate_genotype
from .supernet import (CANDIDATES, SearchBlock, SuperNet, child_state_dict, eq8_alphas, gumbel_noise, sample_alphas,
                       temperature_at)

__all__ = ['AIN_GENOTYPE', 'build_model_from_genotype', 'load_genotype', 'save_genotype', 'validate_genotype',
           'CANDIDATES', 'SearchBlock', 'SuperNet', 'child_state_dict', 'eq8_alphas', 'gumbel_noise',
           'sample_alphas', 'temperature_at']
