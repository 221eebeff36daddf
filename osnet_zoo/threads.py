"""How many threads the package runs, and how they wait: sized to the CPU this process may actually use.

On a shared machine (a tracker's detector beside the extractor, a CI runner, training's own loader workers)
two things made us collapse far beyond the fair share of the CPU (issue 31, benchmarks/RESULTS.md):

* more runnable threads than CPUs: compute threads sized to the whole machine (not to the process's
  affinity mask or its container's CPU quota), plus loader workers, plus onnxruntime's own pool;
* waiting threads that spin: OpenMP's (torch's CPU pool) and onnxruntime's workers busy-wait for a sibling
  that the kernel has descheduled, burning the CPU that sibling needs.

This module decides, and imports nothing heavy (no torch) so that it can run before torch loads:

* :func:`cpu_budget`: the CPUs this process may use: its affinity mask and the cgroup CPU quota (v2
  ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), whichever is smaller.
* :func:`compute_threads`: the threads for the model: the caller's explicit count, else ``OMP_NUM_THREADS``
  / ``MKL_NUM_THREADS`` when set (the user's choice, as torch read it), else torch's current count capped to
  the budget less the loader workers (a lower ``torch.set_num_threads`` is kept), at least 1.
* :func:`prepare_cli_process`: for a ``python -m osnet_zoo...`` process only, before torch loads, OpenMP's
  wait policy ``OMP_WAIT_POLICY=PASSIVE`` (the one moment it can be set: the OpenMP runtime reads it when it
  loads), unless the user set a wait policy; a library import changes nothing.
* :func:`describe`: the one line the command-line mains print about it.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Dict, List, Mapping, MutableMapping, Optional, Sequence, Tuple, Union

__all__ = ['WAIT_POLICY_ENV', 'USER_THREAD_ENV', 'cpu_budget', 'cgroup_cpu_limit', 'user_threads', 'compute_threads',
           'cli_module', 'prepare_cli_process', 'cli_environment', 'describe']

# What the package sets for its own command-line processes (and only when the user set none of the wait knobs)
WAIT_POLICY_ENV = {'OMP_WAIT_POLICY': 'PASSIVE'}
# Any of these set by the user means the user chose how OpenMP waits: left alone
_USER_WAIT_ENV = ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME')
# The thread counts a user sets in the environment; torch reads them when it loads
USER_THREAD_ENV = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')
_CLI_PREFIX = 'osnet_zoo'
# What prepare_cli_process set in this process (name -> value), for the start line
_set_for_cli: Dict[str, str] = {}

PathLike = Union[str, os.PathLike]


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _cgroup_dirs(mount: Path, relative: str) -> List[Path]:
    """The process's cgroup folder under ``mount`` and its parents up to ``mount`` (each may hold a limit; in a
    container the recorded path may not exist under the mount, whose root is then the container's own group)."""
    folder = mount / relative.strip('/') if relative.strip('/') else mount
    dirs = [folder, *folder.parents] if folder != mount else [mount]
    return [d for d in dirs if (d == mount or mount in d.parents) and d.is_dir()]


def _limit_v2(text: Optional[str]) -> Optional[float]:
    """``cpu.max`` ('200000 100000', or 'max 100000') -> CPUs (2.0), None without a quota."""
    parts = (text or '').split()
    if len(parts) != 2 or parts[0] == 'max':
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _limit_v1(folder: Path) -> Optional[float]:
    """``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` -> CPUs, None without a quota (quota -1)."""
    try:
        quota, period = int(_read(folder / 'cpu.cfs_quota_us') or -1), int(_read(folder / 'cpu.cfs_period_us') or 0)
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpu_limit(root: PathLike = '/sys/fs/cgroup', proc_cgroup: PathLike = '/proc/self/cgroup') -> Optional[float]:
    """The CPU quota of this process's cgroup in CPUs (1.5 for ``cpu.max`` '150000 100000'), the smallest one
    on its path (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` under ``cpu`` /
    ``cpu,cpuacct``); None when there is none or it cannot be read. ``root`` and ``proc_cgroup`` are the
    cgroup mount and the process's membership file (``/proc/self/cgroup``)."""
    root = Path(root)
    limits: List[float] = []
    for line in (_read(Path(proc_cgroup)) or '').splitlines():
        hierarchy, _, rest = line.partition(':')
        controllers, _, relative = rest.partition(':')
        if hierarchy == '0' and controllers == '':  # cgroup v2 (unified)
            limits += [x for d in _cgroup_dirs(root, relative) if (x := _limit_v2(_read(d / 'cpu.max')))]
        elif 'cpu' in controllers.split(','):  # cgroup v1, the cpu controller's hierarchy
            for mount in (root / controllers, root / 'cpu,cpuacct', root / 'cpu'):
                if mount.is_dir():
                    limits += [x for d in _cgroup_dirs(mount, relative) if (x := _limit_v1(d))]
                    break
    return min(limits) if limits else None


