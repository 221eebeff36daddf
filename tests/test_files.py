"""osnet_zoo/files.py, the one atomic writer: umask permissions and a full disk, with real files and processes."""
from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest
import torch

from osnet_zoo.data import make_synthetic_reid
from osnet_zoo.files import atomic_save_safetensors, atomic_torch_save, atomic_write_json
from osnet_zoo.train.__main__ import main as train_main
from conftest import run_python


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test, restored afterwards."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def test_writers_give_umask_022_permissions(tmp_path, umask):
    umask(0o022)
    atomic_torch_save({'w': torch.zeros(2)}, tmp_path / 'checkpoint.pth')
    atomic_save_safetensors({'w': torch.zeros(2)}, tmp_path / 'final' / 'model.safetensors')
    atomic_write_json(tmp_path / 'config.json', {'lr': 1})
    modes = {p.name: oct(_mode(p)) for p in tmp_path.rglob('*') if p.is_file()}
    assert modes == {'checkpoint.pth': '0o644', 'model.safetensors': '0o644', 'config.json': '0o644'}


def test_training_run_files_follow_the_umask(tmp_path, umask):
    """A real (tiny) training run under umask 027: every file it writes is 0640, none the private 0600."""
    make_synthetic_reid(tmp_path / 'data' / 'Market-1501-v15.09.15', num_train_ids=4, num_test_ids=3, height=32,
                        width=16, num_distractors=1, num_junk=1, seed=2)
    out = tmp_path / 'run'
    umask(0o027)
    train_main(['--root', str(tmp_path / 'data'), '--output', str(out), '--sources', 'market1501', '--targets',
                'market1501', '--height', '32', '--width', '16', '--batch-size', '8', '--epochs', '1',
                '--workers', '0', '--device', 'cpu', '--max-steps-per-epoch', '1'])
    modes = {str(p.relative_to(out)): oct(_mode(p)) for p in out.rglob('*') if p.is_file()}
    for name in ('checkpoint.pth', 'config.json', 'results.json', 'final/model.safetensors', 'final/config.json'):
        assert modes.pop(name) == '0o640', (name, modes)
    assert set(modes.values()) <= {'0o640'}, modes


FULL_DISK = textwrap.dedent('''
    import os, resource, signal, sys, torch
    from osnet_zoo.engine.checkpoint import save_training_state
    folder = sys.argv[1]
    save_training_state(folder + '/checkpoint.pth', epoch=1, w=torch.arange(10.0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
    from osnet_zoo.files import FileWriteError, atomic_save_safetensors, atomic_write_json
    for write in (lambda: atomic_save_safetensors({'w': torch.zeros(1 << 20)}, folder + '/final/model.safetensors'),
                  lambda: atomic_write_json(folder + '/results.json', {'x': 'y' * (2 << 20)})):
        try:
            write()
        except FileWriteError as e:  # safetensors and JSON writes name their file too
            print(e)
    try:
        save_training_state(folder + '/checkpoint.pth', epoch=2, w=torch.zeros(1 << 20))
    except OSError as e:
        print(e)
        sys.exit(3)
''')


def test_full_disk_names_the_file_and_leaves_nothing_torn(tmp_path):
    proc = run_python('-c', FULL_DISK, tmp_path, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    safetensors_line, json_line, message = proc.stdout.strip().splitlines()
    assert str(tmp_path / 'final' / 'model.safetensors') in safetensors_line and 'EFBIG' in safetensors_line
    assert str(tmp_path / 'results.json') in json_line and 'file size limit' in json_line
    assert str(tmp_path / 'checkpoint.pth') in message and 'file size limit' in message, message
    assert 'inline_container' not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ['checkpoint.pth', 'final'], 'a temporary file was left'
    assert not list((tmp_path / 'final').iterdir()), 'a torn or temporary file was left in final/'
    state = torch.load(tmp_path / 'checkpoint.pth', weights_only=True)
    assert state['epoch'] == 1 and torch.equal(state['w'], torch.arange(10.0)), 'the previous checkpoint changed'
