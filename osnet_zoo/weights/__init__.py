"""Weights: safe checkpoint reading, reference-layout conversion."""
from .io import CheckpointError, load_osnet_checkpoint, read_checkpoint
