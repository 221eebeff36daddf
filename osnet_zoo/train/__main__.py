"""Train OSNet for person re-identification.

With no arguments it trains a small OSNet on the embedded synthetic re-ID set on the CPU, evaluates it,
and prints Rank-1 / mAP. The papers' recipes ship with the package::

    python -m osnet_zoo.train                                   # synthetic demo, CPU, a few minutes
    python -m osnet_zoo.train --recipe imagenet_finetune --root ~/datasets --sources market1501
    python -m osnet_zoo.train --recipe cross_domain_msmt17 --root ~/datasets --device cuda --precision bf16
    python -m osnet_zoo.train --recipe mix4 --root ~/datasets --device cuda --output runs/mix4
    python -m osnet_zoo.train --recipe attributes_pa100k --root ~/datasets --device cuda --output runs/pa100k
    python -m osnet_zoo.train --recipe cifar10 --root ~/datasets --device cuda \
        --model-args layers=[3,8,6] stem=cifar num_streams=1 aggregation=add
    python -m osnet_zoo.train --model resnet50 --pretrained none --sources market1501 --root ~/datasets
    python -m osnet_zoo.train --recipe small_finetune --sources viper --targets viper --split-id 3 \
        --init-checkpoint runs/mix4 --root ~/datasets --output runs/viper/split_03
    torchrun --nproc_per_node 8 -m osnet_zoo.train --recipe scratch --root ~/datasets --device cuda

Any recipe value can be overridden by its command-line option. Every epoch an atomic checkpoint is written
to ``OUTPUT/checkpoint.pth``; ``--resume`` continues from it.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import timm
import torch
import torch.nn as nn
from tqdm import tqdm

from osnet_zoo import cli
from osnet_zoo import distributed as du
from osnet_zoo.data import build_train_loader, device_batches, load_datasets
from osnet_zoo.data.datasets import DATASETS, LABELLED_DATASETS, PROTOCOLS
from osnet_zoo.evaluation import autocast_dtype, evaluate_models, load_eval_splits, results_document
from osnet_zoo.models.embedding import Embedder
from osnet_zoo.train.checkpoint import (RunFolder, load_training_state, rng_state, seed_everything, set_rng_state,
                                       training_labels_digest)
from osnet_zoo.train.curves import plot_curves
from osnet_zoo.train.final import save_model_folder
from osnet_zoo.train.labelled import is_labelled_run, train_labelled
from osnet_zoo.train.losses import CrossEntropyLabelSmooth, HardTripletLoss, mutual_learning_loss, prediction_entropy
from osnet_zoo.train.optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler
from osnet_zoo.train.recipes import TrainConfig, list_recipes, resolve_config, resume_config
from osnet_zoo.files import atomic_write_json
from osnet_zoo.weights import CheckpointError, load_osnet_checkpoint, read_checkpoint

def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m osnet_zoo.train``."""
    p = argparse.ArgumentParser(
        prog='python -m osnet_zoo.train',
        description=__doc__.split('\n\n')[0] + ' Shipped recipes: ' + ', '.join(list_recipes()) + '.',
        epilog='examples:\n' + '\n'.join(line for line in __doc__.splitlines() if line.startswith('    ')),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group('recipe and data')
    g.add_argument('--recipe', default='synthetic', help='shipped recipe name or a YAML file (default: synthetic)')
    cli.add_root(g)
    g.add_argument('--sources', nargs='+', help='training datasets (several: identities relabelled per source)')
    g.add_argument('--targets', nargs='+', help='evaluation datasets')
    g.add_argument('--combineall', action=argparse.BooleanOptionalAction, default=None,
                   help='train on all splits of the sources (MSMT17 protocol of the AIN paper)')
    g.add_argument('--height', type=int, help='input height')
    g.add_argument('--width', type=int, help='input width')
    g.add_argument('--transforms', nargs='+', help='random_flip random_crop random_patch color_jitter random_erase')
    g.add_argument('--split-id', type=int, help=f'split of the multi-split benchmarks {sorted(PROTOCOLS)} (0..9)')
    g.add_argument('--mean', type=float, nargs=3, metavar=('R', 'G', 'B'),
                   help="pixel mean (0..1; default ImageNet's; python -m osnet_zoo.data stats computes a dataset's)")
    g.add_argument('--std', type=float, nargs=3, metavar=('R', 'G', 'B'), help="pixel std (default ImageNet's)")
    g.add_argument('--dataset-option', dest='dataset_options', nargs='+', metavar='KEY=VALUE',
                   help="other options of those readers, e.g. VIPeR's direction=b2a (cam_b queries)")
    cli.add_workers(g)
    g = p.add_argument_group('model')
    cli.add_model(g, default=None, help='timm model name, e.g. osnet_x1_0, osnet_ain_x1_0, or any timm backbone '
                                        '(resnet50, mobilenetv2_100: its pooled features; default: the recipe\'s)')
    g.add_argument('--pretrained', help="pretrained tag to start from (e.g. 'imagenet'); 'none' for random")
    g.add_argument('--init-checkpoint', metavar='PATH',
                   help='start from these weights: a training run folder (its final/model.safetensors, else its '
                        'checkpoint.pth), a final/ folder or a checkpoint file; a classifier of another class '
                        'count is re-initialised')
    g.add_argument('--model-args', nargs='+', metavar='KEY=VALUE',
                   help='extra timm.create_model arguments, e.g. num_streams=1 (the T = 1 baseline)')
    g = p.add_argument_group('optimisation (default: the recipe\'s)')
    g.add_argument('--epochs', type=int)
    cli.add_batch_size(g, None, help='images per optimisation step over all processes (the global batch; split '
                       'evenly across torchrun processes)')
    g.add_argument('--optim', choices=OPTIMIZERS)
    g.add_argument('--lr', type=float)
    g.add_argument('--weight-decay', type=float)
    g.add_argument('--lr-scheduler', choices=SCHEDULERS)
    g.add_argument('--stepsize', type=int, nargs='+', help='multistep milestones (epochs)')
    g.add_argument('--gamma', type=float, help='multistep decay factor')
    g.add_argument('--fixbase-epochs', type=int, help='first epochs train only the classifier')
    g.add_argument('--label-smooth', type=float)
    g.add_argument('--entropy-weight', type=float,
                   help='entropy maximisation: subtract this times the entropy of the predictions (0: off)')
    g.add_argument('--triplet-weight', type=float, help='weight of the hard-mining triplet loss (0: off)')
    g.add_argument('--margin', type=float, help='triplet margin')
    g.add_argument('--num-instances', type=int, help='images per identity in a batch (identity sampler)')
    g.add_argument('--dml', action=argparse.BooleanOptionalAction, default=None,
                   help='deep mutual learning of two networks; test features concatenate both')
    g = p.add_argument_group('evaluation')
    g.add_argument('--eval-freq', type=int, help='evaluate every N epochs (0: only at the end)')
    g.add_argument('--distance', choices=['euclidean', 'cosine'])
    g = p.add_argument_group('engineering')
    cli.add_device(g)
    cli.add_precision(g)
    g.add_argument('--channels-last', action='store_true', help='channels_last memory format')
    g.add_argument('--compile', action='store_true', help='torch.compile the model')
    cli.add_output(g, 'runs/osnet', 'folder for checkpoints, logs, curves, final model')
    g.add_argument('--resume', nargs='?', const='auto', default=None,
                   help='resume from OUTPUT/checkpoint.pth (or the given checkpoint) with the settings it recorded; '
                        'only --lr, --epochs, --eval-freq, --precision and engineering options may change')
    g.add_argument('--seed', type=int, default=1, help='random seed (default: 1)')
    g.add_argument('--deterministic', action='store_true', help='deterministic algorithms (exact resume)')
    g.add_argument('--tensorboard', action='store_true', help='also log to TensorBoard (needs tensorboard)')
    g.add_argument('--max-steps-per-epoch', type=int, default=0, help='cap iterations per epoch (smoke tests)')
    return p


def given_options(argv: Optional[List[str]]) -> List[str]:
    """The config keys that ``argv`` (the command line) sets explicitly, defaults aside."""
    parser = get_args_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return sorted(vars(parser.parse_args(argv)))


def validate_config(cfg: TrainConfig) -> None:
    """Refuse a bad setting before any work (not after all epochs), naming the option."""
    for option, names in (('--sources', cfg.sources), ('--targets', cfg.targets)):
        unknown = [n for n in names if n not in DATASETS and n not in LABELLED_DATASETS]
        if unknown:
            raise ValueError(f'{option} {unknown[0]!r}: unknown dataset; available: '
                             f'{", ".join(sorted(DATASETS) + sorted(LABELLED_DATASETS))}.')
    for option, value, low in (('--epochs', cfg.epochs, 1), ('--batch-size', cfg.batch_size, 1),
                               ('--eval-freq', cfg.eval_freq, 0),
                               ('--max-steps-per-epoch', cfg.max_steps_per_epoch, 0)):
        if value < low:
            raise ValueError(f'{option} must be >= {low}, got {value}.')
    arch = cfg.model.split('.')[0]
    if not timm.is_model(arch):
        raise ValueError(f'--model {cfg.model!r} is not a timm model; choose an OSNet '
                         f'({", ".join(timm.list_models("osnet*"))}) or any timm backbone (resnet50, mobilenetv2_100).')
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f'--output {out} is a file, not a folder: pass a folder for the run.')


