"""What training and the architecture search share (below both): the run folder and its one checkpoint format,
seeding and RNG state, the NaN guard (``checkpoint.py``), the one training loop (``loop.py``), the losses
(``losses.py``), the optimisers and schedules (``optim.py``), the training settings, each declared once
(``settings.py``), and the config read from a recipe and the command line (``recipes.py``: :class:`TrainConfig`)."""
from .checkpoint import (CHECKPOINT_KEYS, RunFolder, load_training_state, read_jsonl, restore_training_state,
                         rng_state, save_training_state, seed_everything, set_rng_state, training_labels_digest)
from .losses import (HardTripletLoss, Losses, MutualLearning, ReIDLoss, WeightedMultiLabelLoss, mutual_learning_loss,
                     prediction_entropy)
from .loop import start_epoch, top1_correct, train_one_epoch
from .optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler

__all__ = ['CHECKPOINT_KEYS', 'RunFolder', 'load_training_state', 'read_jsonl', 'restore_training_state', 'rng_state',
           'save_training_state', 'seed_everything', 'set_rng_state', 'training_labels_digest', 'HardTripletLoss',
           'Losses', 'MutualLearning', 'ReIDLoss', 'WeightedMultiLabelLoss', 'mutual_learning_loss',
           'prediction_entropy', 'start_epoch', 'top1_correct', 'train_one_epoch', 'OPTIMIZERS', 'SCHEDULERS',
           'build_optimizer', 'build_scheduler']
