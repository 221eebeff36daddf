"""ImageNet (ICCV 2019 Sec. 4.4, Table 10): class folders, the imagenet recipe, single-crop top-1/top-5, and
``python -m osnet_zoo.evaluate --task classification``."""
import json

import pytest
import timm
import torch
from torchvision.transforms.v2 import functional as TF

from osnet_zoo.data import normalize_batch, read_image_tensor
from osnet_zoo.data.datasets import DatasetLayoutError, imagenet
from osnet_zoo.evaluate import main as evaluate_main
from osnet_zoo.files import atomic_save_safetensors
from osnet_zoo.engine.recipes import resolve_config
from osnet_zoo.train.__main__ import get_args_parser, main as train_main

from conftest import run_module
from task_layouts import make_imagenet


def test_class_folders_reader(tmp_path):
    wnids = make_imagenet(tmp_path, train=2, val=1)
    ds = imagenet(tmp_path)
    assert ds.classes == sorted(wnids) and (len(ds.train), len(ds.test)) == (6, 3)
    assert ds.test.labels.tolist() == [0, 1, 2] and ds.test.paths[1].endswith('.JPEG')
    (tmp_path / 'imagenet' / 'val' / 'n99999999').mkdir()
    with pytest.raises(DatasetLayoutError, match='n99999999: class folder not among the 3'):
        imagenet(tmp_path)
    with pytest.raises(DatasetLayoutError, match='imagenet'):
        imagenet(tmp_path / 'nothing')


def test_imagenet_tags_describe_imagenet_preprocessing():
    cfg = timm.get_pretrained_cfg('osnet_x1_0.imagenet').to_dict()
    assert cfg['input_size'] == (3, 224, 224) and cfg['crop_pct'] == 0.875 and cfg['crop_mode'] == 'squash'
    assert cfg['num_classes'] == 1000
    reid = timm.get_pretrained_cfg('osnet_x1_0.msmt17_combineall').to_dict()
    assert reid['input_size'] == (3, 256, 128) and reid['crop_pct'] == 1.0


def test_imagenet_recipe_keeps_the_papers_optimisation():
    cfg = resolve_config(get_args_parser().parse_args(['--recipe', 'imagenet']))
    assert (cfg.optim, cfg.lr, cfg.batch_size, cfg.weight_decay, cfg.epochs) == ('sgd', 0.4, 1024, 4e-5, 120)
    assert cfg.transforms == ['resize_crop', 'random_flip'] and cfg.label_smooth == 0.0


def test_imagenet_recipe_trains_one_epoch_and_evaluate_scores_it(tmp_path):
    make_imagenet(tmp_path / 'data', train=4, val=2)
    out = tmp_path / 'run'
    # The recipe's lr 0.4 is the paper's for batch 1024; on 12 images at batch 4 it explodes (loss 1.13 -> 8.79,
    # eval-mode activations ~1e34 here, inf on other CPUs), so the tiny run takes an lr that converges on them.
    results = train_main(['--recipe', 'imagenet', '--root', str(tmp_path / 'data'), '--epochs', '1',
                          '--batch-size', '4', '--lr', '0.01', '--height', '32', '--width', '32',
                          '--model', 'osnet_x0_25', '--output', str(out)])
    config = json.loads((out / 'config.json').read_text())
    assert config['optim'] == 'sgd' and config['transforms'] == ['resize_crop', 'random_flip']  # the rest: the recipe
    log = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['loss'] < 3 for r in log if r['kind'] == 'train'] == [True]  # converging (ln 3 = 1.10 at the start)
    written = json.loads((out / 'results.json').read_text())['targets']['imagenet']
    assert written['num_images'] == 6 and written['top5'] == 1.0  # 3 classes: every label is in the top 5
    assert written['top1'] == pytest.approx(results['imagenet']['top1'])
    final = json.loads((out / 'final' / 'config.json').read_text())['pretrained_cfg']
    assert final['crop_pct'] == 0.875 and final['input_size'] == [3, 32, 32]
    # the CLI scores the trained folder with the same single centre crop
    scored = evaluate_main(['--task', 'classification', '--checkpoint', str(out), '--dataset', 'imagenet',
                            '--root', str(tmp_path / 'data'), '--output', str(tmp_path / 'eval'), '--device', 'cpu',
                            '--workers', '0'])
    assert scored['targets']['imagenet']['top1'] == pytest.approx(written['top1'])


def test_evaluate_classification_is_the_224_centre_crop_of_the_256_image(tmp_path):
    """A 3-class classifier under the imagenet tag's preprocessing, checked against the crop done by hand
    (resize to input / 0.875, aspect not kept, then the centre input x input window)."""
    make_imagenet(tmp_path / 'data', train=1, val=2)
    torch.manual_seed(0)
    model = timm.create_model('osnet_x0_25.imagenet', num_classes=3).eval()
    atomic_save_safetensors(model.state_dict(), tmp_path / 'w.safetensors')
    scored = evaluate_main(['--task', 'classification', '--model', 'osnet_x0_25.imagenet', '--checkpoint',
                            str(tmp_path / 'w.safetensors'), '--dataset', 'imagenet', '--root', str(tmp_path / 'data'),
                            '--height', '64', '--width', '64', '--output', str(tmp_path / 'eval'), '--device', 'cpu',
                            '--workers', '0'])
    ds = imagenet(tmp_path / 'data')
    images = torch.stack([TF.center_crop(TF.resize(read_image_tensor(p), [73, 73], antialias=True), [64, 64])
                          for p in ds.test.paths])
    with torch.no_grad():
        logits = model(normalize_batch(images))
    top1 = (logits.argmax(1) == ds.test.labels).float().mean().item()
    assert scored['targets']['imagenet']['top1'] == pytest.approx(top1)
    assert scored['input_size'] == [64, 64] and scored['crop_pct'] == 0.875
    # a re-ID dataset is refused in one line
    bad = run_module('osnet_zoo.evaluate', '--task', 'classification', '--checkpoint', tmp_path / 'w.safetensors',
                     '--model', 'osnet_x0_25', '--dataset', 'market1501')
    assert bad.returncode != 0 and 'not a classification dataset' in bad.stderr and 'Traceback' not in bad.stderr


def test_reid_builders_keep_reid_input_for_archs_whose_default_tag_is_imagenet(tmp_path):
    """osnet_ain_x0_25's only tag is its ImageNet classifier; a re-ID embedding built from other weights (a
    checkpoint, random) and a converted re-ID checkpoint keep the 256x128 re-ID input."""
    from osnet_zoo.inference import build_embedding_model, resolve_preprocessing
    assert timm.get_pretrained_cfg('osnet_ain_x0_25').to_dict()['input_size'] == (3, 224, 224)
    net = build_embedding_model('osnet_ain_x0_25', pretrained=False)
    assert resolve_preprocessing(net)['input_size'] == (3, 256, 128)
    atomic_save_safetensors(net.state_dict(), tmp_path / 'reid.safetensors')
    loaded = build_embedding_model('osnet_ain_x0_25', checkpoint_path=tmp_path / 'reid.safetensors')
    assert resolve_preprocessing(loaded)['input_size'] == (3, 256, 128)
