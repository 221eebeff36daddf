"""Train OSNet for person re-identification.

With no arguments it trains a small OSNet on the embedded synthetic re-ID set on the CPU, evaluates it,
and prints Rank-1 / mAP. The papers' recipes ship with the package::

    python -m osnet_zoo.train                                   # synthetic demo, CPU, a few minutes
    python -m osnet_zoo.train --recipe imagenet_finetune --root ~/datasets --sources market1501
    python -m osnet_zoo.train --recipe cross_domain_msmt17 --root ~/datasets --device cuda --amp bf16
    torchrun --nproc_per_node 8 -m osnet_zoo.train --recipe scratch --root ~/datasets --device cuda

Any recipe value can be overridden by its command-line option. Every epoch an atomic checkpoint is written
to ``OUTPUT/checkpoint.pth``; ``--resume`` continues from it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import timm
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import osnet_zoo  # noqa: F401  (registers the models)
from osnet_zoo import distributed as du
from osnet_zoo.data import normalize_batch
from osnet_zoo.losses import CrossEntropyLabelSmooth, HardTripletLoss, mutual_learning_loss
from osnet_zoo.train_utils import (
    append_jsonl, build_optimizer, build_scheduler, list_recipes, load_recipe, load_training_state, plot_curves,
    read_jsonl, rng_state, save_training_state, seed_everything, set_rng_state,
)

# Options a recipe may set, with the defaults used when neither the recipe nor the command line sets them.
DEFAULTS: Dict[str, Any] = dict(
    arch='osnet_x0_25', pretrained=None, sources=['synthetic'], targets=['synthetic'], combineall=False,
    height=256, width=128, epochs=10, batch_size=64, optim='adam', amsgrad=True, momentum=0.9, lr=0.0015,
    weight_decay=5e-4, lr_scheduler='cosine', stepsize=[], gamma=0.1, fixbase_epochs=0,
    transforms=['random_flip'], label_smooth=0.1, triplet_weight=0.0, margin=0.3, num_instances=4, dml=False,
    eval_freq=0, metric='euclidean', source=None,
)


class TrainForward(nn.Module):
    """Returns (embedding, logits) from one forward call, so that DDP sees every parameter used."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        emb = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return emb, self.model.get_classifier()(emb)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='python -m osnet_zoo.train',
        description=__doc__.split('\n\n')[0] + ' Shipped recipes: ' + ', '.join(list_recipes()) + '.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group('recipe and data')
    g.add_argument('--recipe', default='synthetic', help='shipped recipe name or a YAML file')
    g.add_argument('--root', default=None,
                   help='datasets root (folders as each dataset is released); the synthetic set is generated '
                        'under ROOT/synthetic (default: ~/.cache/osnet_zoo/data)')
    g.add_argument('--sources', nargs='+', help='training datasets (several: identities relabelled per source)')
    g.add_argument('--targets', nargs='+', help='evaluation datasets')
    g.add_argument('--combineall', action=argparse.BooleanOptionalAction, default=None,
                   help='train on all splits of the sources (MSMT17 protocol of the AIN paper)')
    g.add_argument('--height', type=int)
    g.add_argument('--width', type=int)
    g.add_argument('--transforms', nargs='+', help='random_flip random_crop random_patch color_jitter random_erase')
    g.add_argument('--workers', type=int, default=None,
                   help='data-loading processes (default: 0 on the CPU, where decoding small crops is cheap and '
                        'extra processes only compete with the model for cores; 8 on a GPU)')
    g = p.add_argument_group('model')
    g.add_argument('--arch', help='timm model name, e.g. osnet_x1_0, osnet_ain_x1_0')
    g.add_argument('--pretrained', help="pretrained tag to start from (e.g. 'imagenet'); 'none' for random")
    g = p.add_argument_group('optimisation')
    g.add_argument('--epochs', type=int)
    g.add_argument('--batch-size', type=int, help='per process')
    g.add_argument('--optim', choices=['sgd', 'adam', 'adamw'])
    g.add_argument('--lr', type=float)
    g.add_argument('--weight-decay', type=float)
    g.add_argument('--lr-scheduler', choices=['multistep', 'cosine', 'constant'])
    g.add_argument('--stepsize', type=int, nargs='+', help='multistep milestones (epochs)')
    g.add_argument('--gamma', type=float, help='multistep decay factor')
    g.add_argument('--fixbase-epochs', type=int, help='first epochs train only the classifier')
    g.add_argument('--label-smooth', type=float)
    g.add_argument('--triplet-weight', type=float, help='weight of the hard-mining triplet loss (0: off)')
    g.add_argument('--margin', type=float, help='triplet margin')
    g.add_argument('--num-instances', type=int, help='images per identity in a batch (identity sampler)')
    g.add_argument('--dml', action=argparse.BooleanOptionalAction, default=None,
                   help='deep mutual learning of two networks; test features concatenate both')
    g = p.add_argument_group('evaluation')
    g.add_argument('--eval-freq', type=int, help='evaluate every N epochs (0: only at the end)')
    g.add_argument('--metric', choices=['euclidean', 'cosine'])
    g = p.add_argument_group('engineering')
    g.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    g.add_argument('--amp', choices=['none', 'bf16', 'fp16'], default='none', help='mixed precision')
    g.add_argument('--channels-last', action='store_true')
    g.add_argument('--compile', action='store_true', help='torch.compile the model')
    g.add_argument('--output', default='runs/osnet', help='folder for checkpoints, logs, curves, final model')
    g.add_argument('--resume', nargs='?', const='auto', default=None,
                   help='resume from OUTPUT/checkpoint.pth (or the given checkpoint)')
    g.add_argument('--seed', type=int, default=1)
    g.add_argument('--deterministic', action='store_true', help='deterministic algorithms (exact resume)')
    g.add_argument('--tensorboard', action='store_true', help='also log to TensorBoard (needs tensorboard)')
    g.add_argument('--max-steps-per-epoch', type=int, default=0, help='cap iterations per epoch (smoke tests)')
    return p


