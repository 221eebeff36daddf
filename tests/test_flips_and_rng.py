"""Behaviour a planted bug once slipped past: the train-time random flip, flip test-time augmentation, and the
RNG state a checkpoint carries (train and nas restore it on resume)."""
from __future__ import annotations

import random

import numpy as np
import timm
import torch
from PIL import Image, ImageOps

from osnet_zoo.data.transforms import build_train_transform
from osnet_zoo.evaluation import embed
from osnet_zoo.engine.checkpoint import rng_state, set_rng_state


def _asymmetric_image(height: int = 32, width: int = 16, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] //= 4  # a dark left half: no image equals its mirror
    return Image.fromarray(pixels)


def test_train_transform_mirrors_about_half_the_images():
    """The training pipeline (the recipes' default augmentation, random_flip) on 400 draws, fixed seed:
    each output is the image or its mirror, and the mirror comes up 200 ± 40 times (4 sigma of p = 0.5)."""
    image = _asymmetric_image()
    plain = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)
    mirrored = plain.flip(-1)
    transform = build_train_transform(32, 16, ['random_flip'], normalize=False)
    torch.manual_seed(0)
    flips = 0
    for _ in range(400):
        out = transform(image)
        assert torch.equal(out, plain) or torch.equal(out, mirrored), 'random_flip changed more than the direction'
        flips += int(torch.equal(out, mirrored))
    assert 160 <= flips <= 240, f'{flips} of 400 images mirrored'


def test_flip_tta_is_the_mean_of_the_image_and_its_mirror(tmp_path):
    """embed(flip=True) against the features of the explicitly mirrored file (PIL's left-right mirror)."""
    torch.manual_seed(0)
    model = timm.create_model('osnet_x0_25', num_classes=0).eval()
    paths, mirrors = [], []
    for i in range(3):
        image = _asymmetric_image(seed=i)
        paths.append(tmp_path / f'{i}.png')
        mirrors.append(tmp_path / f'{i}_mirror.png')
        image.save(paths[-1])
        ImageOps.mirror(image).save(mirrors[-1])
    options = dict(device='cpu', size=(32, 16), batch_size=2)
    tta = embed(model, paths, flip=True, **options)
    plain, mirrored = embed(model, paths, **options), embed(model, mirrors, **options)
    assert not torch.allclose(plain, mirrored, atol=1e-3), 'the model cannot tell an image from its mirror'
    assert torch.allclose(tta, (plain + mirrored) / 2, atol=1e-5)


def _draw() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    """rng_state() saved with torch.save and loaded weights_only restores Python, numpy and torch exactly."""
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    _draw()
    torch.save({'rng': rng_state()}, tmp_path / 'state.pth')
    expected = _draw()
    _draw()  # move every generator on
    set_rng_state(torch.load(tmp_path / 'state.pth', weights_only=True)['rng'])
    assert _draw() == expected
