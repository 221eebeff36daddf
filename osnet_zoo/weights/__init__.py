"""Weights: safe checkpoint reading, the weights manifest, Hub loading with sha256 checks, conversion."""
from .io import CheckpointError, file_sha256, load_osnet_checkpoint, read_checkpoint
from .manifest import (
    PACKAGED_MANIFEST, HubFile, ManifestError, WeightsEntry, WeightsManifest, active_manifest_path, load_manifest,
)
from .hub import PretrainedWeightsError, WeightsIntegrityError, WeightsUnavailableError
