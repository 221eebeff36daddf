"""`python -m osnet_zoo`: a summary of the OSNet family (params, mult-adds, a timed forward pass)."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence

import timm
import torch

import osnet_zoo
from osnet_zoo import cli
from osnet_zoo.models import OSNET_ARCHS, count_mult_adds, count_params
from osnet_zoo.models.builder import create_model

# runs of one model further apart than this (max - min over the median) make the timings untrustworthy
NOISY_SPREAD = 0.25


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m osnet_zoo``."""
    parser = cli.ArgumentParser(
        prog='python -m osnet_zoo',
        description='List the OSNet variants registered into timm with their parameters and mult-adds '
                    '(the papers\' Table 1), and time a forward pass of each on this machine (eager PyTorch, '
                    'after a warm-up; the median of --runs runs, taken in turns over the models).',
        epilog='examples:\n'
               '  python -m osnet_zoo                                  # 256x128, batch 8, on the CPU or GPU\n'
               '  python -m osnet_zoo --batch-size 1 --runs 9          # latency of one crop, more runs\n'
               '  python -m osnet_zoo --height 128 --width 64 --batch-size 2 --device cpu')
    parser.add_argument('--height', type=int, default=256, help='input height (default 256)')
    parser.add_argument('--width', type=int, default=128, help='input width (default 128)')
    cli.add_batch_size(parser, 8, help='batch for the timed forward pass')
    cli.add_device(parser)
    parser.add_argument('--runs', type=int, default=5,
                        help='timed runs per model after one warm-up; the median is shown (default 5)')
    return parser


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_models(models: Dict[str, torch.nn.Module], x: torch.Tensor, runs: int) -> Dict[str, List[float]]:
    """ms per image of each model's forward pass on ``x`` (on its device): one warm-up each, then ``runs``
    rounds taking the models in turns, so that a slow moment of the machine spreads over all of them instead
    of one."""
    times: Dict[str, List[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(x)  # warm-up: allocations, oneDNN primitive creation / cuDNN algorithm choice
        for _ in range(runs):
            for name, model in models.items():
                _synchronize(x.device)
                t0 = time.perf_counter()
                model(x)
                _synchronize(x.device)  # CUDA runs asynchronously: wait for the forward before reading the clock
                times[name].append((time.perf_counter() - t0) * 1000 / len(x))
    return times


def spread(runs: Sequence[float]) -> float:
    """(max - min) / median of one model's timed runs: 0 on a quiet machine."""
    return (max(runs) - min(runs)) / statistics.median(runs)


def noise_warning(times: Dict[str, List[float]], load_average: Optional[float], cpus: int) -> Optional[str]:
    """Why the timings cannot be trusted, or None: a model whose runs varied by more than ``NOISY_SPREAD``
    of their median, or a 1-minute load average above the CPU count (other work competed for the cores)."""
    name, worst = max(((n, spread(t)) for n, t in times.items() if len(t) > 1), key=lambda p: p[1],
                      default=(None, 0.0))
    reasons = []
    if name is not None and worst > NOISY_SPREAD:
        reasons.append(f'the runs of {name} varied by {worst:.0%}')
    if load_average is not None and load_average > cpus:
        reasons.append(f'load average {load_average:.1f} on {cpus} CPUs')
    if not reasons:
        return None
    return (f'the machine was too noisy to trust these timings ({"; ".join(reasons)}): compare the models on a '
            'quiet machine, or with more --runs')


def main(argv: list[str] | None = None) -> None:
    """Run ``python -m osnet_zoo``: print each registered OSNet's params, mult-adds, embedding size and ms/img."""
    args = get_args_parser().parse_args(argv)
    cli.check_at_least(runs=(args.runs, 1), batch_size=(args.batch_size, 1))
    device = torch.device(args.device)

    print(f'osnet-zoo {osnet_zoo.__version__} (timm {timm.__version__}, torch {torch.__version__})')
    print(f'input {args.height}x{args.width}, eval mode, embedding = fc output (no classifier), device {device}\n')
    x = torch.randn(args.batch_size, 3, args.height, args.width, device=device)
    models = {name: create_model(name).eval() for name in OSNET_ARCHS}
    stats = {name: (count_params(model), count_mult_adds(model, (args.height, args.width)))
             for name, model in models.items()}
    for model in models.values():
        model.to(device)
    times = time_models(models, x, args.runs)
    print(f'{"model":<18}{"params (M)":>12}{"mult-adds (M)":>15}{"embedding":>11}{"ms/img":>9}{"spread":>8}')
    for name, model in models.items():
        params, macs = stats[name]
        with torch.inference_mode():
            dim = model(x[:1]).shape[1]
        ms = statistics.median(times[name])
        print(f'{name:<18}{params / 1e6:>12.3f}{macs / 1e6:>15.1f}{str(dim) + "-d":>11}{ms:>9.1f}'
              f'{spread(times[name]):>8.0%}')
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else None
    cpus = os.cpu_count() or 1
    threads = f'{torch.get_num_threads()} thread(s)' if device.type == 'cpu' else str(device)
    print(f'\nms/img: eager PyTorch, batch {args.batch_size}, {threads}; median of {args.runs} run(s) per model '
          'after a warm-up, models timed in turns; spread = (max - min) / median'
          + (f'; load average {load:.1f} on {cpus} CPUs' if load is not None else ''))
    warning = noise_warning(times, load, cpus)
    if warning:
        print(f'warning: {warning}')


if __name__ == '__main__':
    sys.exit(cli.run(main))
