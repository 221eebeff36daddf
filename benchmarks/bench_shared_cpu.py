"""Benchmark: our speed on a shared CPU (issue 31) — each case idle and beside 1 and 2 busy processes.

The busy processes are ``python3 -c 'while True: pass'`` children this script starts and kills itself.
Everything is measured in interleaved rounds (round r: for each load, start the busy processes, time every
case, kill them), medians per case and load, and each load's ratio to the same case idle.

Cases:

* ``from_boxes``: ``FeatureExtractor.from_boxes`` on a synthetic 1080p BGR frame with 16 boxes, per model
  (random weights with trained-like BN statistics; each case in its own process, built once):
    default       ``FeatureExtractor(model, channel_order='bgr')``: what users get (onnxruntime on the CPU)
    default_old   the pre-issue-31 default, rebuilt: ``threads=torch.get_num_threads(), spin=True`` (the
                  preprocessing on torch's own OpenMP team) with onnxruntime's session made as it was then
                  (intra-op spinning off, nothing set for the inter-op pool)
    optimize      ``optimize=True``; ``optimize_old``: the same with ``spin=True``
    eager         ``backend='torch'`` (the plain model); ``eager_old``: the same with ``spin=True``
    eager_passive ``backend='torch'`` in a process started with ``OMP_WAIT_POLICY=PASSIVE``, what the
                  command-line mains set for themselves (a library cannot: OpenMP reads it when torch loads)
  ``x fastest`` compares each idle figure with the fastest case of the same model. ``optimize_old`` and
  ``eager_old`` (seconds a call beside busy processes) run for the first model only.
* ``extract`` / ``evaluate``: the commands at their defaults on the synthetic set (the model trained by the
  main job below), wall clock of the whole command; ``*_old``: with ``--spin --threads N`` (N: torch's own
  count, the old thread count and wait policy; idle and beside one busy process).
* ``train``: the README's main job (``python -m osnet_zoo.train``) with ``--epochs E``, idle and beside 2
  busy processes, wall clock and its Rank-1 / mAP; and idle with ``--spin`` (the old wait policy).

Examples::

    python benchmarks/bench_shared_cpu.py                  # <= 10 min on a quiet 2-core machine
    python benchmarks/bench_shared_cpu.py --quick          # ~2 min: x0_25, fewer cases, 1 epoch
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
BUSY = [sys.executable, '-c', 'while True: pass']
CASES = ('default', 'default_old', 'optimize', 'optimize_old', 'eager', 'eager_old', 'eager_passive')
QUICK_CASES = ('default', 'default_old', 'eager', 'eager_old')
SLOW_OLD_CASES = ('optimize_old', 'eager_old')
# one case, in its own process: build once, then answer "seconds" lines with the median ms of the calls made
CHILD = r'''
import json, os, statistics, sys, time, warnings
import numpy as np, torch, timm
sys.path.insert(0, {repo!r}); sys.path.insert(0, {bench!r})
warnings.filterwarnings('ignore')
import osnet_zoo
from osnet_zoo import FeatureExtractor
from bench_inference import _randomise_statistics
name, case = {name!r}, {case!r}
torch.manual_seed(0)
model = timm.create_model(name, num_classes=0).eval()
_randomise_statistics(model)
old = case.endswith('_old')
kw = dict(default={{}}, optimize=dict(optimize=True), eager=dict(backend='torch'),
          eager_passive=dict(backend='torch'))[case.replace('_old', '')]
if old:
    kw.update(threads=torch.get_num_threads(), spin=True)
fe = FeatureExtractor(model, device='cpu', channel_order='bgr', **kw)
if old and fe.plan.backend == 'onnxruntime':  # the session as it was made before issue 31
    import onnxruntime as ort
    o = ort.SessionOptions(); o.intra_op_num_threads = torch.get_num_threads(); o.inter_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.add_session_config_entry('session.intra_op.allow_spinning', '0')
    fe.model.session = ort.InferenceSession(str(fe.model.path), o, providers=['CPUExecutionProvider'])
rng = np.random.default_rng(0)
frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
h = rng.integers(96, 400, 16); x = rng.integers(0, 1700, 16); y = rng.integers(0, 680, 16)
boxes = np.stack([x, y, x + 0.4 * h, y + h], 1).astype(np.float32)
for _ in range(2):
    fe.from_boxes(frame, boxes)
print(json.dumps(dict(ready=True, threads=fe.threads, backend=fe.plan.describe())), flush=True)
for line in sys.stdin:
    seconds = float(line)
    times, end = [], time.perf_counter() + seconds
    while not times or time.perf_counter() < end:
        t = time.perf_counter(); fe.from_boxes(frame, boxes); times.append(time.perf_counter() - t)
    print(json.dumps(dict(ms=1000 * statistics.median(times), calls=len(times))), flush=True)
'''


class Busy:
    """``count`` busy processes while the block runs."""

    def __init__(self, count: int):
        self.count, self.procs = count, []

    def __enter__(self) -> 'Busy':
        self.procs = [subprocess.Popen(BUSY) for _ in range(self.count)]
        time.sleep(0.3 if self.count else 0)
        return self

    def __exit__(self, *exc: Any) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def child_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME')}
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    env.update(extra)
    return env


def start_case(name: str, case: str) -> subprocess.Popen:
    code = CHILD.format(repo=str(REPO), bench=str(REPO / 'benchmarks'), name=name, case=case)
    env = child_env(**({'OMP_WAIT_POLICY': 'PASSIVE'} if case == 'eager_passive' else {}))
    proc = subprocess.Popen([sys.executable, '-c', code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env, cwd=tempfile.gettempdir())
    return proc


def ask(proc: subprocess.Popen, seconds: float) -> Dict[str, Any]:
    proc.stdin.write(f'{seconds}\n')
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def run_command(argv: Sequence[str], cwd: Path) -> Dict[str, Any]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, '-m', *argv], cwd=cwd, env=child_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f'{" ".join(argv)} failed: {done.stderr.strip()[-400:]}')
    return dict(seconds=wall, stdout=done.stdout)


def summarise(samples: Dict[str, Dict[int, List[float]]]) -> Dict[str, Dict[str, float]]:
    """case -> {idle, busy1, busy2 medians and their ratios to idle}."""
    out = {}
    for case, by_load in samples.items():
        row = {f'load{n}': statistics.median(v) for n, v in sorted(by_load.items()) if v}
        for n in by_load:
            if n and row.get('load0') and f'load{n}' in row:
                row[f'ratio{n}'] = row[f'load{n}'] / row['load0']
        out[case] = row
    return out


def bench_from_boxes(models: Sequence[str], cases: Sequence[str], loads: Sequence[int], rounds: int,
                     seconds: float) -> Dict[str, Any]:
    # the old torch paths take seconds a call beside busy processes: timed for the first model only
    pairs = [(m, c) for m in models for c in cases if m == models[0] or c not in SLOW_OLD_CASES]
    procs = {(m, c): start_case(m, c) for m, c in pairs}
    info = {f'{m} {c}': json.loads(p.stdout.readline()) for (m, c), p in procs.items()}
    samples: Dict[str, Dict[int, List[float]]] = {f'{m} {c}': {n: [] for n in loads} for m, c in pairs}
    try:
        for r in range(rounds):
            for n in loads:
                with Busy(n):
                    for (m, c), p in procs.items():
                        ms = ask(p, seconds)['ms']
                        samples[f'{m} {c}'][n].append(ms)
                        print(f'round {r + 1} busy {n} {m} {c}: {ms:.1f} ms', flush=True)
    finally:
        for p in procs.values():
            p.kill()
    table = summarise(samples)
    for m in models:
        mine = [c for mm, c in pairs if mm == m]
        fastest = min(table[f'{m} {c}']['load0'] for c in mine)
        for c in mine:
            table[f'{m} {c}']['x_fastest_idle'] = table[f'{m} {c}']['load0'] / fastest
            table[f'{m} {c}'].update(info[f'{m} {c}'])
    return table


def bench_commands(work: Path, checkpoint: Path, loads: Sequence[int], rounds: int, old: bool) -> Dict[str, Any]:
    root = work / 'data'
    commands = {
        'extract': ['osnet_zoo.extract', '--checkpoint', str(checkpoint), '--dataset', 'synthetic', '--root', str(root),
                    '--output', str(work / 'features.safetensors'), '--overwrite'],
        'evaluate': ['osnet_zoo.evaluate', '--checkpoint', str(checkpoint), '--dataset', 'synthetic', '--root',
                     str(root), '--output', str(work / 'evaluate')],
    }
    if old:
        import torch  # the thread count torch picks in a fresh process of this machine
        for name in list(commands):
            commands[f'{name}_old'] = commands[name] + ['--spin', '--threads', str(torch.get_num_threads())]
    run_command(commands['extract'], work)  # warm: the ONNX export of the model is cached, the set generated
    samples: Dict[str, Dict[int, List[float]]] = {c: {n: [] for n in loads} for c in commands}
    firsts: Dict[str, str] = {}
    for r in range(rounds):
        for n in loads:
            with Busy(n):
                for name, argv in commands.items():
                    if name.endswith('_old') and n > 1:  # the old settings beside one busy process suffice
                        continue
                    res = run_command(argv, work)
                    samples[name][n].append(res['seconds'])
                    firsts.setdefault(name, next((ln for ln in res['stdout'].splitlines() if 'CPU:' in ln), ''))
                    print(f'round {r + 1} busy {n} {name}: {res["seconds"]:.1f} s', flush=True)
    table = summarise(samples)
    for name in table:
        table[name]['start_line'] = firsts.get(name, '')
    return table


def bench_train(work: Path, epochs: int, loads: Sequence[int], old: bool) -> Dict[str, Any]:
    """The main job beside each of ``loads`` busy processes; with ``old``, also idle with ``--spin`` (OpenMP's
    default wait policy, as before issue 31: what the new default costs on an idle machine)."""
    subprocess.run([sys.executable, '-c', 'import sys; from osnet_zoo.data import load_datasets; '
                    'load_datasets("synthetic", sys.argv[1])', str(work / 'data')], env=child_env(), check=True)
    table = {}
    runs = [(f'load{n}', n, []) for n in loads] + ([('load0_spin', 0, ['--spin'])] if old else [])
    for name, n, extra in runs:
        out = work / f'train_{name}'
        with Busy(n):
            res = run_command(['osnet_zoo.train', '--epochs', str(epochs), '--root', str(work / 'data'),
                               '--output', str(out), *extra], work)
        results = json.loads((out / 'results.json').read_text())
        line = next((ln for ln in res['stdout'].splitlines() if 'Rank-1' in ln), '')
        table[name] = dict(seconds=res['seconds'], result_line=line, metrics=_metrics(results))
        print(f'train {name}: {res["seconds"]:.1f} s  {line}', flush=True)
    for row in table.values():
        row['ratio'] = row['seconds'] / table['load0']['seconds']
    return table


def _metrics(results: Dict[str, Any]) -> Any:
    """The Rank-1 / mAP figures of a results.json, whatever its nesting."""
    if isinstance(results, dict):
        return {k: _metrics(v) for k, v in results.items() if k in ('rank1', 'mAP') or isinstance(v, dict)}
    return results


def print_table(title: str, table: Dict[str, Dict[str, Any]], unit: str) -> None:
    print(f'\n{title}')
    for case, row in table.items():
        cells = [f"idle {row.get('load0', float('nan')):.1f} {unit}"]
        for n in (1, 2):
            if f'load{n}' in row:
                cells.append(f"busy{n} {row[f'load{n}']:.1f} {unit} ({row.get(f'ratio{n}', float('nan')):.2f}x)")
        if 'x_fastest_idle' in row:
            cells.append(f"idle x fastest {row['x_fastest_idle']:.2f}")
        print(f'  {case:28s} ' + '  '.join(cells))


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='~2 min: osnet_x0_25, fewer cases, 1 round, 1 epoch')
    p.add_argument('--models', help='from_boxes models (default: osnet_x0_25,osnet_x1_0; --quick: osnet_x0_25)')
    p.add_argument('--cases', help=f'from_boxes cases (default: {",".join(CASES)}; --quick: {",".join(QUICK_CASES)})')
    p.add_argument('--rounds', type=int, help='interleaved rounds of from_boxes (default: 2; --quick: 1)')
    p.add_argument('--seconds', type=float, help='timing window of one from_boxes measurement (default: 1.5 s)')
    p.add_argument('--epochs', type=int, help='epochs of the main job (default: 3; --quick: 1)')
    p.add_argument('--skip', nargs='*', default=[], choices=['from_boxes', 'commands', 'train'])
    p.add_argument('--loads', default='0,1,2', help='busy processes beside from_boxes and the commands (default 0,1,2)')
    p.add_argument('--output', default=None, help='JSON file of the figures')
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still kills its busy processes
    defaults = dict(models='osnet_x0_25', cases=','.join(QUICK_CASES), rounds=1, seconds=1.0, epochs=1) if args.quick \
        else dict(models='osnet_x0_25,osnet_x1_0', cases=','.join(CASES), rounds=2, seconds=1.5, epochs=3)
    for name, value in defaults.items():  # what the command line gave wins
        setattr(args, name, value if getattr(args, name) is None else getattr(args, name))
    loads = [int(n) for n in args.loads.split(',')]
    record: Dict[str, Any] = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), machine=platform.node(),
        processor=platform.processor() or platform.machine(), cpus=os.cpu_count(), loadavg_before=os.getloadavg(),
        argv=sys.argv[1:])
    print(f"load average before: {' '.join(f'{x:.2f}' for x in record['loadavg_before'])}", flush=True)
    with tempfile.TemporaryDirectory(prefix='bench_shared_cpu_') as tmp:
        work = Path(tmp)
        if 'train' not in args.skip or 'commands' not in args.skip:
            record['train'] = bench_train(work, args.epochs, [0, 2], old=not args.quick)
        if 'commands' not in args.skip:
            record['commands'] = bench_commands(work, work / 'train_load0', [n for n in loads if n < 2] if args.quick else loads,
                                                1, old=not args.quick)
        if 'from_boxes' not in args.skip:
            record['from_boxes'] = bench_from_boxes(args.models.split(','), args.cases.split(','), loads,
                                                    args.rounds, args.seconds)
    record['loadavg_after'] = os.getloadavg()
    if 'from_boxes' in record:
        print_table('FeatureExtractor.from_boxes, 16 boxes, 1080p (ms, median)', record['from_boxes'], 'ms')
    if 'commands' in record:
        print_table('extract / evaluate at their defaults, synthetic set (s, whole command)', record['commands'], 's')
    if 'train' in record:
        print('\nmain job (python -m osnet_zoo.train --epochs %d):' % args.epochs)
        for load, row in record['train'].items():
            print(f"  {load}: {row['seconds']:.1f} s ({row.get('ratio', 1):.2f}x)  {row['result_line']}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in record['loadavg_after'])}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(record, indent=1))


if __name__ == '__main__':
    main()
