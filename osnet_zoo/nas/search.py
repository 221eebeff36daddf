"""The search loop: architecture parameters and network weights trained jointly (OSNet-AIN section 3.3).

:func:`train_network` trains any OSNet-like model (a :class:`SuperNet` during a search, or a fixed
``OSNet`` child afterwards) with one recipe, so searched and hand-designed networks get the same budget.
:func:`search` runs one search per seed and derives a genotype from each (argmax ``pi``); with several seeds
:func:`osnet_zoo.nas.select.select` then trains each child and keeps the best on the cross-domain targets
(the ``paper`` preset does both).

Every epoch an atomic checkpoint is written; ``resume=True`` continues from it, and finished seeds are
skipped, so an interrupted multi-seed search picks up where it stopped.
"""
from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import matplotlib
import torch
import torch.nn as nn

from osnet_zoo import cli
from osnet_zoo import distributed as du
from osnet_zoo.data import ReIDDataset, TrainLoader, build_train_loader, load_datasets
from osnet_zoo.engine import (CHECKPOINT_KEYS, ReIDLoss, RunFolder, build_optimizer, build_scheduler,
                              restore_training_state, seed_everything, start_epoch, train_one_epoch)
from osnet_zoo.engine.optim import OPTIMIZERS, SCHEDULERS
from osnet_zoo.engine.settings import Setting, check_value
from osnet_zoo.evaluation import evaluate_models, load_eval_splits
from osnet_zoo.files import atomic_path, atomic_write_json
from osnet_zoo.models.genotype import GENOTYPE_FORMAT, load_genotype, save_genotype
from osnet_zoo.models.osnet import MIN_INPUT_SIZE

from .supernet import CANDIDATES, SEARCH_MODES, SuperNet, temperature_at

matplotlib.use('Agg')  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = ['StoppedEarly', 'Engine', 'SEARCH_SETTINGS', 'SEARCH_GROUPS', 'PAPER_CONFIG', 'QUICK_CONFIG',
           'resolve_config', 'check_search_config', 'load_dataset', 'load_data', 'train_network', 'epoch_record',
           'record_config', 'search_one_seed', 'search', 'plot_probabilities', 'cross_domain_eval']


class StoppedEarly(Exception):
    """Training stopped at ``engine.stop_after_epoch`` as asked; the checkpoint lets ``resume`` continue."""


@dataclass
class Engine:
    """How a search or a proof runs (not what it computes): device, precision, loader workers, resume."""
    device: torch.device
    precision: str = 'fp32'
    channels_last: bool = False
    workers: int = 0
    resume: bool = False
    quiet: bool = False
    stop_after_epoch: int = 0  # stop each training after this many epochs in one invocation (0: never)


DATA, SEARCH, OPTIM = 'data (default: the preset)', 'search (default: the preset)', 'optimisation (default: the preset)'
SEARCH_GROUPS = (DATA, SEARCH, OPTIM)  # the order of ``python -m osnet_zoo.nas search --help``

