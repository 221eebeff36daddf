"""Weights: safe checkpoint reading, the weights manifest, Hub loading with sha256 checks, conversion.

Import order matters here: ``io``, ``manifest`` and ``hub`` import nothing from ``osnet_zoo.models`` (which
builds its timm registry from them); ``loading`` imports ``models.osnet``. ``osnet_zoo/__init__.py`` imports
this package before ``osnet_zoo.models`` for that reason.
"""
from .io import CheckpointError, file_sha256, model_digest, read_checkpoint, unwrap_state_dict
from .manifest import (
    PACKAGED_MANIFEST, HubFile, ManifestError, WeightsEntry, WeightsManifest, active_manifest_path, load_manifest,
)
from .cache import PretrainedWeightsError, WeightsIntegrityError, WeightsTrustError, WeightsUnavailableError, cache_root
from .hub import fetch_pretrained
from .loading import load_osnet_checkpoint