def create_models(cfg: TrainConfig, num_classes: int) -> List[nn.Module]:
    """The network (two for deep mutual learning), from ``cfg.pretrained`` or ``cfg.init_checkpoint``
    weights when set, built with ``cfg.model_args``."""
    if cfg.pretrained and cfg.init_checkpoint:
        raise ValueError(f'--pretrained {cfg.pretrained} and --init-checkpoint {cfg.init_checkpoint} both set the '
                         'starting weights; give one (--pretrained none to start from the checkpoint).')
    name = cfg.model + (f'.{cfg.pretrained}' if cfg.pretrained else '')
    try:
        models = [timm.create_model(name, pretrained=bool(cfg.pretrained), num_classes=num_classes,
                                    **cfg.model_args) for _ in range(2 if cfg.dml else 1)]
    except TypeError as e:
        raise ValueError(f'--model-args {cfg.model_args}: not arguments of {cfg.model} ({e})') from None
    if cfg.init_checkpoint:
        load_init_checkpoint(models, cfg.init_checkpoint)
    return models


def resolve_init_checkpoint(path: str) -> Path:
    """The weights file ``--init-checkpoint`` names: a run folder's ``final/model.safetensors`` (else its
    ``checkpoint.pth``), a ``final/`` folder's ``model.safetensors``, or the file itself."""
    p = Path(path).expanduser()
    candidates = [p / 'final' / 'model.safetensors', p / 'model.safetensors', p / 'checkpoint.pth'] \
        if p.is_dir() else [p]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if p.is_dir():
        raise FileNotFoundError(f'--init-checkpoint {path}: a folder without final/model.safetensors, '
                                f'model.safetensors or checkpoint.pth (is it a finished training run?)')
    raise FileNotFoundError(f'--init-checkpoint {path}: no such file or folder')