def resolve_config(args: argparse.Namespace) -> Dict[str, Any]:
    """Recipe values, overridden by every option given on the command line."""
    cfg = dict(DEFAULTS)
    cfg.update(load_recipe(args.recipe))
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f'Recipe {args.recipe!r} has unknown options {sorted(unknown)}; known: {sorted(DEFAULTS)}.')
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    if cfg['pretrained'] in ('none', ''):
        cfg['pretrained'] = None
    return cfg


def create_models(cfg: Dict[str, Any], num_classes: int) -> List[nn.Module]:
    name = cfg['arch'] + (f".{cfg['pretrained']}" if cfg['pretrained'] else '')
    return [timm.create_model(name, pretrained=bool(cfg['pretrained']), num_classes=num_classes)
            for _ in range(2 if cfg['dml'] else 1)]


def set_fixbase(models: Sequence[nn.Module], frozen: bool) -> None:
    """While ``frozen``, only the classifier trains; the backbone is frozen and kept in eval mode."""
    for model in models:
        for name, p in model.named_parameters():
            p.requires_grad_(not frozen or name.startswith('classifier.'))
        model.train()
        if frozen:
            for name, m in model.named_children():
                if name != 'classifier':
                    m.eval()


def train_one_epoch(
        nets: Sequence[nn.Module], optimizers: Sequence[torch.optim.Optimizer], loader: DataLoader,
        cfg: Dict[str, Any], args: argparse.Namespace, epoch: int, device: torch.device,
        scaler: Optional[torch.amp.GradScaler],
) -> Dict[str, float]:
    ce = CrossEntropyLabelSmooth(cfg['label_smooth'])
    triplet = HardTripletLoss(cfg['margin']) if cfg['triplet_weight'] > 0 else None
    amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(args.amp)
    sums = dict(loss=0.0, loss_ce=0.0, correct=0.0, n=0.0)
    if triplet:
        sums['loss_triplet'] = 0.0
    if len(nets) == 2:
        sums['loss_dml'] = 0.0
    steps = len(loader) if not args.max_steps_per_epoch else min(len(loader), args.max_steps_per_epoch)
    bar = tqdm(loader, total=steps, desc=f'epoch {epoch + 1}/{cfg["epochs"]}', disable=not du.is_main_process(),
               leave=False, dynamic_ncols=True)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    for step, (images, pids) in enumerate(bar):
        if step >= steps:
            break
        images = normalize_batch(images.to(device, non_blocking=True), memory_format=memory_format)
        pids = pids.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = [net(images) for net in nets]
        losses = []
        for i, (emb, logits) in enumerate(outputs):
            loss_ce = ce(logits, pids)
            loss = loss_ce
            sums['loss_ce'] += loss_ce.item() / len(nets)
            if triplet is not None:
                loss_tri = triplet(emb, pids)
                loss = loss + cfg['triplet_weight'] * loss_tri
                sums['loss_triplet'] += loss_tri.item() / len(nets)
            if len(nets) == 2:
                loss_dml = mutual_learning_loss(logits, outputs[1 - i][1])
                loss = loss + loss_dml
                sums['loss_dml'] += loss_dml.item() / 2
            losses.append(loss)
        total = sum(losses)
        if not torch.isfinite(total):
            raise FloatingPointError(
                f'Loss became {total.item()} at epoch {epoch + 1}, step {step}: stopping. The last good checkpoint '
                f'({args.output}/checkpoint.pth) is intact; lower the learning rate or disable fp16 and --resume.')
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


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = get_args_parser().parse_args(argv)
    if args.workers is None:
        args.workers = 0 if args.device == 'cpu' else min(8, os.cpu_count() or 1)
    cfg = resolve_config(args)
    if args.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ValueError('--tensorboard needs the tensorboard package: pip install "osnet-zoo[tensorboard]"')
    device = du.init_distributed(args.device)
    out = Path(args.output)
    if du.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        (out / 'config.json').write_text(json.dumps(dict(cfg, **{k: v for k, v in vars(args).items()
                                                                  if k not in cfg}), indent=2))
    if args.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    seed_everything(args.seed)
    ckpt_path = out / 'checkpoint.pth'
    # read the checkpoint before anything slow, so a wrong --resume fails at once
    state = load_training_state(ckpt_path if args.resume == 'auto' else Path(args.resume)) if args.resume else None

    from osnet_zoo.train_data import build_eval_splits, build_train_loader
    train = build_train_loader(cfg, args, seed=args.seed)
    num_classes = train.num_classes
    models = create_models(cfg, num_classes)
    for model in models:
        model.to(device)
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
    nets: List[nn.Module] = [TrainForward(m) for m in models]
    if args.compile:
        nets = [torch.compile(n) for n in nets]
    if du.is_distributed():
        nets = [nn.parallel.DistributedDataParallel(n, device_ids=[device.index] if device.type == 'cuda' else None)
                for n in nets]
    optimizers = [build_optimizer(cfg['optim'], m.parameters(), cfg['lr'], cfg['weight_decay'], cfg['momentum'],
                                  cfg['amsgrad']) for m in models]
    schedulers = [build_scheduler(cfg['lr_scheduler'], o, cfg['epochs'], cfg['stepsize'], cfg['gamma'])
                  for o in optimizers]
    scaler = torch.amp.GradScaler(device.type) if args.amp == 'fp16' else None

    start_epoch = 0
    if state is not None:
        for m, sd in zip(models, state['models']):
            m.load_state_dict(sd)
        for o, sd in zip(optimizers, state['optimizers']):
            o.load_state_dict(sd)
        for s, sd in zip(schedulers, state['schedulers']):
            s.load_state_dict(sd)
        if scaler is not None and state.get('scaler'):
            scaler.load_state_dict(state['scaler'])
        set_rng_state(state['rng'])
        start_epoch = state['epoch']
        if du.is_main_process():
            print(f'Resumed from {args.resume if args.resume != "auto" else ckpt_path} '
                  f'at epoch {start_epoch}/{cfg["epochs"]}')

    log_path = out / 'metrics.jsonl'
    if du.is_main_process():
        # a fresh run starts a fresh log; a resumed one keeps the lines of the epochs it resumes after
        kept = [r for r in read_jsonl(log_path) if r['epoch'] <= start_epoch]
        log_path.write_text(''.join(json.dumps(r) + '\n' for r in kept))
    writer = None
    if args.tensorboard and du.is_main_process():
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / 'tensorboard'))
    eval_splits = None
    results: Dict[str, Any] = {}
    for epoch in range(start_epoch, cfg['epochs']):
        # Each epoch is seeded by (seed, epoch) and each sample's augmentation by (seed, epoch, position):
        # nothing depends on whether the run was interrupted or on the loader's worker processes, so a
        # resumed run ends where an uninterrupted one does.
        seed_everything(args.seed * 1000 + epoch)
        train.set_epoch(epoch)
        set_fixbase(models, frozen=epoch < cfg['fixbase_epochs'])
        t0 = time.time()
        stats = train_one_epoch(nets, optimizers, train.loader, cfg, args, epoch, device, scaler)
        for s in schedulers:
            s.step()
        stats.update(kind='train', epoch=epoch + 1, lr=optimizers[0].param_groups[0]['lr'],
                     seconds=time.time() - t0, images_per_second=train.images_per_epoch / (time.time() - t0))
        if du.is_main_process():
            # checkpoint first, then the log line: a logged epoch always has its checkpoint
            save_training_state(
                ckpt_path, epoch=epoch + 1, models=[m.state_dict() for m in models],
                optimizers=[o.state_dict() for o in optimizers], schedulers=[s.state_dict() for s in schedulers],
                scaler=scaler.state_dict() if scaler is not None else None, rng=rng_state(), config=cfg,
                num_classes=num_classes)
            append_jsonl(log_path, stats)
            if writer:
                for k, v in stats.items():
                    if isinstance(v, float):
                        writer.add_scalar(f'train/{k}', v, epoch + 1)
            print(f"epoch {epoch + 1}/{cfg['epochs']}  loss {stats['loss']:.4f}  acc {stats['acc']:.3f}  "
                  f"{stats['images_per_second']:.0f} img/s")
        du.barrier()
        last = epoch + 1 == cfg['epochs']
        if last or (cfg['eval_freq'] and (epoch + 1) % cfg['eval_freq'] == 0):
            if eval_splits is None:
                eval_splits = build_eval_splits(cfg, args)
            results = evaluate_targets(models, eval_splits, cfg, args, device, epoch + 1)
            if du.is_main_process():
                for target, r in results.items():
                    append_jsonl(log_path, dict(kind='eval', epoch=epoch + 1, target=target, rank1=r['rank1'],
                                                mAP=r['mAP'], mINP=r['mINP']))
                    if writer:
                        for k in ('rank1', 'mAP', 'mINP'):
                            writer.add_scalar(f'eval/{target}/{k}', r[k], epoch + 1)
    train.close()
    if du.is_distributed():
        # DDP keeps replicas identical; verify it rather than assume it (a cheap end-of-run check).
        checksums = du.all_gather_cat(parameter_checksum(models[0]).to(device)[None]).cpu().tolist()
        if du.is_main_process():
            agree = all(c == checksums[0] for c in checksums)
            (out / 'distributed.json').write_text(json.dumps(dict(
                world_size=du.get_world_size(), ranks_agree=agree, parameter_checksums=checksums), indent=2))
            if not agree:
                print(f'warning: model replicas differ across ranks: {checksums}', file=sys.stderr)
    if du.is_main_process():
        plot_curves(read_jsonl(log_path), out / 'curves.png')
        (out / 'results.json').write_text(json.dumps(results, indent=2))
        save_final_model(models[0], cfg, out / 'final')
        for target, r in results.items():
            print(f"{target}: Rank-1 {100 * r['rank1']:.1f}%  mAP {100 * r['mAP']:.1f}%  "
                  f"(chance Rank-1 ~{100 * r['chance_rank1']:.1f}%)")
        print(f'Wrote {out}/curves.png, {out}/metrics.jsonl, {out}/results.json, {out}/final/')
    if writer:
        writer.close()
    du.cleanup()
    return results


