"""Training as one function that reads top to bottom: :func:`train` (what ``python -m osnet_zoo.train`` and
the small-benchmark protocol run).

Set-up -> data -> model -> loss -> optimiser -> scheduler -> DDP -> :func:`~osnet_zoo.train.common.restore`
(all of resume) -> the epoch loop over :func:`osnet_zoo.engine.train_one_epoch` -> one final evaluation ->
the final model. A run on an attribute or category dataset goes to :mod:`osnet_zoo.train.labelled`.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn

from osnet_zoo import distributed as du
from osnet_zoo.data import TrainLoader, build_train_loader, load_datasets
from osnet_zoo.data.datasets import (DATASETS, LABELLED_DATASETS, PROTOCOLS, dataset_reference, is_known_dataset,
                                    unknown_dataset_message)
from osnet_zoo.engine import (MutualLearning, ReIDLoss, RunFolder, build_optimizer, build_scheduler, start_epoch,
                              train_one_epoch, training_labels_digest)
from osnet_zoo.engine.checkpoint import claim_run_folder
from osnet_zoo.engine.recipes import RESUME_CHANGEABLE, RESUME_CURRENT, TrainConfig
from osnet_zoo.evaluation import evaluate_models, load_eval_splits, results_document
from osnet_zoo.files import atomic_write_json
from osnet_zoo.models.embedding import Embedder

from .common import (create_model, epoch_line, networks, read_resume, resolve_init_checkpoint, restore, set_fixbase,
                     set_up, tensorboard_writer)
from .curves import plot_curves
from .final import save_model_folder
from .labelled import is_labelled_run, train_labelled

__all__ = ['train', 'validate_config', 'claim_output', 'dataset_options', 'evaluate', 'save_final_models']


def train(cfg: TrainConfig, given: Sequence[str] = ()) -> Dict[str, Any]:
    """Train as ``cfg`` says (``given``: the options the command line named, which ``--resume`` may change);
    returns the final evaluation results per target dataset."""
    cfg, state = read_resume(cfg, given)
    # a listing or folder is recorded by its absolute path: a resume or evaluate from elsewhere reads the same
    cfg = dataclasses.replace(cfg, sources=[dataset_reference(n) for n in cfg.sources],
                              targets=[dataset_reference(n) for n in cfg.targets])
    validate_config(cfg)
    cfg, state = claim_output(cfg, state, given)
    if is_labelled_run(cfg):  # attributes / categories (PA-100K, CIFAR, ImageNet)
        return train_labelled(cfg, state)
    device = set_up(cfg)
    out = Path(cfg.output)
    run = RunFolder(out, writer=du.is_main_process())

    per_dataset = dataset_options(cfg)
    dataset = load_datasets(cfg.sources, cfg.root, cfg.combineall, per_dataset=per_dataset)
    if du.is_main_process():
        print(dataset.summary())
    loader = build_train_loader(dataset.train, cfg.height, cfg.width, cfg.batch_size, cfg.transforms,
                                num_instances=cfg.num_instances if cfg.triplet_weight > 0 else 0, seed=cfg.seed,
                                workers=cfg.workers, pin_memory=device.type == 'cuda')
    num_classes, identities = dataset.num_train_pids, training_labels_digest(dataset.train)

    model = create_model(cfg, num_classes).to(device)  # with --dml, both networks as one module
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net = with_embeddings(model)
    if cfg.compile:
        net = torch.compile(net)
    if du.is_distributed():
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == 'cuda' else None)
    criterion = ReIDLoss(cfg.label_smooth, cfg.triplet_weight, cfg.margin, cfg.entropy_weight)
    optimizer = build_optimizer(cfg.optim, model.parameters(), cfg.lr, cfg.weight_decay, cfg.momentum, cfg.amsgrad)
    scheduler = build_scheduler(cfg.lr_scheduler, optimizer, cfg.epochs, cfg.stepsize, cfg.gamma)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == 'fp16' else None

    first = 0
    if state is not None:
        first, scheduler = restore(state, cfg, model, optimizer, scheduler, scaler, num_classes, identities)
    if du.is_main_process():  # what this run uses (after resume's checks: a refused resume changes no file)
        atomic_write_json(out / 'config.json', dict(cfg.to_dict(), world_size=du.get_world_size(),
                                                    batch_size_per_rank=loader.per_rank_batch))
    done = finished_results(out) if first == cfg.epochs else None
    if done is not None:
        if du.is_main_process():
            print(f'The run in {out} is already finished: results in {out}/results.json, model in {out}/final/')
        loader.close()
        du.cleanup()
        return done
    run.start(first, reevaluate=first == cfg.epochs)  # a finished run gets here only to evaluate
    writer = tensorboard_writer(cfg, out)
    eval_splits = None
    for epoch in range(first, cfg.epochs):
        stats = train_epoch(net, model, criterion, optimizer, scheduler, scaler, loader, cfg, epoch, device)
        # checkpoint first, then the log line: a logged epoch always has its checkpoint
        run.end_epoch(stats, epoch=epoch + 1, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                      config=cfg.to_dict(), num_classes=num_classes, identities=identities)
        epoch_line(stats, cfg, writer)
        du.barrier()
        if cfg.eval_freq and (epoch + 1) % cfg.eval_freq == 0 and epoch + 1 < cfg.epochs:
            eval_splits = eval_splits or load_eval_splits(cfg.targets, cfg.root, per_dataset=per_dataset)
            log_evaluation(networks(model), eval_splits, cfg, device, epoch + 1, run, writer)

    if first == cfg.epochs and du.is_main_process():
        print(f'All {cfg.epochs} epochs were trained; running the final evaluation')
    eval_splits = eval_splits or load_eval_splits(cfg.targets, cfg.root, per_dataset=per_dataset)
    results = log_evaluation(networks(model), eval_splits, cfg, device, cfg.epochs, run, writer)
    # deep mutual learning: each network's own figures beside the ensemble's
    each = [evaluate([m], eval_splits, cfg, device, cfg.epochs) for m in networks(model)] if cfg.dml else []
    loader.close()
    check_replicas(model, device, out)
    if du.is_main_process():
        plot_curves(run.records(), out / 'curves.png')
        report(results, each, save_final_models(networks(model), cfg, out, results, each), out)
    if writer:
        writer.close()
    du.cleanup()
    return results


def validate_config(cfg: TrainConfig) -> None:
    """Refuse a bad setting before any work (not after all epochs), naming the option: what needs more than the
    setting's own declaration (types and bounds, checked when the config is built): known datasets and models,
    the output folder, optional packages, the starting weights."""
    for option, names in (('--sources', cfg.sources), ('--targets', cfg.targets)):
        unknown = [n for n in names if not is_known_dataset(n) and n not in LABELLED_DATASETS]
        if unknown:
            raise ValueError(unknown_dataset_message(unknown[0], option, LABELLED_DATASETS))
    arch = cfg.model.split('.')[0]
    if not timm.is_model(arch):
        raise ValueError(f'--model {cfg.model!r} is not a timm model; choose an OSNet '
                         f'({", ".join(timm.list_models("osnet*"))}) or any timm backbone (resnet50, mobilenetv2_100).')
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f'--output {out} is a file, not a folder: pass a folder for the run.')
    if cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401  (optional dependency: fail before any work, not at the first log)
        except ImportError:
            raise ValueError('--tensorboard needs the tensorboard package: pip install "osnet-zoo[tensorboard]"')
    if cfg.init_checkpoint:
        resolve_init_checkpoint(cfg.init_checkpoint)  # likewise a wrong --init-checkpoint


# options that do not make a run another run: where it runs, and the recipe's name (its values are compared)
_NOT_SETTINGS = (*RESUME_CURRENT, 'overwrite', 'recipe', 'citation')


def claim_output(cfg: TrainConfig, state: Optional[Dict[str, Any]],
                 given: Sequence[str]) -> Tuple[TrainConfig, Optional[Dict[str, Any]]]:
    """Take ``--output`` for this run without writing over another job's
    (:func:`osnet_zoo.engine.checkpoint.claim_run_folder`): a folder holding a run of other settings, a search,
    or checkpoints without ``--resume`` is refused, unless ``--overwrite`` moves it aside. A finished run of
    these very settings is taken as resumed (its results are returned, nothing is trained again)."""
    out = Path(cfg.output)
    settings = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_SETTINGS}
    how = claim_run_folder(out, 'train', settings, resume=bool(cfg.resume), overwrite=cfg.overwrite,
                           finished=finished_results(out) is not None, resumable=RESUME_CHANGEABLE,
                           writer=os.environ.get('RANK', '0') == '0')  # before torchrun's process group exists
    if how == 'continue' and not cfg.resume:
        return read_resume(dataclasses.replace(cfg, resume='auto'), given)
    return cfg, state


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


def with_embeddings(model: nn.Module) -> nn.Module:
    """What the loop runs: each network's ``(embedding, logits)`` from one forward call."""
    if isinstance(model, MutualLearning):
        return MutualLearning([Embedder(m, with_logits=True) for m in model.nets])
    return Embedder(model, with_logits=True)