def load_init_checkpoint(models: Sequence[nn.Module], path: str) -> Path:
    """Load the weights ``path`` names (see :func:`resolve_init_checkpoint`) into every model; a classifier
    of another class count is dropped, so the model keeps its freshly initialised one."""
    file = resolve_init_checkpoint(path)
    state = read_checkpoint(file)
    if isinstance(state.get('models'), list):  # our training checkpoint.pth: the first network
        state = state['models'][0]
    for model in models:
        try:
            load_osnet_checkpoint(model, state, strict=False)
        except CheckpointError as e:
            raise CheckpointError(f'--init-checkpoint {file}: {e} (is --model / --model-args the one it was '
                                  f'trained with?)') from None
    return file


def dataset_options(cfg: TrainConfig) -> Dict[str, Dict[str, Any]]:
    """Reader options per dataset: ``--split-id`` and ``--dataset-option`` go to the multi-split benchmarks
    among the sources and targets; an option that none of them takes is an error naming it."""
    if cfg.split_id is None and not cfg.dataset_options:
        return {}
    small = [n for n in dict.fromkeys([*cfg.sources, *cfg.targets]) if n in PROTOCOLS]
    if not small:
        raise ValueError(f'--split-id / --dataset-option apply to the multi-split benchmarks {sorted(PROTOCOLS)}; '
                         f'none of the sources {cfg.sources} or targets {cfg.targets} is one.')
    per_dataset: Dict[str, Dict[str, Any]] = {}
    for name in small:
        accepted = inspect.signature(DATASETS[name]).parameters
        per_dataset[name] = {k: v for k, v in cfg.dataset_options.items() if k in accepted}
        if cfg.split_id is not None:
            per_dataset[name]['split_id'] = cfg.split_id
    unused = sorted(set(cfg.dataset_options) - {k for opts in per_dataset.values() for k in opts})
    if unused:
        raise ValueError(f'--dataset-option {unused[0]}: not an option of {small} (viper takes direction=a2b|b2a).')
    return per_dataset


