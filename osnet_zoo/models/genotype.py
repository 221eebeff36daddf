"""Genotypes: the result of a search as a JSON file, and the model it describes.

A genotype names one instance-norm placement per omni-scale block (``block_norms``, stage-major:
conv2 x2, conv3 x2, conv4 x2, each one of ``plain``, ``in_in``, ``in_out``, ``in_in_out``) and whether
conv1 uses IN. A searched genotype also records ``pi`` (the architecture parameters), ``probabilities``
(softmax of ``pi``), and how it was found (``seed``, ``data``, ``epochs``, ...). The published OSNet-AIN
placement ships as ``genotypes/osnet_ain.json``. ``osnet_zoo.models.build_model_from_genotype`` builds the
model a genotype describes.

The placements themselves (:data:`BLOCK_NORMS`) are defined here, below the model file, so that the model
can read genotypes (``timm.create_model(..., genotype=...)``) without an import circle.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Union

from ..files import atomic_write_json

__all__ = ['BLOCK_NORMS', 'GENOTYPE_FORMAT', 'GENOTYPES_DIR', 'AIN_GENOTYPE', 'validate_genotype', 'load_genotype',
           'save_genotype', 'genotype_args']

# Where an omni-scale block puts instance norm: nowhere, instead of the BN of its last 1x1 conv (inside the
# residual), after the residual add, or both. The search space of OSNet-AIN, one choice per block.
BLOCK_NORMS = ('plain', 'in_in', 'in_out', 'in_in_out')

GENOTYPE_FORMAT = 'osnet_zoo.nas.genotype'
GENOTYPES_DIR = Path(__file__).parent / 'genotypes'
AIN_GENOTYPE = GENOTYPES_DIR / 'osnet_ain.json'
NUM_POSITIONS = 6

GenotypeLike = Union[str, os.PathLike, Mapping[str, Any]]


def validate_genotype(genotype: Mapping[str, Any], where: str = 'genotype') -> Dict[str, Any]:
    """Check the keys a model needs; raise ``ValueError`` naming ``where`` and the bad key otherwise."""
    if not isinstance(genotype, Mapping):
        raise ValueError(f'{where}: expected a JSON object, got {type(genotype).__name__}.')
    if genotype.get('format') != GENOTYPE_FORMAT:
        raise ValueError(f'{where}: key "format" must be {GENOTYPE_FORMAT!r}, got {genotype.get("format")!r}.')
    norms = genotype.get('block_norms')
    if not isinstance(norms, list) or len(norms) != NUM_POSITIONS or any(n not in BLOCK_NORMS for n in norms):
        raise ValueError(f'{where}: key "block_norms" must list {NUM_POSITIONS} placements (conv2 x2, conv3 x2, '
                         f'conv4 x2), each one of {list(BLOCK_NORMS)}; got {norms!r}.')
    if not isinstance(genotype.get('conv1_in', True), bool):
        raise ValueError(f'{where}: key "conv1_in" must be true or false, got {genotype.get("conv1_in")!r}.')
    for key in ('pi', 'probabilities'):
        value = genotype.get(key)
        if value is not None and (len(value) != NUM_POSITIONS or any(len(r) != len(BLOCK_NORMS) for r in value)):
            raise ValueError(f'{where}: key {key!r} must be {NUM_POSITIONS} rows of {len(BLOCK_NORMS)} numbers.')
    return dict(genotype)


def load_genotype(path_or_dict: GenotypeLike) -> Dict[str, Any]:
    """A genotype from a JSON file, the name of a shipped one (``'osnet_ain'``), or a dict; validated."""
    if isinstance(path_or_dict, Mapping):
        return validate_genotype(path_or_dict)
    path = Path(path_or_dict)
    if not path.is_file() and (GENOTYPES_DIR / f'{path_or_dict}.json').is_file():
        path = GENOTYPES_DIR / f'{path_or_dict}.json'
    if not path.is_file():
        shipped = sorted(p.stem for p in GENOTYPES_DIR.glob('*.json'))
        raise FileNotFoundError(f'Genotype {str(path_or_dict)!r} not found: neither a file nor a shipped genotype '
                                f'{shipped}.')
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f'{path}: not valid JSON ({e}).') from None
    return validate_genotype(data, str(path))


def genotype_args(path_or_dict: GenotypeLike) -> Dict[str, Any]:
    """The ``OSNet`` arguments a genotype sets: its ``block_norms`` and ``conv1_in`` (IN in the stem unless it
    says otherwise); the widths come from the model it is applied to."""
    genotype = load_genotype(path_or_dict)
    return dict(block_norms=tuple(genotype['block_norms']), conv1_in=bool(genotype.get('conv1_in', True)))


def save_genotype(genotype: Mapping[str, Any], path: Union[str, os.PathLike]) -> Path:
    """Validate and write ``genotype`` as JSON atomically (temporary file + rename)."""
    data = validate_genotype(dict(genotype, format=GENOTYPE_FORMAT))
    path = Path(path)
    atomic_write_json(path, data)
    return path

