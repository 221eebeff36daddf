"""Training losses against direct computations."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from osnet_zoo.engine.losses import (HardTripletLoss, MutualLearning, ReIDLoss, mutual_learning_loss,
                                     prediction_entropy)


def _torchreid_label_smooth(logits: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """torchreid's CrossEntropyLoss(label_smooth=True): targets (1 - eps) one-hot + eps / num_classes."""
    num_classes = logits.shape[1]
    target = torch.zeros_like(logits).scatter_(1, y[:, None], 1)
    target = (1 - eps) * target + eps / num_classes
    return (-target * F.log_softmax(logits, 1)).mean(0).sum()


@pytest.mark.parametrize('eps', [0.0, 0.1, 0.3])
def test_label_smoothing_is_torchreids(eps):
    # a fixed batch: 16 images of 751 identities (Market1501's count)
    torch.manual_seed(0)
    logits, y = 3 * torch.randn(16, 751), torch.randint(0, 751, (16,))
    expected = _torchreid_label_smooth(logits.double(), y, eps)
    loss = ReIDLoss(eps)(logits, y)
    assert loss.total.dtype == torch.float32
    assert loss.total.item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-6)
    assert loss.parts['loss_ce'].item() == loss.total.item() == loss.parts['loss'].item()
    # exactly what the hand-written CrossEntropyLabelSmooth computed before (cross_entropy on fp32 logits)
    assert torch.equal(loss.total, F.cross_entropy(logits.float(), y, label_smoothing=eps))
    assert torch.equal(nn.CrossEntropyLoss(label_smoothing=eps)(logits.bfloat16().float(), y),
                       ReIDLoss(eps)(logits.bfloat16(), y).total)  # bf16 logits are scored in fp32


def test_reid_loss_adds_entropy_triplet_and_mutual_learning():
    torch.manual_seed(0)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    outs = [(torch.randn(8, 4), torch.randn(8, 5)) for _ in range(2)]
    criterion = ReIDLoss(0.1, triplet_weight=0.5, margin=0.3, entropy_weight=0.2)
    got = criterion(outs, y)
    ce = nn.CrossEntropyLoss(label_smoothing=0.1)
    per_net = [ce(lg, y) - 0.2 * prediction_entropy(lg) + 0.5 * HardTripletLoss(0.3)(f, y)
               + mutual_learning_loss(lg, outs[1 - i][1]) for i, (f, lg) in enumerate(outs)]
    assert got.total.item() == pytest.approx(sum(per_net).item(), rel=1e-6)
    assert got.parts['loss'].item() == pytest.approx(sum(per_net).item() / 2, rel=1e-6)
    assert set(got.parts) == {'loss', 'loss_ce', 'loss_entropy', 'loss_triplet', 'loss_dml'}
    assert got.logits is outs[0][1]  # the training accuracy is the first network's


def test_mutual_learning_is_one_module_with_one_optimiser():
    a, b = nn.Linear(3, 4), nn.Linear(3, 4)
    pair = MutualLearning([a, b])
    assert len(pair(torch.randn(2, 3))) == 2
    optimizer = torch.optim.Adam(pair.parameters(), lr=0.1)
    assert sum(len(g['params']) for g in optimizer.param_groups) == 4  # both networks' weights and biases
    state = pair.state_dict()
    assert set(MutualLearning.first_network(state)) == set(a.state_dict())
    assert torch.equal(MutualLearning.first_network(state)['weight'], a.weight)
    assert MutualLearning.first_network(a.state_dict()).keys() == a.state_dict().keys()  # a single network as is


def test_batch_hard_triplet_matches_loop():
    torch.manual_seed(0)
    f, y = torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    losses = []
    for i in range(8):
        d = [(f[i] - f[j]).norm().item() for j in range(8)]
        pos = max(d[j] for j in range(8) if y[j] == y[i])
        neg = min(d[j] for j in range(8) if y[j] != y[i])
        losses.append(max(pos - neg + 0.3, 0.0))
    assert HardTripletLoss(0.3)(f, y).item() == pytest.approx(sum(losses) / 8, abs=1e-5)


def test_triplet_needs_identity_batches():
    with pytest.raises(ValueError, match='identity sampler'):
        HardTripletLoss()(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))


def test_mutual_learning_is_kl_and_only_trains_the_student():
    a = torch.randn(4, 6, requires_grad=True)
    b = torch.randn(4, 6, requires_grad=True)
    loss = mutual_learning_loss(a, b)
    pa, pb = F.softmax(a, 1), F.softmax(b, 1)
    expected = (pb * (pb.log() - pa.log())).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert a.grad is not None and b.grad is None
    assert mutual_learning_loss(a.detach(), a.detach()).item() == pytest.approx(0.0, abs=1e-6)
    assert not math.isnan(loss.item())