def train_epoch(net: nn.Module, model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: Any, scaler: Optional[torch.amp.GradScaler], loader: TrainLoader, cfg: TrainConfig,
                epoch: int, device: torch.device) -> Dict[str, Any]:
    """Epoch ``epoch`` (seeded, the backbone frozen during ``--fixbase-epochs``) and its log record."""
    start_epoch(cfg.seed, epoch, loader)
    set_fixbase(networks(model), frozen=epoch < cfg.fixbase_epochs)
    t0 = time.time()
    lr = optimizer.param_groups[0]['lr']  # the rate this epoch runs at (logged after it)
    stats = train_one_epoch(net, criterion, optimizer, loader.loader, device, epoch, cfg.epochs, scaler=scaler,
                            precision=cfg.precision, channels_last=cfg.channels_last, mean=cfg.mean, std=cfg.std,
                            max_steps=cfg.max_steps_per_epoch, checkpoint=Path(cfg.output) / 'checkpoint.pth')
    scheduler.step()
    return dict(stats, kind='train', epoch=epoch + 1, lr=lr, seconds=time.time() - t0,
                images_per_second=loader.images_per_epoch / (time.time() - t0))


def evaluate(models: Sequence[nn.Module], splits, cfg: TrainConfig, device: torch.device,
             epoch: int) -> Dict[str, Any]:
    """Rank-1 / mAP of the models' (concatenated) features on every target, at the training size."""
    return evaluate_models(models, splits, device, distance=cfg.distance, size=(cfg.height, cfg.width),
                           mean=cfg.mean, std=cfg.std, batch_size=max(cfg.batch_size, 64), workers=cfg.workers,
                           precision=cfg.precision, epoch=epoch)


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


