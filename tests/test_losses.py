"""Training losses against direct computations."""
import math

import pytest
import torch
import torch.nn.functional as F

from osnet_zoo.train.losses import CrossEntropyLabelSmooth, HardTripletLoss, mutual_learning_loss


def test_label_smoothing_matches_definition():
    torch.manual_seed(0)
    logits, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    eps = 0.1
    target = torch.full((6, 5), eps / 5)
    target[torch.arange(6), y] += 1 - eps
    expected = -(target * F.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(CrossEntropyLabelSmooth(eps)(logits, y), expected, atol=1e-6)


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