# Every search setting, declared once (the kinds and checks of the training settings,
# osnet_zoo/engine/settings.py): the defaults are the paper's search recipe (section 4.2). Four seeds, then the
# selection ("four times with different random seeds ... the best cross-domain performance", next to Table 1):
# each child trained with the cross-domain recipe on the sources and tested on the targets (MSMT17 -> Market1501,
# Duke). ``resume='changeable'``: a resumed search may change it (more epochs, seeds, the selection after it);
# any other must be the recorded one, as the checkpoints were trained with it.
SEARCH_SETTINGS: Tuple[Setting, ...] = (
    Setting('sources', 'names', ['msmt17'], group=DATA, help='training datasets, e.g. msmt17 or synthetic'),
    Setting('combineall', 'bool', True, group=DATA, help='train on all splits of the sources'),
    Setting('targets', 'names', ['market1501', 'dukemtmcreid'], group=DATA, empty_ok=True, resume='changeable',
            help='cross-domain datasets on which the selection compares the seeds\' children'),
    Setting('root', 'str?', None, group=DATA, cli=cli.add_root, resume='changeable'),
    Setting('dataset_options', 'dict', {}, help='reader options (--synthetic-ids: the synthetic sets\' sizes)'),
    Setting('height', 'int', 256, MIN_INPUT_SIZE, group=DATA, help='image height'),
    Setting('width', 'int', 128, MIN_INPUT_SIZE, group=DATA, help='image width'),
    Setting('model_width', 'float', 1.0, 0, above=True, group=SEARCH, help='OSNet width multiplier beta'),
    Setting('conv1_in', 'bool', True, group=SEARCH, help='the fixed IN in conv1 (--no-conv1-in: BN instead)'),
    Setting('epochs', 'int', 120, 1, group=OPTIM, resume='changeable', help='training epochs'),
    Setting('batch_size', 'int', 512, 1, group=OPTIM, cli=lambda g: cli.add_batch_size(
        g, None, help='images per optimisation step over all processes (the global batch; split evenly across '
                      'torchrun processes)')),
    Setting('optim', 'str', 'sgd', OPTIMIZERS, group=OPTIM, help='optimiser'),
    Setting('lr', 'float', 0.1, 0, group=OPTIM, help='learning rate'),
    Setting('momentum', 'float', 0.9, 0, group=OPTIM, help="SGD's momentum"),
    Setting('weight_decay', 'float', 5e-4, 0, group=OPTIM, help='weight decay'),
    Setting('lr_scheduler', 'str', 'cosine', SCHEDULERS, group=OPTIM, help='learning-rate schedule'),
    Setting('arch_lr', 'float?', None, 0, group=OPTIM, help='learning rate of pi (default: --lr)'),
    Setting('arch_weight_decay', 'float', 0.0, 0, group=OPTIM, help='weight decay of pi'),
    Setting('transforms', 'names', ['random_flip', 'color_jitter'], group=DATA, empty_ok=True,
            help='random_flip random_crop random_patch color_jitter random_erase'),
    Setting('label_smooth', 'float', 0.1, 0, group=OPTIM, help='label smoothing of the identity loss'),
    Setting('mode', 'str', 'all', SEARCH_MODES, group=SEARCH,
            help="'all': every candidate computed and mixed (eq. 5 and 8); 'sampled': only the drawn one, "
                 'straight-through (a memory option, not the paper\'s)'),
    Setting('samples', 'int', 1, 1, group=SEARCH, help='Monte-Carlo draws of the architecture per step (S)'),
    Setting('tau_initial', 'float', 10.0, 0, above=True, group=SEARCH, help='initial Gumbel-softmax temperature'),
    Setting('tau_halve_every', 'int', 20, 1, group=SEARCH, help='halve the temperature every N epochs'),
    Setting('tau_floor', 'float', 1.0, 0, above=True, group=SEARCH, help='lowest temperature'),
    Setting('seeds', 'ints', [1, 2, 3, 4], group=SEARCH, resume='changeable',
            help='one search per seed (then `select` chooses among them)'),
    Setting('distance', 'str', 'euclidean', ('euclidean', 'cosine'), help='distance of the cross-domain tests'),
    Setting('max_steps_per_epoch', 'int', 0, 0, group=OPTIM, resume='changeable',
            help='cap iterations per epoch (smoke tests)'),
    Setting('select', 'bool', True, group=SEARCH, resume='changeable',
            help='after the search, run `select` on its output (the paper preset does)'),
    Setting('select_recipe', 'str', 'cross_domain_msmt17', resume='changeable',
            help='training recipe of the selection\'s children'),
)
PAPER_CONFIG: Dict[str, Any] = {s.name: copy.deepcopy(s.default) for s in SEARCH_SETTINGS}
# The default of `python -m osnet_zoo.nas`: a small search on the synthetic set that a CPU finishes in minutes.
QUICK_CONFIG: Dict[str, Any] = dict(
    PAPER_CONFIG, sources=['synthetic'], combineall=False, targets=['synthetic_b'], height=128, width=64,
    model_width=0.25, epochs=6, batch_size=32, lr=0.05, tau_halve_every=1, seeds=[1], select=False,
    select_recipe='synthetic',
)


def resolve_config(base: Dict[str, Any], **overrides: Any) -> Dict[str, Any]:
    """``base`` with every override that is not None, checked (:func:`check_search_config`); unknown keys are an
    error naming them."""
    unknown = set(overrides) - set(base)
    if unknown:
        raise KeyError(f'Unknown search options {sorted(unknown)}; known: {sorted(base)}.')
    cfg = dict(base)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    check_search_config(cfg)
    return cfg


