import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest

# The tests never read or write the user's osnet-zoo weights cache (~/.cache/osnet_zoo): a fresh one per session
# (for module-scoped fixtures and subprocesses), and a fresh one per test (below).
os.environ.setdefault('OSNET_ZOO_CACHE', tempfile.mkdtemp(prefix='osnet_zoo_cache_'))
# ... except its onnx/ folder: the default backend on the CPU exports each model to ONNX once and keeps the checked
# file there; one folder per session (per xdist worker), linked into every test's cache, so each model is exported
# once per session and the subprocesses a test starts find it too.
SESSION_ONNX_CACHE = tempfile.mkdtemp(prefix='osnet_zoo_onnx_cache_')

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


@pytest.fixture(autouse=True)
def _empty_weights_cache(tmp_path_factory, monkeypatch):
    """Each test starts with an empty osnet-zoo weights cache (OSNET_ZOO_CACHE), so none sees another's downloads."""
    cache = tmp_path_factory.mktemp('osnet_zoo_cache')
    (cache / 'onnx').symlink_to(SESSION_ONNX_CACHE, target_is_directory=True)
    monkeypatch.setenv('OSNET_ZOO_CACHE', str(cache))


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
    # ~10x slower when several processes shared the cores. Subprocesses get OMP_NUM_THREADS=1 for the same reason.
    import torch
    torch.set_num_threads(1)


def pytest_unconfigure(config):
    shutil.rmtree(SESSION_ONNX_CACHE, ignore_errors=True)


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
