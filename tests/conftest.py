import ctypes
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Dict, Optional, Union

import pytest

# The tests never read or write the user's osnet-zoo weights cache (~/.cache/osnet_zoo): a fresh one per session
# (for module-scoped fixtures and subprocesses), and a fresh one per test (below).
os.environ.setdefault('OSNET_ZOO_CACHE', tempfile.mkdtemp(prefix='osnet_zoo_cache_'))
# ... except its onnx/ folder: the default backend on the CPU exports each model to ONNX once and keeps the checked
# file there; one folder per session (per xdist worker), linked into every test's cache, so each model is exported
# once per session and the subprocesses a test starts find it too.
SESSION_ONNX_CACHE = tempfile.mkdtemp(prefix='osnet_zoo_onnx_cache_')
# the same for the OpenVINO IRs and for the CPU runtime 'auto' measured for a model (onnxruntime or OpenVINO)
SESSION_SHARED_CACHES = {'onnx': SESSION_ONNX_CACHE, 'openvino': tempfile.mkdtemp(prefix='osnet_zoo_openvino_cache_'),
                         'backend': tempfile.mkdtemp(prefix='osnet_zoo_backend_cache_')}

# The checkout under test. Test modules take it, and the helpers that start Python processes, from here:
# `from conftest import REPO, run_module` (pytest puts tests/ on sys.path, as for task_layouts.py).
REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get('OSNET_ZOO_FIXTURES', REPO.parent / 'shared' / 'fixtures' / 'torchreid'))
# Who knowingly runs without the reference fixtures sets this; otherwise their absence fails the tests that
# need them, so a local run cannot pass while testing much less than CI does.
SKIP_FIXTURES_VAR = 'OSNET_ZOO_SKIP_FIXTURE_TESTS'
HOW_TO_GET_FIXTURES = (
    f'The reference (torchreid) fixtures are expected at {FIXTURES}: check out the project\'s shared/ folder '
    'beside this clone (../shared/fixtures/torchreid, see its README) or point OSNET_ZOO_FIXTURES at that '
    f'folder. To run without them (their tests are then skipped), set {SKIP_FIXTURES_VAR}=1.')


def reference_fixture(name: str) -> Path:
    """``FIXTURES / name``; when it is missing the test fails saying how to get it (or skips, with the opt-out)."""
    path = FIXTURES / name
    if not path.is_file():
        if os.environ.get(SKIP_FIXTURES_VAR) == '1':
            pytest.skip(f'reference fixture {path} missing ({SKIP_FIXTURES_VAR}=1)')
        pytest.fail(f'reference fixture missing: {path}. {HOW_TO_GET_FIXTURES}', pytrace=False)
    return path


# ----------------------------------------------------------------------------------------------- subprocesses

def child_env(**extra: Optional[Union[str, os.PathLike]]) -> Dict[str, str]:
    """The environment of a Python process a test starts: this one's (as the test left it: its OSNET_ZOO_CACHE),
    with this checkout first on PYTHONPATH (the child imports the osnet_zoo under test, not an installed one),
    one thread per OpenMP / MKL / OpenBLAS pool (see ``pytest_configure``) and unbuffered output; then ``extra``,
    where a value of None removes the variable."""
    env = dict(os.environ)
    paths = [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p and p != str(REPO)]
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), *paths])
    env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    for name, value in extra.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    return env


def start_python(*args, env: Optional[Dict[str, str]] = None, python: Union[str, os.PathLike] = sys.executable,
                 **popen_kwargs) -> subprocess.Popen:
    """Start ``python *args`` (``env`` defaults to ``child_env()``) and return at once: for the tests that kill a
    process mid-way or run two side by side. ``popen_kwargs`` go to ``subprocess.Popen`` (cwd, stdout, ...)."""
    return subprocess.Popen([str(python), *map(str, args)], env=child_env() if env is None else env,
                            **popen_kwargs)