def cpu_budget(root: PathLike = '/sys/fs/cgroup', proc_cgroup: PathLike = '/proc/self/cgroup',
               affinity: Optional[int] = None) -> int:
    """The CPUs this process may use: its affinity mask (``os.sched_getaffinity``; ``affinity`` overrides it)
    and its cgroup CPU quota (:func:`cgroup_cpu_limit`, rounded up: a quota of 1.5 CPUs keeps 2 threads
    busy), whichever is smaller; at least 1."""
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not on Linux
            affinity = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root, proc_cgroup)
    budget = affinity if limit is None else min(affinity, math.ceil(limit - 1e-9))
    return max(1, int(budget))


def user_threads(environ: Mapping[str, str] = os.environ) -> Optional[Tuple[str, int]]:
    """The thread count the user set in the environment and where: ``('OMP_NUM_THREADS', 4)`` (else
    ``MKL_NUM_THREADS``; a list such as '4,2' gives its first level); None when neither is a positive integer."""
    for name in USER_THREAD_ENV:
        first = environ.get(name, '').split(',')[0].strip()
        if first.isdigit() and int(first) > 0:
            return name, int(first)
    return None


def compute_threads(current: int, workers: int = 0, explicit: Optional[int] = None,
                    environ: Mapping[str, str] = os.environ, budget: Optional[int] = None) -> int:
    """Threads for the model's compute. ``explicit`` (``threads=`` / ``--threads``) wins; then the user's
    ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` (``current``, the count torch read from it, is kept); else
    ``current`` (``torch.get_num_threads()``: a lower ``torch.set_num_threads`` is the user's choice) capped
    to the CPU budget less the ``workers`` (loader processes or decoding threads running beside it); at
    least 1."""
    if explicit is not None:
        if explicit < 1:
            raise ValueError(f'threads must be >= 1, got {explicit}.')
        return int(explicit)
    if user_threads(environ) is not None:
        return max(1, int(current))
    budget = cpu_budget() if budget is None else budget
    return max(1, min(int(current), budget - max(0, int(workers))))


def cli_module(argv: Optional[Sequence[str]] = None) -> Optional[str]:
    """The ``osnet_zoo`` module this interpreter was started to run (``python [-u ...] -m osnet_zoo.train``:
    'osnet_zoo.train'), None for any other program (``import osnet_zoo`` in a user's script)."""
    argv = list(getattr(sys, 'orig_argv', []) if argv is None else argv)
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg.startswith('-m'):  # -m osnet_zoo.train, or -mosnet_zoo.train
            name = arg[2:] or (argv[i + 1] if i + 1 < len(argv) else '')
            return name if name == _CLI_PREFIX or name.startswith(_CLI_PREFIX + '.') else None
        if not arg.startswith('-') or arg.startswith('-c') or arg == '-':  # a script or a command: not -m
            return None
        i += 2 if arg in ('-X', '-W') else 1  # the interpreter options that take a value
    return None


def prepare_cli_process(environ: MutableMapping[str, str] = os.environ, argv: Optional[Sequence[str]] = None,
                        torch_loaded: Optional[bool] = None) -> Dict[str, str]:
    """For a ``python -m osnet_zoo...`` process, before torch loads: set :data:`WAIT_POLICY_ENV` (waiting
    OpenMP threads sleep instead of spinning; measured in benchmarks/RESULTS.md, issue 31), unless the user
    set ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` or ``KMP_BLOCKTIME``, or gave ``--spin``. Anything else (a
    library import, torch already loaded) changes nothing. Returns what it set (also kept for :func:`describe`)."""
    argv = list(getattr(sys, 'orig_argv', []) if argv is None else argv)
    if cli_module(argv) is None or '--spin' in argv:  # --spin: the command line asked for the old behaviour
        return {}
    if torch_loaded is None:
        torch_loaded = 'torch' in sys.modules
    if torch_loaded or any(name in environ for name in _USER_WAIT_ENV):
        return {}
    environ.update(WAIT_POLICY_ENV)
    if environ is os.environ:
        _set_for_cli.update(WAIT_POLICY_ENV)
    return dict(WAIT_POLICY_ENV)


def cli_environment() -> Dict[str, str]:
    """What :func:`prepare_cli_process` set in this process's environment (empty for a library import)."""
    return dict(_set_for_cli)


def describe(threads: int, workers: int = 0, worker_kind: str = 'loader workers', budget: Optional[int] = None,
             environ: Mapping[str, str] = os.environ, set_env: Optional[Mapping[str, str]] = None) -> str:
    """The start line's words for the CPU: 'CPU: 2 compute threads (budget 2 CPUs), 0 loader workers; set
    OMP_WAIT_POLICY=PASSIVE (waiting threads sleep)' — what the package decided, and where the user's own
    environment decided instead."""
    budget = cpu_budget() if budget is None else budget
    user = user_threads(environ)
    why = f'{user[0]}={user[1]}' if user is not None else f'budget {budget} CPU{"s" * (budget != 1)}'
    text = f'CPU: {threads} compute thread{"s" * (threads != 1)} ({why}), {workers} {worker_kind}'
    set_env = cli_environment() if set_env is None else set_env
    if set_env:
        text += '; set ' + ' '.join(f'{k}={v}' for k, v in set_env.items()) + ' (waiting threads sleep)'
    else:
        chosen = [f'{k}={environ[k]}' for k in _USER_WAIT_ENV if k in environ]
        text += f'; yours: {" ".join(chosen)}' if chosen else ''
    return text