def set_fixbase(models: Sequence[nn.Module], frozen: bool) -> None:
    """While ``frozen``, only the classifier trains; the backbone is frozen and kept in eval mode."""
    for model in models:
        head = model.pretrained_cfg.get('classifier', 'classifier') if hasattr(model, 'pretrained_cfg') \
            else 'classifier'  # timm models name it: classifier, fc, head.fc, ...
        for name, p in model.named_parameters():
            p.requires_grad_(not frozen or name.startswith(head + '.'))
        model.train()
        if frozen:
            for name, m in model.named_modules():
                if name and not (name == head or name.startswith(head + '.') or head.startswith(name + '.')):
                    m.eval()


def train_one_epoch(
        nets: Sequence[nn.Module], optimizers: Sequence[torch.optim.Optimizer], loader: torch.utils.data.DataLoader,
        cfg: TrainConfig, epoch: int, device: torch.device, scaler: Optional[torch.amp.GradScaler],
) -> Dict[str, float]:
    """One epoch of label-smoothed cross-entropy (+ triplet, + mutual learning); the epoch's mean losses
    and accuracy over all ranks."""
    ce = CrossEntropyLabelSmooth(cfg.label_smooth)
    triplet = HardTripletLoss(cfg.margin) if cfg.triplet_weight > 0 else None
    amp_dtype = autocast_dtype(cfg.precision)
    sums = dict(loss=0.0, loss_ce=0.0, correct=0.0, n=0.0)
    if triplet:
        sums['loss_triplet'] = 0.0
    if len(nets) == 2:
        sums['loss_dml'] = 0.0
    batches, steps = device_batches(loader, device, cfg.channels_last, cfg.max_steps_per_epoch, cfg.mean, cfg.std)
    bar = tqdm(batches, total=steps, desc=f'epoch {epoch + 1}/{cfg.epochs}', disable=not du.is_main_process(),
               leave=False, dynamic_ncols=True)
    step = 0
    for step, (images, pids) in enumerate(bar):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = [net(images) for net in nets]
        losses = []
        for i, (emb, logits) in enumerate(outputs):
            loss_ce = ce(logits, pids)
            loss = loss_ce
            if cfg.entropy_weight:  # entropy maximisation (ICCV 2019 supplementary, Table 12c)
                entropy = prediction_entropy(logits)
                loss = loss - cfg.entropy_weight * entropy
                sums['loss_entropy'] = sums.get('loss_entropy', 0.0) + entropy.item() / len(nets)
            sums['loss_ce'] += loss_ce.item() / len(nets)
            if triplet is not None:
                loss_tri = triplet(emb, pids)
                loss = loss + cfg.triplet_weight * loss_tri
                sums['loss_triplet'] += loss_tri.item() / len(nets)
            if len(nets) == 2:
                loss_dml = mutual_learning_loss(logits, outputs[1 - i][1])
                loss = loss + loss_dml
                sums['loss_dml'] += loss_dml.item() / 2
            losses.append(loss)
        total = sum(losses)
        if not torch.isfinite(total):
            ckpt = Path(cfg.output) / 'checkpoint.pth'
            on_disk = (f'the checkpoint of the last finished epoch ({ckpt}) is intact; lower the learning rate '
                       '(--lr) or disable fp16 and --resume' if ckpt.is_file() else
                       'no checkpoint was written yet (none is saved before the first epoch ends); '
                       'restart with a lower learning rate (--lr)')
            raise FloatingPointError(f'Loss became {total.item()} at epoch {epoch + 1}, step {step}: stopping. '
                                     f'{on_disk}.')
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(total).backward()
            for opt in optimizers:
                scaler.step(opt)
            scaler.update()
        else:
            total.backward()
            for opt in optimizers:
                opt.step()
        sums['loss'] += total.item() / len(nets)
        sums['correct'] += (outputs[0][1].argmax(1) == pids).sum().item()
        sums['n'] += len(pids)
        bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.3f}", acc=f"{sums['correct'] / sums['n']:.3f}")
    n_steps = max(min(steps, step + 1), 1)
    stats = {k: du.reduce_mean(v / n_steps, device) for k, v in sums.items() if k.startswith('loss')}
    stats['acc'] = du.reduce_mean(sums['correct'] / max(sums['n'], 1), device)
    return stats