def run_python(*args, cwd: Optional[Union[str, os.PathLike]] = None, env: Optional[Dict[str, str]] = None,
               timeout: float = 600, check: bool = False,
               python: Union[str, os.PathLike] = sys.executable) -> subprocess.CompletedProcess:
    """Run ``python *args`` (a script, ``-c`` code, ``-m`` module) to its end with ``child_env()`` (or ``env``),
    its output captured as text. ``check=True`` fails the test, with the output's tail, on a non-zero exit.
    ``python`` is another interpreter (the boxmot environment's)."""
    command = [str(python), *map(str, args)]
    proc = subprocess.run(command, cwd=cwd, env=child_env() if env is None else env, capture_output=True,
                          text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, (f'{shlex.join(command)[:500]} exited {proc.returncode}:\n'
                                      f'{proc.stdout[-2000:]}{proc.stderr[-3000:]}')
    return proc


def run_module(module: str, *args, **kwargs) -> subprocess.CompletedProcess:
    """``python -m module *args`` through ``run_python`` (same keywords), as a user runs a CLI:
    ``run_module('osnet_zoo.train', '--output', out, cwd=tmp_path)``; torchrun is
    ``run_module('torch.distributed.run', '--nproc_per_node', '2', '-m', 'osnet_zoo.train', ...)``."""
    return run_python('-m', module, *args, **kwargs)


@pytest.fixture(autouse=True)
def _empty_weights_cache(tmp_path_factory, monkeypatch):
    """Each test starts with an empty osnet-zoo weights cache (OSNET_ZOO_CACHE), so none sees another's downloads."""
    cache = tmp_path_factory.mktemp('osnet_zoo_cache')
    for name, folder in SESSION_SHARED_CACHES.items():
        (cache / name).symlink_to(folder, target_is_directory=True)
    monkeypatch.setenv('OSNET_ZOO_CACHE', str(cache))


class _SignalStack(ctypes.Structure):  # glibc's stack_t
    _fields_ = [('ss_sp', ctypes.c_void_p), ('ss_flags', ctypes.c_int), ('ss_size', ctypes.c_size_t)]


def signal_stack_fault() -> Optional[str]:
    """What is wrong with this thread's alternate signal stack (Linux): None when it is off or lies in mapped
    memory, else a description. A Python signal handler runs on that stack; on freed memory the next signal kills
    the process with SIGSEGV and no traceback (OpenVINO's CPU plugin can leave it so: openvino_runtime.py)."""
    if not sys.platform.startswith('linux'):
        return None
    stack = _SignalStack()
    if ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack)) != 0 or stack.ss_flags & 2 or not stack.ss_sp:
        return None  # SS_DISABLE: handlers run on the thread's own stack
    with open('/proc/self/maps') as maps:
        for line in maps:
            start, end = (int(x, 16) for x in line.split(None, 1)[0].split('-'))
            if start <= stack.ss_sp < end:
                return None
    return f'the alternate signal stack at {stack.ss_sp:#x} ({stack.ss_size} bytes) is not mapped memory'


@pytest.fixture(autouse=True)
def _signal_stack_left_usable():
    """A test that leaves the alternate signal stack on freed memory fails here, by name, instead of the next signal
    killing the worker silently in some later test; the stack is switched off so the rest of the run goes on."""
    yield
    fault = signal_stack_fault()
    if fault:
        ctypes.CDLL(None).sigaltstack(ctypes.byref(_SignalStack(None, 2, 0)), None)
        pytest.fail(f'after this test {fault}: the next Python signal handler would crash the process', pytrace=False)


@pytest.fixture(scope='session')
def torchreid_fixtures() -> Path:
    """The reference (torchreid) fixtures directory (see ``reference_fixture``)."""
    return reference_fixture('keys.json').parent


@pytest.fixture(scope='session')
def reference_file():
    """``reference_fixture`` for tests that need one fixture file: ``reference_file('name')``."""
    return reference_fixture


def pytest_configure(config):
    # The suite runs in two pytest-xdist workers on the 2-core CI machine (README: `-n 2`). One torch thread
    # per process uses both cores without OpenMP threads spin-waiting on each other, which made tiny models
    # ~10x slower when several processes shared the cores. Subprocesses get OMP_NUM_THREADS=1 for the same reason
    # (child_env).
    import torch
    torch.set_num_threads(1)


def pytest_unconfigure(config):
    for folder in SESSION_SHARED_CACHES.values():
        shutil.rmtree(folder, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    """Say what was skipped and why even without ``-rs``: a missing optional package skips whole files."""
    reasons = Counter()
    for report in terminalreporter.stats.get('skipped', []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        reasons[reason.removeprefix('Skipped: ')] += 1
    if reasons:
        terminalreporter.section('skipped (what was not tested)')
        for reason, count in reasons.most_common():
            terminalreporter.line(f'{count:4d} skipped: {reason}')
