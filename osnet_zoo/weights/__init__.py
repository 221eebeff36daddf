"""Weights: safe checkpoint reading, the weights manifest, its sources and cache, Hub loading with sha256 checks,
and strict loading of every checkpoint layout (the model folder in timm's format is ``osnet_zoo.models.folder``).

The modules imported here sit below ``osnet_zoo.models`` (which builds its timm registry from the manifest and
loads through ``loading``) and import nothing from it. Publishing the zoo (converting, mirroring, verifying,
pushing) is ``osnet_zoo.publish``, beside this package (docs/architecture.md, "Packages").
"""
from .io import CheckpointError, file_sha256, model_digest, read_checkpoint, unwrap_state_dict
from .manifest import (
    PACKAGED_MANIFEST, HubFile, ManifestError, WeightsEntry, WeightsManifest, active_manifest_path, load_manifest,
)
from .cache import PretrainedWeightsError, WeightsIntegrityError, WeightsTrustError, WeightsUnavailableError, cache_root
from .hub import fetch_pretrained
from .loading import checkpoint_filter_fn, load_osnet_checkpoint