def check_search_config(cfg: Dict[str, Any]) -> None:
    """Check (and normalise in place) every declared setting that ``cfg`` holds against its declaration, naming
    the first bad one (``--epochs 0``, a temperature of 0), and that the seeds are distinct (``--seeds 1 1``)."""
    seeds = cfg.get('seeds')
    if not isinstance(seeds, list) or not seeds:  # a lone seed too: a recorded search always lists its seeds
        raise ValueError(f'--seeds must be one or more integers, got {seeds!r}.')
    for s in SEARCH_SETTINGS:
        if s.name in cfg:
            cfg[s.name] = check_value(s, cfg[s.name])
    seeds = cfg['seeds']
    if len(set(seeds)) != len(seeds):
        raise ValueError(f'--seeds {" ".join(map(str, seeds))}: each seed once (a seed searches once).')


def load_dataset(names: Sequence[str], cfg: Dict[str, Any], combineall: bool = False) -> ReIDDataset:
    """The datasets ``names`` under ``cfg['root']`` (``cfg['dataset_options']`` size synthetic sets)."""
    return load_datasets(names, cfg.get('root'), combineall, **(cfg.get('dataset_options') or {}))


def load_data(cfg: Dict[str, Any], seed: int, engine: Engine) -> Tuple[TrainLoader, int]:
    """The training loader over ``cfg['sources']`` (``cfg['batch_size']`` is the global batch, split over
    the DDP ranks) and the class count."""
    dataset = load_dataset(cfg['sources'], cfg, cfg['combineall'])
    train = build_train_loader(dataset.train, cfg['height'], cfg['width'], cfg['batch_size'], cfg['transforms'],
                               seed=seed, workers=engine.workers, pin_memory=engine.device.type == 'cuda')
    return train, dataset.num_train_pids


def cross_domain_eval(model: nn.Module, targets: Sequence[str], cfg: Dict[str, Any], engine: Engine,
                      epoch: int) -> Dict[str, Any]:
    """Rank-1 / mAP of ``model``'s embedding on each target's query/gallery (a SuperNet evaluates its
    argmax child). Runs on every rank; results on the main process."""
    splits = load_eval_splits(targets, cfg.get('root'), **(cfg.get('dataset_options') or {}))
    return evaluate_models([model], splits, engine.device, distance=cfg['distance'], size=(cfg['height'], cfg['width']),
                           batch_size=max(cfg['batch_size'], 64), workers=engine.workers,
                           precision=engine.precision, epoch=epoch)


def _build_optimizer(model: nn.Module, cfg: Dict[str, Any]):
    is_super = isinstance(model, SuperNet)
    weights = model.weight_parameters() if is_super else list(model.parameters())
    opt = build_optimizer(cfg['optim'], weights, cfg['lr'], cfg['weight_decay'], cfg['momentum'])
    if is_super:
        arch_lr = cfg['arch_lr'] if cfg['arch_lr'] is not None else cfg['lr']
        opt.add_param_group(dict(params=model.arch_parameters(), lr=arch_lr, weight_decay=cfg['arch_weight_decay']))
    sched = build_scheduler(cfg['lr_scheduler'], opt, cfg['epochs'])
    return opt, sched


