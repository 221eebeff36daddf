"""Peak memory of one search step of the NAS supernet (four separate blocks per position) on the CPU, against
plain OSNet measured in the same run.

One step = forward, label-smoothed CE, backward, SGD step (momentum), random images. Each (model, batch) runs
in a fresh subprocess, one after the other, interleaved over ``--rounds``; the figure is the growth of the
process's peak resident memory (``ru_maxrss``) over the step, on top of what the process held before it
(interpreter, torch, the model's weights and the batch): so it is the step's activations, gradients,
optimiser state and allocator workspace. Parameter counts are exact. Example::

    python benchmarks/bench_nas_memory.py --batch-size 64 --width 1.0 --json results/nas_memory.json

The GPU figure at another batch is an estimate from these (see ``estimate`` in the JSON and RESULTS.md):
the activation part scales linearly with the batch.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from osnet_zoo.files import atomic_write_json  # noqa: E402
from osnet_zoo.models.osnet import OSNet, osnet_arch  # noqa: E402
from osnet_zoo.nas.supernet import SuperNet  # noqa: E402

MODELS = ('osnet', 'supernet_all', 'supernet_sampled')


def _rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def one_step(model_name: str, batch: int, width: float, height: int, img_width: int, classes: int) -> dict:
    """Build the model and a batch, then measure the growth of peak RSS over one training step."""
    torch.manual_seed(0)
    if model_name == 'osnet':
        model = OSNet(num_classes=classes, **osnet_arch(width))
    else:
        model = SuperNet(width, num_classes=classes, mode=model_name.split('_')[1])
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, height, img_width)
    y = torch.randint(0, classes, (batch,))
    ce = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    before = _rss_peak_mib()
    ce(model(x), y).backward()
    opt.step()
    return dict(model=model_name, batch=batch, step_peak_mib=round(_rss_peak_mib() - before, 1),
                params=sum(p.numel() for p in model.parameters()), process_before_mib=round(before, 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--batch-size', type=int, nargs='+', default=[64])
    p.add_argument('--width', type=float, default=1.0, help='OSNet width multiplier')
    p.add_argument('--height', type=int, default=256)
    p.add_argument('--img-width', type=int, default=128)
    p.add_argument('--classes', type=int, default=4101, help='classifier size (MSMT17 combineall: 4,101)')
    p.add_argument('--models', nargs='+', choices=MODELS, default=list(MODELS))
    p.add_argument('--rounds', type=int, default=1)
    p.add_argument('--json', type=Path)
    p.add_argument('--child', nargs=2, help=argparse.SUPPRESS)  # internal: MODEL BATCH, one measurement
    args = p.parse_args()
    if args.child:
        row = one_step(args.child[0], int(args.child[1]), args.width, args.height, args.img_width, args.classes)
        print(json.dumps(row))
        return
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
    for r in range(args.rounds):
        for batch in args.batch_size:
            for name in args.models:  # interleaved: each round measures every model once
                cmd = [sys.executable, __file__, '--child', name, str(batch), '--width', str(args.width),
                       '--height', str(args.height), '--img-width', str(args.img_width), '--classes',
                       str(args.classes)]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode:
                    last = (proc.stderr.strip().splitlines() or ['no output'])[-1]
                    raise SystemExit(f'measuring {name} at batch {batch} failed: {last}')
                row = dict(json.loads(proc.stdout.strip().splitlines()[-1]), round=r)
                rows.append(row)
                print(f"round {r} batch {batch:4d} {name:17s} params {row['params']:>10,}  "
                      f"step peak {row['step_peak_mib']:9.1f} MiB", flush=True)
    summary = {}
    for batch in args.batch_size:
        peak = {n: max(x['step_peak_mib'] for x in rows if x['model'] == n and x['batch'] == batch)
                for n in args.models}
        if 'osnet' in peak:
            summary[str(batch)] = {n: dict(step_peak_mib=v, ratio_vs_osnet=round(v / peak['osnet'], 2))
                                   for n, v in peak.items()}
        else:
            summary[str(batch)] = {n: dict(step_peak_mib=v) for n, v in peak.items()}
    result = dict(width=args.width, size=[args.height, args.img_width], classes=args.classes, rows=rows,
                  summary=summary, torch=torch.__version__)
    print(json.dumps(summary, indent=1))
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == '__main__':
    main()