def finished_results(out: Path) -> Optional[Dict[str, Any]]:
    """The results (per target) of a run whose final evaluation and model were written, else None."""
    try:
        results = json.loads((out / 'results.json').read_text())
    except (OSError, ValueError):
        return None
    if isinstance(results, dict) and 'targets' in results:
        results = results['targets']
    return results if results and (out / 'final' / 'model.safetensors').is_file() else None


def parameter_checksum(model: nn.Module) -> torch.Tensor:
    """The sum of every parameter in float64: a cheap fingerprint to check that DDP replicas agree."""
    with torch.no_grad():
        return torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()


def check_replicas(model: nn.Module, device: torch.device, out: Path) -> None:
    """Under DDP, verify that the replicas are identical (rather than assume it): ``out/distributed.json``."""
    if not du.is_distributed():
        return
    checksums = du.all_gather_cat(parameter_checksum(networks(model)[0]).to(device)[None]).cpu().tolist()
    if du.is_main_process():
        agree = all(c == checksums[0] for c in checksums)
        atomic_write_json(out / 'distributed.json', dict(
            world_size=du.get_world_size(), ranks_agree=agree, parameter_checksums=checksums))
        if not agree:
            print(f'warning: model replicas differ across ranks: {checksums}', file=sys.stderr)


def report(results: Dict[str, Any], each: Sequence[Dict[str, Any]], folders: Sequence[Path], out: Path) -> None:
    """The final figures (with deep mutual learning, the ensemble's and each network's) and what was written."""
    for target, r in results.items():
        label = ' (ensemble: both networks\' features concatenated)' if each else ''
        print(f"{target}: Rank-1 {100 * r['rank1']:.1f}%  mAP {100 * r['mAP']:.1f}%  "
              f"(chance Rank-1 ~{100 * r['chance_rank1']:.1f}%){label}")
        for folder, net in zip(folders, each):
            print(f"  {folder.name} alone: Rank-1 {100 * net[target]['rank1']:.1f}%  "
                  f"mAP {100 * net[target]['mAP']:.1f}%")
    print(f'Wrote {out}/curves.png, {out}/metrics.jsonl, {out}/results.json, '
          + ', '.join(f'{out}/{f.name}/' for f in folders))


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
                      each: Sequence[Dict[str, Any]]) -> List[Path]:
    """Write results.json and every trained network: final/ (and final_net2/ with deep mutual learning,
    whose results.json then says how the reported ensemble is rebuilt and gives each network's own
    figures). Returns the folders; final/ is written last (its config.json marks a finished run)."""
    folders = [out / 'final'] + [out / f'final_net{i + 1}' for i in range(1, len(models))]
    extra: Dict[str, Any] = {}
    if len(models) > 1:
        extra['dml'] = dict(
            ensemble=DML_ENSEMBLE, folders=[f.name for f in folders],
            networks={f.name: net for f, net in zip(folders, each)})
    summary = results_document(results, model=cfg.model, checkpoint=str(folders[0] / 'model.safetensors'),
                               distance=cfg.distance, input_size=(cfg.height, cfg.width), precision=cfg.precision,
                               **extra)
    atomic_write_json(out / 'results.json', summary, indent=2)
    for i in reversed(range(len(models))):
        own = each[i] if each else results
        note = None
        if len(models) > 1:
            note = (f'This is network {i + 1} of 2 of a deep-mutual-learning run; the results above are its own. '
                    + DML_ENSEMBLE)
        save_final_model(models[i], cfg, folders[i], results=own, notes=note)
    return folders