def evaluate(models: Sequence[nn.Module], splits, cfg: TrainConfig, device: torch.device,
             epoch: int) -> Dict[str, Any]:
    """Rank-1 / mAP of the models' (concatenated) features on every target, at the training size."""
    return evaluate_models(models, splits, device, distance=cfg.distance, size=(cfg.height, cfg.width),
                           mean=cfg.mean, std=cfg.std, batch_size=max(cfg.batch_size, 64), workers=cfg.workers,
                           precision=cfg.precision,
                           epoch=epoch)


def resume_checks(state: Dict[str, Any], cfg: TrainConfig, checkpoint: Any, num_classes: int,
                  identities: str) -> None:
    """Refuse to continue ``state`` with more epochs done than ``--epochs``, or on other training identities."""
    if cfg.epochs < state['epoch']:
        raise ValueError(f'--epochs {cfg.epochs} is fewer than the {state["epoch"]} epochs the checkpoint {checkpoint} '
                         'has already trained.')
    recorded = state.get('identities')
    if (recorded is not None and recorded != identities) or state.get('num_classes', num_classes) != num_classes:
        raise ValueError(
            f'Cannot resume from {checkpoint}: the training identities of --sources {" ".join(cfg.sources)} '
            f'(root {cfg.root or "default"}: {num_classes} identities, labels digest {identities[:12]}) differ from '
            f'those the checkpoint was trained on ({state.get("num_classes", "?")} identities, digest '
            f'{str(recorded)[:12]}). Resume on the same dataset, or start a new run from its weights '
            '(--init-checkpoint).')


def finished_results(out: Path) -> Optional[Dict[str, Any]]:
    """The results (per target) of a run whose final evaluation and model were written, else None."""
    try:
        results = json.loads((out / 'results.json').read_text())
    except (OSError, ValueError):
        return None
    if isinstance(results, dict) and 'targets' in results:
        results = results['targets']
    return results if results and (out / 'final' / 'model.safetensors').is_file() else None


