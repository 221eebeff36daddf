"""Training: ``python -m osnet_zoo.train`` (the loop is ``train/__main__.py``, one readable script), with its
recipes (``recipes.py`` + ``recipes/*.yaml``), run-folder bookkeeping (``checkpoint.py``), optimisers
(``optim.py``), losses (``losses.py``) and curves (``curves.py``) beside it."""
from .checkpoint import RunFolder, load_training_state, read_jsonl, rng_state, save_training_state, seed_everything, \
    set_rng_state
from .losses import CrossEntropyLabelSmooth, HardTripletLoss, mutual_learning_loss
from .optim import build_optimizer, build_scheduler
from .recipes import RECIPES_DIR, TrainConfig, list_recipes, load_recipe, resolve_config

__all__ = ['RunFolder', 'load_training_state', 'read_jsonl', 'rng_state', 'save_training_state', 'seed_everything',
           'set_rng_state', 'CrossEntropyLabelSmooth', 'HardTripletLoss', 'mutual_learning_loss', 'build_optimizer',
           'build_scheduler', 'RECIPES_DIR', 'TrainConfig', 'list_recipes', 'load_recipe', 'resolve_config']