def parameter_checksum(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()


@torch.no_grad()
def evaluate_targets(models: Sequence[nn.Module], splits: Dict[str, Any], cfg: Dict[str, Any],
                     args: argparse.Namespace, device: torch.device, epoch: int) -> Dict[str, Any]:
    """Features of every model (concatenated for DML), then CMC / mAP per target on the main process."""
    from osnet_zoo.metrics import evaluate_features
    from osnet_zoo.train_data import extract
    for m in models:
        m.eval()
    results = {}
    for target, (query, gallery) in splits.items():
        qf, q_pids, q_cams = extract(models, query, cfg, args, device)
        gf, g_pids, g_cams = extract(models, gallery, cfg, args, device)
        if du.is_main_process():
            r = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=cfg['metric'], device=device)
            cmc = r['cmc']
            n_ids = len(set(g_pids.tolist()))
            results[target] = dict(rank1=float(cmc[0]), rank5=float(cmc[4]), rank10=float(cmc[9]),
                                   mAP=float(r['mAP']), mINP=float(r['mINP']), epoch=epoch,
                                   num_query=len(q_pids), num_gallery=len(g_pids), chance_rank1=1.0 / max(n_ids, 1))
    for m in models:
        m.train()
    return results


def save_final_model(model: nn.Module, cfg: Dict[str, Any], out_dir: Path) -> None:
    """The trained model in the Hub format of ``python -m osnet_zoo.weights convert``: model.safetensors,
    config.json and a model card, verified by a forward pass after the round trip."""
    from safetensors.torch import save_file
    from osnet_zoo.weights.convert import convert_checkpoint
    raw = out_dir.parent / 'final_state.safetensors'
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(raw))
    convert_checkpoint(raw, cfg['arch'], 'trained', out_dir, check_size=(cfg['height'], cfg['width']))
    raw.unlink()


if __name__ == '__main__':
    try:
        main()
    except FloatingPointError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        # bad data roots, recipes, checkpoints: the message names the thing; no traceback needed
        print(f'error: {e.args[0] if isinstance(e, KeyError) and e.args else e}', file=sys.stderr)
        sys.exit(1)
