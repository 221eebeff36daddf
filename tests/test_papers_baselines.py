"""The papers' baselines as re-ID backbones: any timm model trains with the same heads and losses (ICCV 2019
Table 3's MobileNetV2 and ResNet-50 rows)."""
import json

import pytest
import timm
import torch

from osnet_zoo.data import make_synthetic_reid
from osnet_zoo.models.embedding import Embedder
from osnet_zoo.train.__main__ import main as train_main


@pytest.fixture(scope='module')
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    make_synthetic_reid(root / 'Market-1501-v15.09.15', num_train_ids=12, num_test_ids=8, height=64, width=32,
                        num_distractors=2, num_junk=1, seed=5)
    return root


def test_mobilenetv2_trains_as_a_reid_backbone(tmp_path, tiny_root):
    out = tmp_path / 'run'
    results = train_main(['--model', 'mobilenetv2_100', '--sources', 'market1501', '--targets', 'market1501',
                          '--root', str(tiny_root), '--height', '64', '--width', '32', '--batch-size', '8',
                          '--epochs', '1', '--max-steps-per-epoch', '2', '--fixbase-epochs', '1', '--triplet-weight',
                          '0.5', '--output', str(out)])
    assert 0 <= results['market1501']['rank1'] <= 1 and 0 <= results['market1501']['mAP'] <= 1
    log = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert 'loss_triplet' in log[0]  # the same losses as OSNet
    # the trained network rebuilds from final/ (timm's layout) with the embedding it was evaluated with
    checkpoint = torch.load(out / 'checkpoint.pth', weights_only=True)
    trained = timm.create_model('mobilenetv2_100', num_classes=12)
    trained.load_state_dict(checkpoint['model'])
    rebuilt = timm.create_model(f'local-dir:{out / "final"}', pretrained=True)
    x = torch.rand(2, 3, 64, 32)
    a, b = Embedder(trained.eval())(x), Embedder(rebuilt.eval())(x)
    assert a.shape == (2, 1280) and torch.equal(a, b)
    config = json.loads((out / 'final' / 'config.json').read_text())
    assert config['pretrained_cfg']['input_size'] == [3, 64, 32] and config['pretrained_cfg']['crop_mode'] == 'squash'


def test_fixbase_freezes_all_but_the_timm_classifier():
    from osnet_zoo.train.common import set_fixbase
    model = timm.create_model('resnet18', num_classes=5)  # its classifier is `fc`
    set_fixbase([model], frozen=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {'fc.weight', 'fc.bias'} and not model.layer1.training and model.fc.training
    set_fixbase([model], frozen=False)
    assert all(p.requires_grad for p in model.parameters()) and model.layer1.training


def test_resnet50_pooled_features_and_a_clear_error_for_unknown_models(tmp_path):
    emb, logits = Embedder(timm.create_model('resnet50', num_classes=7).eval(), with_logits=True)(
        torch.rand(1, 3, 64, 32))
    assert emb.shape == (1, 2048) and logits.shape == (1, 7)
    with pytest.raises(ValueError, match="--model 'resnet50_ibn_a' is not a timm model"):
        train_main(['--model', 'resnet50_ibn_a', '--output', str(tmp_path / 'x')])