def log_evaluation(models: Sequence[nn.Module], splits, cfg: TrainConfig, device: torch.device, epoch: int,
                   run: RunFolder, writer: Any) -> Dict[str, Any]:
    """:func:`evaluate`, with a log line per target (and TensorBoard scalars)."""
    results = evaluate(models, splits, cfg, device, epoch)
    for target, r in results.items():
        run.log_line(dict(kind='eval', epoch=epoch, target=target, rank1=r['rank1'], mAP=r['mAP'], mINP=r['mINP']))
        if writer:
            for k in ('rank1', 'mAP', 'mINP'):
                writer.add_scalar(f'eval/{target}/{k}', r[k], epoch)
    return results


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Run ``python -m osnet_zoo.train``; returns the final evaluation results per target dataset."""
    args = get_args_parser().parse_args(argv)
    args.workers = cli.resolve_workers(args.workers, args.device)
    cfg = resolve_config(args)
    state = None
    if cfg.resume:
        # read the checkpoint before anything slow, so a wrong --resume fails at once; the run continues
        # with the checkpoint's settings (what may change on resume: recipes.resume_config)
        checkpoint = Path(cfg.output) / 'checkpoint.pth' if cfg.resume == 'auto' else Path(cfg.resume)
        state = load_training_state(checkpoint)
        if isinstance(state.get('config'), dict):
            cfg = resume_config(state['config'], cfg, given_options(argv))
    validate_config(cfg)
    if cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401  (optional dependency: fail before any work, not at the first log)
        except ImportError:
            raise ValueError('--tensorboard needs the tensorboard package: pip install "osnet-zoo[tensorboard]"')
    if is_labelled_run(cfg):  # attributes / categories (PA-100K, CIFAR, ImageNet): osnet_zoo.train.labelled
        return train_labelled(cfg, state, checkpoint if state is not None else None, create_models)
    device = du.init_distributed(cfg.device)
    out = Path(cfg.output)
    run = RunFolder(out, writer=du.is_main_process())
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    seed_everything(cfg.seed)
    if cfg.init_checkpoint:
        resolve_init_checkpoint(cfg.init_checkpoint)  # likewise a wrong --init-checkpoint

    per_dataset = dataset_options(cfg)
    dataset = load_datasets(cfg.sources, cfg.root, cfg.combineall, per_dataset=per_dataset)
    if du.is_main_process():
        print(dataset.summary())
    train = build_train_loader(dataset.train, cfg.height, cfg.width, cfg.batch_size, cfg.transforms,
                               num_instances=cfg.num_instances if cfg.triplet_weight > 0 else 0, seed=cfg.seed,
                               workers=cfg.workers, pin_memory=device.type == 'cuda')
    num_classes = dataset.num_train_pids
    identities = training_labels_digest(dataset.train)
    if state is not None:
        resume_checks(state, cfg, checkpoint, num_classes, identities)
    if du.is_main_process():
        # what this run actually uses; the global batch is split over the processes as recorded
        atomic_write_json(out / 'config.json', dict(cfg.to_dict(), world_size=du.get_world_size(),
                                                    batch_size_per_rank=train.per_rank_batch))
    models = create_models(cfg, num_classes)
    for model in models:
        model.to(device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
    nets: List[nn.Module] = [Embedder(m, with_logits=True) for m in models]
    if cfg.compile:
        nets = [torch.compile(n) for n in nets]
    if du.is_distributed():
        nets = [nn.parallel.DistributedDataParallel(n, device_ids=[device.index] if device.type == 'cuda' else None)
                for n in nets]
    optimizers = [build_optimizer(cfg.optim, m.parameters(), cfg.lr, cfg.weight_decay, cfg.momentum, cfg.amsgrad)
                  for m in models]
    schedulers = [build_scheduler(cfg.lr_scheduler, o, cfg.epochs, cfg.stepsize, cfg.gamma) for o in optimizers]
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == 'fp16' else None

    start_epoch = 0
    if state is not None:
        for m, sd in zip(models, state['models']):
            m.load_state_dict(sd)
        for o, sd in zip(optimizers, state['optimizers']):
            o.load_state_dict(sd)
        recorded = state.get('config') or {}
        start_epoch = state['epoch']
        if any(k in recorded and recorded[k] != getattr(cfg, k) for k in ('lr', 'epochs')):
            # a new learning rate or length: the schedule restarts from the new values at this epoch
            scale = cfg.lr / recorded['lr'] if recorded.get('lr') else None
            for o in optimizers:
                for g in o.param_groups:
                    g['lr'] = g['initial_lr'] = g.get('initial_lr', g['lr']) * scale if scale else cfg.lr
            schedulers = [build_scheduler(cfg.lr_scheduler, o, cfg.epochs, cfg.stepsize, cfg.gamma, start_epoch)
                          for o in optimizers]
        else:
            for s, sd in zip(schedulers, state['schedulers']):
                s.load_state_dict(sd)
        if scaler is not None and state.get('scaler'):
            scaler.load_state_dict(state['scaler'])
        set_rng_state(state['rng'])
        if du.is_main_process():
            print(f'Resumed from {checkpoint} at epoch {start_epoch}/{cfg.epochs} (lr {cfg.lr:g})')
    if state is not None and start_epoch == cfg.epochs:
        done = finished_results(out)
        if done is not None:
            if du.is_main_process():
                print(f'The run in {out} is already finished: results in {out}/results.json, model in {out}/final/')
            train.close()
            du.cleanup()
            return done
    run.start(start_epoch, reevaluate=start_epoch == cfg.epochs)  # a finished run gets here only to evaluate
    writer = None
    if cfg.tensorboard and du.is_main_process():
        from torch.utils.tensorboard import SummaryWriter  # optional dependency (checked above)
        writer = SummaryWriter(str(out / 'tensorboard'))
    eval_splits = None
    results: Dict[str, Any] = {}
    networks: List[Dict[str, Any]] = []  # DML: each network's own figures at the end
    for epoch in range(start_epoch, cfg.epochs):
        # Each epoch is seeded by (seed, epoch) and each sample's augmentation by (seed, epoch, position):
        # nothing depends on whether the run was interrupted or on the loader's worker processes, so a
        # resumed run ends where an uninterrupted one does.
        seed_everything(cfg.seed * 1000 + epoch)
        train.set_epoch(epoch)
        set_fixbase(models, frozen=epoch < cfg.fixbase_epochs)
        t0 = time.time()
        lr = optimizers[0].param_groups[0]['lr']  # the rate this epoch runs at (logged after it)
        stats = train_one_epoch(nets, optimizers, train.loader, cfg, epoch, device, scaler)
        for s in schedulers:
            s.step()
        stats.update(kind='train', epoch=epoch + 1, lr=lr,
                     seconds=time.time() - t0, images_per_second=train.images_per_epoch / (time.time() - t0))
        # checkpoint first, then the log line: a logged epoch always has its checkpoint
        run.end_epoch(stats, epoch=epoch + 1, models=[m.state_dict() for m in models],
                      optimizers=[o.state_dict() for o in optimizers], schedulers=[s.state_dict() for s in schedulers],
                      scaler=scaler.state_dict() if scaler is not None else None, rng=rng_state(),
                      config=cfg.to_dict(), num_classes=num_classes, identities=identities)
        if du.is_main_process():
            if writer:
                for k, v in stats.items():
                    if isinstance(v, float):
                        writer.add_scalar(f'train/{k}', v, epoch + 1)
            print(f"epoch {epoch + 1}/{cfg.epochs}  loss {stats['loss']:.4f}  acc {stats['acc']:.3f}  "
                  f"{stats['images_per_second']:.0f} img/s")
        du.barrier()
        last = epoch + 1 == cfg.epochs
        if last or (cfg.eval_freq and (epoch + 1) % cfg.eval_freq == 0):
            if eval_splits is None:
                eval_splits = load_eval_splits(cfg.targets, cfg.root, per_dataset=per_dataset)
            results = log_evaluation(models, eval_splits, cfg, device, epoch + 1, run, writer)
            if last and len(models) > 1:
                networks = [evaluate([m], eval_splits, cfg, device, epoch + 1) for m in models]
    if start_epoch == cfg.epochs:  # all epochs were done, but the final evaluation or model was not written
        if du.is_main_process():
            print(f'All {cfg.epochs} epochs were trained; running the final evaluation')
        eval_splits = load_eval_splits(cfg.targets, cfg.root, per_dataset=per_dataset)
        results = log_evaluation(models, eval_splits, cfg, device, cfg.epochs, run, writer)
        if len(models) > 1:
            networks = [evaluate([m], eval_splits, cfg, device, cfg.epochs) for m in models]
    train.close()
    if du.is_distributed():
        # DDP keeps replicas identical; verify it rather than assume it (a cheap end-of-run check).
        checksums = du.all_gather_cat(parameter_checksum(models[0]).to(device)[None]).cpu().tolist()
        if du.is_main_process():
            agree = all(c == checksums[0] for c in checksums)
            atomic_write_json(out / 'distributed.json', dict(
                world_size=du.get_world_size(), ranks_agree=agree, parameter_checksums=checksums))
            if not agree:
                print(f'warning: model replicas differ across ranks: {checksums}', file=sys.stderr)
    if du.is_main_process():
        plot_curves(run.records(), out / 'curves.png')
        folders = save_final_models(models, cfg, out, results, networks)
        for target, r in results.items():
            label = ' (ensemble: both networks\' features concatenated)' if networks else ''
            print(f"{target}: Rank-1 {100 * r['rank1']:.1f}%  mAP {100 * r['mAP']:.1f}%  "
                  f"(chance Rank-1 ~{100 * r['chance_rank1']:.1f}%){label}")
            for i, net in enumerate(networks):
                print(f"  {folders[i].name} alone: Rank-1 {100 * net[target]['rank1']:.1f}%  "
                      f"mAP {100 * net[target]['mAP']:.1f}%")
        print(f'Wrote {out}/curves.png, {out}/metrics.jsonl, {out}/results.json, '
              + ', '.join(f'{out}/{f.name}/' for f in folders))
    if writer:
        writer.close()
    du.cleanup()
    return results


def parameter_checksum(model: nn.Module) -> torch.Tensor:
    """The sum of every parameter in float64: a cheap fingerprint to check that DDP replicas agree."""
    with torch.no_grad():
        return torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()


DML_ENSEMBLE = ('Deep mutual learning trained two networks, saved as final/ and final_net2/. The ensemble '
                'figures come from both: embed each image with each network (the 512-d pre-logits embedding, '
                'not normalised), concatenate the two embeddings (final/ first) into one 1024-d feature, and '
                'compare features with the distance of the run.')


def save_final_model(model: nn.Module, cfg: TrainConfig, out_dir: Path,
                     results: Optional[Dict[str, Any]] = None, notes: Optional[str] = None) -> None:
    """The trained model in the Hub format of ``python -m osnet_zoo.weights convert``: model.safetensors,
    config.json (architecture, ``--model-args``, the input size, mean/std and distance it was trained and
    evaluated with) and a model card with ``results``, verified by a forward pass after the round trip."""
    # the card names the run's files, not the temporary state file it was converted from
    origin = (f'the osnet-zoo training run `{out_dir.parent}` (`python -m osnet_zoo.train`; its `config.json`, '
              '`metrics.jsonl` and `results.json` are in that folder)')
    save_model_folder(model, cfg.model, out_dir, (cfg.height, cfg.width), cfg.mean, cfg.std, model_args=cfg.model_args,
                      distance=cfg.distance, results=results, notes=notes, origin=origin)


def save_final_models(models: Sequence[nn.Module], cfg: TrainConfig, out: Path, results: Dict[str, Any],
                      networks: Sequence[Dict[str, Any]]) -> List[Path]:
    """Write results.json and every trained network: final/ (and final_net2/ with deep mutual learning,
    whose results.json then says how the reported ensemble is rebuilt and gives each network's own
    figures). Returns the folders; final/ is written last (its config.json marks a finished run)."""
    folders = [out / 'final'] + [out / f'final_net{i + 1}' for i in range(1, len(models))]
    extra: Dict[str, Any] = {}
    if len(models) > 1:
        extra['dml'] = dict(
            ensemble=DML_ENSEMBLE, folders=[f.name for f in folders],
            networks={f.name: net for f, net in zip(folders, networks)})
    summary = results_document(results, model=cfg.model, checkpoint=str(folders[0] / 'model.safetensors'),
                               distance=cfg.distance, input_size=(cfg.height, cfg.width), precision=cfg.precision,
                               **extra)
    atomic_write_json(out / 'results.json', summary, indent=2)
    for i in reversed(range(len(models))):
        own = networks[i] if networks else results
        note = None
        if len(models) > 1:
            note = (f'This is network {i + 1} of 2 of a deep-mutual-learning run; the results above are its own. '
                    + DML_ENSEMBLE)
        save_final_model(models[i], cfg, folders[i], results=own, notes=note)
    return folders


if __name__ == '__main__':
    sys.exit(cli.run(main))