def train_network(model: nn.Module, cfg: Dict[str, Any], out: Path, seed: int, engine: Engine,
                  desc: str = 'train') -> Dict[str, Any]:
    """Train ``model`` (SuperNet or OSNet, classifier sized to the sources) on ``cfg['sources']`` with the
    training loop of ``python -m osnet_zoo.train`` (:func:`osnet_zoo.engine.train_one_epoch`).

    Label-smoothed cross-entropy; a SuperNet adds its architecture step: the temperature set per epoch,
    ``cfg['samples']`` Monte-Carlo draws of the architecture per batch (gradients averaged) and ``pi`` in
    the optimiser. Writes ``out/checkpoint.pth`` every epoch (the one checkpoint format of
    :class:`~osnet_zoo.engine.RunFolder`) and ``out/metrics.jsonl`` (a SuperNet's lines hold its
    probabilities). Returns ``{'seconds', 'epochs'}``. Raises :class:`StoppedEarly` once
    ``engine.stop_after_epoch`` epochs ran in this call (when set): for time-limited sessions.
    """
    device = engine.device
    train, _ = load_data(cfg, seed, engine)
    model.to(device)
    if engine.channels_last:
        model.to(memory_format=torch.channels_last)
    is_super = isinstance(model, SuperNet)
    optimizer, scheduler = _build_optimizer(model, cfg)
    net: nn.Module = model
    if du.is_distributed():
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == 'cuda' else None,
            find_unused_parameters=is_super and cfg['mode'] == 'sampled')
    criterion = ReIDLoss(cfg['label_smooth'])
    scaler = torch.amp.GradScaler(device.type) if engine.precision == 'fp16' else None
    run = RunFolder(out, writer=du.is_main_process())
    start, seconds = 0, 0.0
    if engine.resume and run.checkpoint.is_file():
        state = run.resume_state(required=(*CHECKPOINT_KEYS, 'seconds'))
        start, seconds = restore_training_state(state, model, optimizer, scheduler, scaler), state['seconds']
    run.start(start)
    model.train()
    for epoch in range(start, cfg['epochs']):
        if engine.stop_after_epoch and epoch - start >= engine.stop_after_epoch:
            raise StoppedEarly(f'{desc}: stopped after epoch {epoch} of {cfg["epochs"]} as asked; '
                               f'the checkpoint is {run.checkpoint}: run again with --resume to continue.')
        start_epoch(seed, epoch, train)  # per-epoch seeding: a resumed run ends where an unbroken one does
        if is_super:  # the architecture step: this epoch's temperature
            model.temperature = temperature_at(epoch, cfg['tau_initial'], cfg['tau_halve_every'], cfg['tau_floor'])
        t0 = time.time()
        stats = train_one_epoch(net, criterion, optimizer, train.loader, device, epoch, cfg['epochs'], scaler=scaler,
                                precision=engine.precision, channels_last=engine.channels_last,
                                max_steps=cfg['max_steps_per_epoch'], draws=cfg['samples'] if is_super else 1,
                                checkpoint=run.checkpoint, desc=desc, quiet=engine.quiet)
        scheduler.step()
        seconds += time.time() - t0
        record = epoch_record(model, stats, epoch, optimizer, time.time() - t0)
        run.end_epoch(record, epoch=epoch + 1, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                      seconds=seconds)
        if du.is_main_process() and not engine.quiet:
            extra = f"  tau {record['temperature']:.2f}  choice {'/'.join(model.choices())}" if is_super else ''
            print(f"{desc} epoch {epoch + 1}/{cfg['epochs']}  loss {record['loss']:.3f}  "
                  f"acc {record['acc']:.3f}{extra}", flush=True)
        du.barrier()
    train.close()
    return dict(seconds=seconds, epochs=cfg['epochs'])


def epoch_record(model: nn.Module, stats: Dict[str, float], epoch: int, optimizer: torch.optim.Optimizer,
                 seconds: float) -> Dict[str, Any]:
    """The log line of an epoch: its loss, accuracy, learning rate and time (a SuperNet's also its
    temperature, probabilities, ``pi`` and architecture weights)."""
    record = dict(epoch=epoch + 1, loss=stats['loss'], acc=stats['acc'], lr=optimizer.param_groups[0]['lr'],
                  seconds=seconds)
    if isinstance(model, SuperNet):
        record.update(temperature=model.temperature, probabilities=model.probabilities().tolist(),
                      pi=model.pi.tolist(), arch_weights=model.arch_weights.detach().float().tolist())
    return record


def plot_probabilities(records: List[Dict[str, Any]], positions: Sequence[str], out_png: Path,
                       title: str = '') -> None:
    """softmax(pi) of each candidate over epochs, one panel per position; the winner is drawn bold."""
    recs = [r for r in records if 'probabilities' in r]
    epochs = [r['epoch'] for r in recs]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharex=True, sharey=True)
    for p, ax in enumerate(axes.flat[:len(positions)]):
        final = recs[-1]['probabilities'][p] if recs else [0] * len(CANDIDATES)
        best = max(range(len(CANDIDATES)), key=lambda k: final[k])
        for k, name in enumerate(CANDIDATES):
            ax.plot(epochs, [r['probabilities'][p][k] for r in recs], marker='o', ms=3, label=name,
                    lw=2.5 if k == best else 1.2)
        ax.set(title=f'{positions[p]} -> {CANDIDATES[best]}', ylim=(0, 1))
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel('epoch')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[:, 0]:
        ax.set_ylabel('probability')
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format='png')
    plt.close(fig)


