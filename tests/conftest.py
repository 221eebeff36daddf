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


@pytest.fixture(scope='module')
def one_thread():
    """Torch on one thread for a module of tiny-model tests: when other jobs share the cores, two OpenMP
    threads spin-wait on each other and run ~10x slower than one (use with pytest.mark.usefixtures)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
