"""One step of the NAS training loop (``osnet_zoo.nas.search.train_network``) at a global batch, for
tests/test_global_batch.py: run as a plain script (one process) or under torchrun.

``python tests/global_batch_step.py OUT ROOT BATCH`` writes ``OUT/rank<r>.pt`` (the images this rank's step
saw, and the architecture draw) and, from rank 0, ``OUT/state.pt`` (every parameter after the step),
``OUT/config.json`` (as a search records it) and the run's folder ``OUT/run``.

BatchNorm's batch statistics are per process (as under DDP, and in the paper's DataParallel training), so
they differ between 1 and N processes by design; the model here keeps its BN layers on running statistics,
so that the comparison isolates what the global batch is about: which images a step sees, the split over
the processes, the averaging of the gradients and the update.
"""
import sys
from pathlib import Path

import torch
import torch.nn as nn

from osnet_zoo import distributed as du
from osnet_zoo.nas.search import PAPER_CONFIG, Engine, load_dataset, record_config, resolve_config, train_network
from osnet_zoo.nas.supernet import SuperNet


class RunningStatsBNSuperNet(SuperNet):
    """A SuperNet whose BatchNorm layers normalise with their running statistics in training too."""

    def train(self, mode: bool = True) -> 'RunningStatsBNSuperNet':
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def main(out: Path, root: str, batch: int) -> None:
    torch.set_num_threads(1)
    device = du.init_distributed('cpu')
    cfg = resolve_config(PAPER_CONFIG, sources=['synthetic'], combineall=False, root=root, seeds=[1], targets=[],
                         dataset_options=dict(num_train_ids=8, num_test_ids=4), height=64, width=32,
                         model_width=0.25, epochs=1, batch_size=batch, max_steps_per_epoch=1,
                         transforms=['random_flip', 'color_jitter'])
    record_config(cfg, out / 'config.json')
    num_classes = load_dataset(cfg['sources'], cfg).num_train_pids
    torch.manual_seed(0)
    model = RunningStatsBNSuperNet(0.25, num_classes=num_classes)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    train_network(model, cfg, out / 'run', seed=1, engine=Engine(device=device, quiet=True))
    torch.save(dict(images=seen[0], alphas=model.last_alphas), out / f'rank{du.get_rank()}.pt')
    if du.is_main_process():
        torch.save(model.state_dict(), out / 'state.pt')
    du.cleanup()


if __name__ == '__main__':
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