def search_one_seed(cfg: Dict[str, Any], out: Path, seed: int, engine: Engine) -> Dict[str, Any]:
    """One search: train the SuperNet, derive argmax pi, write ``genotype.json`` and ``probabilities.png``.
    When resuming, a finished seed (its genotype exists for the same epoch count) is read back, not searched."""
    gpath = out / 'genotype.json'
    if engine.resume and gpath.is_file():
        done = load_genotype(gpath)
        if done.get('epochs') == cfg['epochs']:
            return done
    seed_everything(seed)
    # the classifier needs the number of training identities: read the sources first (cheap)
    num_classes = load_dataset(cfg['sources'], cfg, cfg['combineall']).num_train_pids
    model = SuperNet(cfg['model_width'], num_classes=num_classes, conv1_in=cfg['conv1_in'], mode=cfg['mode'])
    stats = train_network(model, cfg, out, seed, engine, desc=f'search seed {seed}')
    genotype = dict(
        format=GENOTYPE_FORMAT, version=1, name=f'searched_seed{seed}', conv1_in=cfg['conv1_in'],
        positions=model.positions, candidates=list(CANDIDATES), block_norms=model.choices(),
        pi=model.pi.tolist(), arch_weights=model.arch_weights.detach().float().tolist(),
        probabilities=model.probabilities().tolist(), seed=seed,
        data=dict(sources=cfg['sources'], combineall=cfg['combineall'], size=[cfg['height'], cfg['width']],
                  dataset_options=cfg.get('dataset_options') or {}),
        epochs=cfg['epochs'], mode=cfg['mode'], samples=cfg['samples'], model_width=cfg['model_width'],
        batch_size=cfg['batch_size'], world_size=du.get_world_size(),
        temperature=dict(initial=cfg['tau_initial'], halve_every=cfg['tau_halve_every'], floor=cfg['tau_floor']),
        search_seconds=round(stats['seconds'], 2),
    )
    if du.is_main_process():
        save_genotype(genotype, gpath)
        plot_probabilities(RunFolder(out).records(), model.positions, out / 'probabilities.png',
                           title=f'seed {seed}: ' + ' / '.join(genotype['block_norms']))
    du.barrier()
    return genotype


def record_config(cfg: Dict[str, Any], path: Path) -> None:
    """Write ``cfg`` to ``path`` (main process) with the run's ``world_size`` and ``batch_size_per_rank``:
    ``cfg['batch_size']`` is the global batch, and one that the world size does not divide is refused here,
    before any training starts, naming both numbers."""
    world = du.get_world_size()
    if cfg['batch_size'] % world:
        raise ValueError(f"the global batch size {cfg['batch_size']} cannot be split evenly over {world} "
                         f'processes; use a multiple of {world}.')
    if du.is_main_process():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, dict(cfg, world_size=world, batch_size_per_rank=cfg['batch_size'] // world))


def search(cfg: Dict[str, Any], out: Path, engine: Engine) -> List[Dict[str, Any]]:
    """Search once per seed in ``cfg['seeds']`` (into ``out/seed_<k>``); returns the genotypes in seed order.

    Writes ``out/config.json`` (with the world size and the per-process batch) and ``out/seeds.json`` (the
    placement each seed found). With one seed its genotype is also ``out/genotype.json``; with several,
    ``nas select`` (:func:`osnet_zoo.nas.select.select`) chooses among them.
    """
    out = Path(out)
    record_config(cfg, out / 'config.json')
    found = [search_one_seed(cfg, out / f'seed_{s}', s, engine) for s in cfg['seeds']]
    if du.is_main_process():
        atomic_write_json(out / 'seeds.json', dict(seeds=[
            dict(seed=g['seed'], block_norms=g['block_norms'], probabilities=g['probabilities'],
                 search_seconds=g.get('search_seconds')) for g in found]))
        if len(found) == 1:
            save_genotype(found[0], out / 'genotype.json')
            shutil.copyfile(out / f"seed_{found[0]['seed']}" / 'probabilities.png', out / 'probabilities.png')
    du.barrier()
    return found
