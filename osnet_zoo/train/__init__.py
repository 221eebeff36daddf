"""Training: ``python -m osnet_zoo.train``. :func:`~osnet_zoo.train.training.train` reads top to bottom over
the shared engine (:mod:`osnet_zoo.engine`: run folder, checkpoint, the one training loop, losses, optimisers,
the recipe reader); beside it the options (``options.py``), the shipped recipes (``recipes/*.yaml``), the steps
every run takes (``common.py``), the attribute and category runs (``labelled.py``), the final model
(``final.py``), curves (``curves.py``) and the small benchmarks' protocol (``protocol.py``)."""
from osnet_zoo.engine.recipes import RECIPES_DIR, TrainConfig, list_recipes, load_recipe, resolve_config

__all__ = ['RECIPES_DIR', 'TrainConfig', 'list_recipes', 'load_recipe', 'resolve_config']
