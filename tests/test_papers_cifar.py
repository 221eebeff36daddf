"""CIFAR-10/100 from the binary releases (ICCV 2019 Sec. 4.3, Tables 8-9) with the deeper, CIFAR-stem OSNet."""
import json

import numpy as np
import pytest
import timm
import torch

from osnet_zoo.data.datasets import DatasetLayoutError, cifar10, cifar100
from osnet_zoo.data.datasets.cifar import read_cifar_binary
from osnet_zoo.metrics.classification import classification_metrics, topk_correct
from osnet_zoo.engine.recipes import resolve_config
from osnet_zoo.train.__main__ import get_args_parser, main as train_main

from task_layouts import make_cifar10, make_cifar100


def test_binary_records_decode_channel_planes_row_by_row(tmp_path):
    planes = np.stack([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)
    planes[0, 1] = 99    # red, row 0, column 1
    planes[2, 32] = 77   # blue, row 1, column 0
    record = bytes([7, 3]) + planes.tobytes()  # CIFAR-100: coarse 7, fine 3
    path = tmp_path / 'train.bin'
    path.write_bytes(record * 2)
    images, labels = read_cifar_binary(path, label_bytes=2, label_index=1, num_classes=100)
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [3, 3]
    assert images[0, 0, 0, 1] == 99 and images[0, 2, 1, 0] == 77 and images[0, 1, 5, 5] == 20
    path.write_bytes(record[:-1])
    with pytest.raises(DatasetLayoutError, match='not a whole number of 3074-byte'):
        read_cifar_binary(path, 2, 1, 100)
    path.write_bytes(bytes([0, 120]) + planes.tobytes())
    with pytest.raises(DatasetLayoutError, match='label 120 outside 0..99'):
        read_cifar_binary(path, 2, 1, 100)


def test_readers_find_the_release_folders(tmp_path):
    make_cifar10(tmp_path, per_batch=3, test=2)
    make_cifar100(tmp_path, train=5, test=2)
    ten, hundred = cifar10(tmp_path), cifar100(tmp_path)
    assert (len(ten.train), len(ten.test), ten.num_classes) == (15, 2, 10) and ten.classes[0] == 'airplane'
    assert (len(hundred.train), hundred.num_classes) == (5, 100) and hundred.train.pixels.shape == (5, 3, 32, 32)
    (tmp_path / 'cifar10' / 'cifar-10-batches-bin' / 'data_batch_3.bin').unlink()
    with pytest.raises(DatasetLayoutError, match='missing data_batch_3.bin'):
        cifar10(tmp_path)


def test_topk_and_error_rate_match_hand_computed_values():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])  # top-1 right for image 0 only; image 1's label is its 2nd guess
    correct = topk_correct(logits, labels, (1, 2, 5))
    assert correct == {1: 1, 2: 2, 5: 3}
    m = classification_metrics(correct, 3)
    assert m['top1'] == pytest.approx(1 / 3) and m['error'] == pytest.approx(2 / 3) and m['top5'] == 1.0


def test_cifar_stem_and_deeper_osnet():
    model = timm.create_model('osnet_x0_25', num_classes=10, layers=(3, 8, 6), stem='cifar').eval()
    assert [len(model.conv2), len(model.conv3), len(model.conv4)] == [3, 8, 6]
    assert model.forward_features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (8, 8)  # 32 -> 32, 16, 8
    assert model.feature_info[-1]['reduction'] == 4
    with pytest.raises(ValueError, match="stem"):
        timm.create_model('osnet_x0_25', stem='tiny')


@pytest.mark.parametrize('recipe,maker,model_args', [
    ('cifar10', make_cifar10, None),
    ('cifar100', make_cifar100, ['layers=[3,8,6]', 'stem=cifar', 'num_streams=1', 'aggregation=add']),  # Table 9
])
def test_cifar_recipes_train_one_epoch(tmp_path, recipe, maker, model_args):
    maker(tmp_path / 'data')
    out = tmp_path / 'run'
    # the recipe's lr 0.1 (batch 128) at batch 8 leaves eval-mode activations ~1e29 after two steps: near float32's
    # limit, so whether it overflows depends on the CPU; the tiny run takes an lr that converges
    argv = ['--recipe', recipe, '--root', str(tmp_path / 'data'), '--epochs', '1', '--batch-size', '8',
            '--model', 'osnet_x0_25', '--output', str(out), '--max-steps-per-epoch', '2', '--lr', '0.001']
    results = train_main(argv + (['--model-args', *model_args] if model_args else []))
    written = json.loads((out / 'results.json').read_text())['targets'][recipe]
    assert written['error'] == pytest.approx(1 - written['top1']) and written['num_images'] == 8
    assert results[recipe]['error'] == pytest.approx(written['error'])
    config = json.loads((out / 'config.json').read_text())
    assert config['model_args']['layers'] == [3, 8, 6] and config['model_args']['stem'] == 'cifar'
    assert config['lr'] == 0.001 and config['weight_decay'] == 1e-4 and config['stepsize'] == [82, 123]
    recipe_cfg = resolve_config(get_args_parser().parse_args(['--recipe', recipe]))
    assert (recipe_cfg.lr, recipe_cfg.batch_size, recipe_cfg.optim) == (0.1, 128, 'sgd')  # the paper's, untouched
    if model_args:
        assert config['model_args']['num_streams'] == 1
    # the trained model rebuilds from its folder with the architecture arguments it was trained with
    rebuilt = timm.create_model(f'local-dir:{out / "final"}', pretrained=True).eval()
    assert len(rebuilt.conv3) == 8 and rebuilt(torch.zeros(1, 3, 32, 32)).shape == (1, 10 if recipe == 'cifar10'
                                                                                      else 100)


def test_labelled_run_resumes_and_refuses_reid_options(tmp_path):
    make_cifar10(tmp_path / 'data', per_batch=4, test=4)
    out = tmp_path / 'run'
    common = ['--recipe', 'cifar10', '--root', str(tmp_path / 'data'), '--batch-size', '8', '--model', 'osnet_x0_25',
              '--model-args', 'layers=[1,1,1]', 'stem=cifar', '--output', str(out), '--max-steps-per-epoch', '1']
    train_main(common + ['--epochs', '1'])
    resumed = train_main(common + ['--epochs', '2', '--resume'])
    log = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in log if r['kind'] == 'train'] == [1, 2]
    written = json.loads((out / 'results.json').read_text())['targets']['cifar10']
    assert written['epoch'] == 2 == resumed['cifar10']['epoch']
    with pytest.raises(ValueError, match='--targets market1501: a cifar10 run is scored on the test split'):
        train_main(common[:-4] + ['--targets', 'market1501', '--output', str(tmp_path / 'b')])
    with pytest.raises(ValueError, match='--dml is a re-ID option'):
        train_main(common[:-4] + ['--dml', '--output', str(tmp_path / 'c')])
    with pytest.raises(ValueError, match='--transforms random_erase: not an augmentation'):
        train_main(common[:-4] + ['--transforms', 'random_erase', '--output', str(tmp_path / 'd'), '--epochs', '1'])
