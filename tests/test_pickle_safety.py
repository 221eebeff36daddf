"""No pickle runs code, and no archive is expanded into memory: osnet_zoo.weights.io against real malicious files.

Each file is a real ``torch.save`` archive whose pickle reduces to a dangerous callable (``__reduce__``); the
callable would create a marker file, so "refused" also means "the code never ran".
"""
from __future__ import annotations

import builtins
import os
import re
import resource
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from osnet_zoo.weights import CheckpointError, read_checkpoint
from osnet_zoo.weights import io as weights_io


def test_allowlist_is_exactly_the_numpy_scalar_and_dtypes():
    """Pinned: anything added to the allowlist (eval, a builtin, a torch function) fails here."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    dtype_classes = {getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith('DType')}
    allow = weights_io._numpy_allowlist()
    plain = [a for a in allow if not isinstance(a, tuple)]
    aliases = [a for a in allow if isinstance(a, tuple)]
    assert sorted(aliases, key=str) == sorted([(scalar, 'numpy.core.multiarray.scalar'),
                                               (scalar, 'numpy._core.multiarray.scalar')], key=str)
    assert plain[:2] == [scalar, np.dtype]
    names = [n for n in dir(np.dtypes) if n.endswith('DType')]  # some classes have two names (aliases)
    assert set(plain[2:]) == dtype_classes and len(plain) == 2 + len(names)
    assert all(isinstance(c, type) and issubclass(c, np.dtype) for c in plain[2:])


class _Import:
    """Reduces to ``builtins.__import__('os')``: the object a nested payload calls a method of."""
    def __reduce__(self):
        return builtins.__import__, ('os',)


def _payloads(marker: Path) -> dict:
    code = f'open({str(marker)!r}, "w").close()'
    return {
        'eval': (eval, (code,)),
        'exec': (exec, (code,)),
        'getattr': (getattr, (_Import(), 'system')),
        '__import__': (builtins.__import__, ('os',)),
        'os.system': (os.system, (f'touch {marker}',)),
        'subprocess.Popen': (subprocess.Popen, (['touch', str(marker)],)),
        'torch.load': (torch.load, (str(marker),)),
    }


BLOCKED = {'eval': 'builtins.eval', 'exec': 'builtins.exec', 'getattr': 'builtins.getattr',
           '__import__': 'builtins.__import__', 'os.system': 'posix.system', 'subprocess.Popen': 'subprocess.Popen',
           'torch.load': 'torch.serialization.load'}


@pytest.mark.parametrize('name', list(BLOCKED))
def test_malicious_pickle_is_refused_naming_the_global_and_never_runs(name, tmp_path):
    marker = tmp_path / 'pwned'
    reduce = _payloads(marker)[name]

    class Payload:
        def __reduce__(self):
            return reduce

    path = tmp_path / f'{name}.pth'
    torch.save({'state_dict': {'w': torch.zeros(2)}, 'payload': Payload()}, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert not marker.exists(), 'the pickled code ran'
    assert str(path) in message and 'refused for safety' in message
    assert BLOCKED[name] in message, message
    assert 'weights_only=False' not in message and 'weights_only` set to `False' not in message
    assert info.value.__cause__ is None and info.value.__context__ is not None  # torch's advice not chained


def _zip_bomb(path: Path, expanded: int) -> None:
    """A real torch archive (a 2-element tensor) whose storage entry is replaced by ``expanded`` bytes of
    zeros, deflated: a file of a few hundred kB declaring ``expanded`` bytes."""
    plain = path.with_suffix('.plain')
    torch.save({'w': torch.zeros(2)}, plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if '/data/' in info.filename and not info.filename.endswith('.pkl'):
                with dst.open(info.filename, 'w', force_zip64=True) as f:
                    chunk = bytes(16 << 20)
                    for _ in range(expanded // len(chunk)):
                        f.write(chunk)
            else:
                dst.writestr(info.filename, src.read(info.filename))
    plain.unlink()


def test_compressed_archive_expanding_past_the_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / 'bomb.pth'
    expanded = weights_io.MIN_SIZE_LIMIT + (16 << 20)
    _zip_bomb(path, expanded)  # 80 MiB of zeros in a file of well under 1 MiB
    size = path.stat().st_size
    assert size < 1 << 20
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024  # Linux: kB
    message = str(info.value)
    declared = int(re.search(r'expand to ([\d,]+) bytes', message).group(1).replace(',', ''))
    assert str(path) in message and f'{size:,}' in message and declared >= expanded, message
    assert grown_mib < 64, f'peak memory grew by {grown_mib:.0f} MiB while refusing'


def test_ordinary_checkpoint_is_under_the_limit(tmp_path):
    """A plain torch.save archive (stored, uncompressed) declares about its own size: it loads."""
    path = tmp_path / 'plain.pth'
    torch.save({'w': torch.arange(1000.0), 'epoch': 3}, path)
    weights_io.check_declared_size(path)
    assert torch.equal(read_checkpoint(path)['w'], torch.arange(1000.0))
