import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get('OSNET_ZOO_FIXTURES', REPO.parent / 'shared' / 'fixtures' / 'torchreid'))


@pytest.fixture(scope='session')
def torchreid_fixtures() -> Path:
    """The reference (torchreid) fixtures directory; CI always has it beside the clone."""
    if not (FIXTURES / 'keys.json').is_file():
        if os.environ.get('CI'):
            pytest.fail(f'reference fixtures missing: expected {FIXTURES}/keys.json (set OSNET_ZOO_FIXTURES)')
        pytest.skip(f'reference fixtures not found at {FIXTURES} (set OSNET_ZOO_FIXTURES)')
    return FIXTURES


def pytest_configure(config):
    # The suite runs in two pytest-xdist workers on the 2-core CI machine (README: `-n 2`). One torch thread
    # per process uses both cores without OpenMP threads spin-waiting on each other, which made tiny models
    # ~10x slower when several processes shared the cores. Subprocesses get OMP_NUM_THREADS=1 for the same reason.
    import torch
    torch.set_num_threads(1)
