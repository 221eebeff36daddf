"""A diverging training ends with one line (the epoch and step, what went non-finite) and keeps the checkpoint
of its last good epoch, which resumes (issue 37)."""
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from osnet_zoo.data import make_synthetic_reid
from osnet_zoo.engine import RunFolder, ReIDLoss, train_one_epoch
from osnet_zoo.train.__main__ import main as train_main

from conftest import run_module

TINY = ['--sources', 'market1501', '--targets', 'market1501', '--model', 'osnet_x0_25', '--height', '32',
        '--width', '16', '--batch-size', '8', '--workers', '0', '--device', 'cpu', '--max-steps-per-epoch', '2',
        '--lr-scheduler', 'constant', '--lr', '0.001']
DIVERGED = re.compile(r'^error: Training diverged at epoch 2(, step \d+| \(at its end\)): the '
                      r'(loss became (nan|inf|-inf)|gradients became NaN/inf|weights became NaN/inf'
                      r"|model's outputs in eval mode)")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_diverging_run_says_where_in_one_line_and_its_last_good_checkpoint_resumes(tmp_path):
    make_synthetic_reid(tmp_path / 'data' / 'Market-1501-v15.09.15', num_train_ids=8, num_test_ids=6, height=32,
                        width=16, num_distractors=2, num_junk=1, seed=5)
    out = tmp_path / 'run'
    base = [*TINY, '--root', str(tmp_path / 'data'), '--output', str(out)]
    train_main([*base, '--epochs', '1'])  # a good first epoch: its checkpoint is what must survive
    checkpoint = out / 'checkpoint.pth'
    good, log, final = _sha256(checkpoint), (out / 'metrics.jsonl').read_text(), _sha256(out / 'final' / 'model.safetensors')

    # epoch 2 at an absurd learning rate, through the real command line
    r = run_module('osnet_zoo.train', *base, '--resume', '--epochs', '2', '--lr', '1e30', cwd=tmp_path)
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-3000:])
    assert 'Traceback' not in r.stderr, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and r.stderr.rstrip().endswith(errors[0]), r.stderr[-3000:]
    line = errors[0]
    assert DIVERGED.match(line), line
    assert f'the checkpoint {checkpoint} (of epoch 1, the last finished one) is intact' in line, line
    assert '--lr' in line and '--resume' in line, line
    assert _sha256(checkpoint) == good, 'the last good checkpoint was overwritten'
    assert (out / 'metrics.jsonl').read_text() == log, 'the diverged epoch was logged'
    assert _sha256(out / 'final' / 'model.safetensors') == final, 'a diverged model was saved as final/'

    # the intact checkpoint continues at a sane learning rate to a finished, finite run
    results = train_main([*base, '--resume', '--epochs', '2'])
    train_lines = [json.loads(x) for x in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [x['epoch'] for x in train_lines if x['kind'] == 'train'] == [1, 2]
    assert 0 <= results['market1501']['rank1'] <= 1 and results['market1501']['mAP'] > 0


class _Overflowing(nn.Module):
    """A model that trains with finite losses (batch statistics) while its eval-mode forward overflows: the
    running mean of its BatchNorm is 1e38, far from any batch's, and its scale 1e3. What an exploding SGD run
    leaves behind (the imagenet recipe's lr 0.4 on 12 images: loss 1.13 -> 8.79, then inf at test time)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)
        with torch.no_grad():
            self.bn.running_mean.fill_(1e38)
            self.bn.weight.fill_(1e3)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


def test_finite_loss_but_non_finite_test_time_outputs_stop_the_epoch(tmp_path):
    torch.manual_seed(0)
    model = _Overflowing()
    batches = [dict(image=torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8), pid=torch.tensor([0, 1, 2, 0]))
               for _ in range(2)]
    run = RunFolder(tmp_path)
    with pytest.raises(FloatingPointError) as e:
        train_one_epoch(model, ReIDLoss(0.0), torch.optim.SGD(model.parameters(), lr=1e-3), batches,
                        torch.device('cpu'), 0, 1, checkpoint=run.checkpoint, quiet=True)
    message = str(e.value)
    assert message.startswith("Training diverged at epoch 1 (at its end): the model's outputs in eval mode"), message
    assert 'the training loss stayed finite' in message and 'no checkpoint was saved' in message, message
    assert model.training and model.bn.training, 'the eval-mode check left the model in eval mode'


class _NaNGradient(nn.Module):
    """A finite forward whose backward is NaN: sqrt at 0 behind a zero factor (its gradient, inf x 0)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 3)

    def forward(self, x):
        return torch.sqrt(self.linear(x.mean((2, 3))) * 0)


def test_non_finite_gradients_are_named(tmp_path):
    model = _NaNGradient()
    batches = [dict(image=torch.zeros(2, 3, 1, 1, dtype=torch.uint8), pid=torch.tensor([0, 1]))]
    with pytest.raises(FloatingPointError, match=r'^Training diverged at epoch 1, step 1: the gradients became '
                                                 r'NaN/inf \(e\.g\. linear\.weight\) at a finite loss \(1\.099\)'):
        train_one_epoch(model, ReIDLoss(0.0), torch.optim.SGD(model.parameters(), lr=0.1), batches,
                        torch.device('cpu'), 0, 1, quiet=True)
