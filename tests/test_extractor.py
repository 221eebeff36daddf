"""FeatureExtractor: every input form gives the same, correctly preprocessed features; bad inputs fail clearly."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import osnet_zoo
from osnet_zoo import FeatureExtractor



def trained_looking(model: nn.Module) -> nn.Module:
    """Fixed random norm statistics, so that features depend clearly on the pixels (and their colours)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return trained_looking(osnet_zoo.osnet_x0_25(num_classes=0))


@pytest.fixture(scope='module')
def extractor(model):
    """The default extractor: what users get (on the CPU, onnxruntime)."""
    return FeatureExtractor(model, device='cpu', batch_size=3)


@pytest.fixture(scope='module')
def eager(model):
    """The plain fp32 PyTorch model: the reference every backend must reproduce."""
    return FeatureExtractor(model, device='cpu', batch_size=3, backend='torch')


@pytest.fixture(scope='module')
def crop():
    """A 90x40 RGB person-crop-sized image with structure (gradients + blocks), not flat noise."""
    yy, xx = np.mgrid[0:90, 0:40]
    img = np.stack([(yy * 2.8) % 256, (xx * 6.1) % 256, ((yy // 15 + xx // 10) % 2) * 200 + 30], -1)
    return img.astype(np.uint8)


def test_all_input_forms_agree(extractor, crop, tmp_path):
    path = tmp_path / 'crop.png'
    Image.fromarray(crop).save(path)
    chw = torch.from_numpy(crop).permute(2, 0, 1)
    inputs = [str(path), path, Image.fromarray(crop), crop, chw, chw.float() / 255, chw[None].repeat(2, 1, 1, 1)]
    feats = extractor(inputs)
    assert feats.shape == (8, 512) and feats.dtype == torch.float32  # the BCHW tensor gives 2 rows
    assert torch.allclose(feats.norm(dim=1), torch.ones(8), atol=1e-5)
    assert (feats - feats[0]).abs().max() < 1e-5
    # BGR input (OpenCV) with channel_order='bgr', per call or as the extractor's default
    bgr = np.ascontiguousarray(crop[..., ::-1])
    assert (extractor(bgr, channel_order='bgr')[0] - feats[0]).abs().max() < 1e-5
    assert (extractor(torch.from_numpy(bgr).permute(2, 0, 1), channel_order='bgr')[0] - feats[0]).abs().max() < 1e-5
    # ... and without it the colours are wrong, which changes the features
    assert (extractor(bgr)[0] - feats[0]).abs().max() > 1e-3


def test_preprocessing_follows_pretrained_cfg(model, extractor, crop):
    """The batch the network sees matches timm's eval transform for the model's pretrained_cfg."""
    from timm.data import create_transform, resolve_data_config
    cfg = resolve_data_config(model=model)
    assert cfg['input_size'] == (3, 256, 128) and cfg['crop_mode'] == 'squash'
    assert extractor.preprocessing['input_size'] == (3, 256, 128)
    transform = create_transform(**cfg)
    ours = extractor.preprocess(crop)
    theirs = transform(Image.fromarray(crop)).unsqueeze(0)
    assert ours.shape == theirs.shape == (1, 3, 256, 128)
    # PIL resizes in uint8 (rounding); we resize in float: they differ by at most ~1 grey level
    assert (ours - theirs).abs().max() < 2.5 / 255 / 0.224
    # at the input size there is no resize: exactly timm's ToTensor + Normalize
    exact = np.random.default_rng(0).integers(0, 256, (256, 128, 3), dtype=np.uint8)
    assert (extractor.preprocess(exact) - transform(Image.fromarray(exact))).abs().max() < 1e-5
    with torch.inference_mode():
        ref = nn.functional.normalize(model(theirs), dim=1)
    assert nn.functional.cosine_similarity(extractor(crop), ref).item() > 0.999


def test_chunking_and_normalize_option(model, crop):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8)
              for h, w in zip(rng.integers(30, 300, 7), rng.integers(20, 150, 7))]
    small = FeatureExtractor(model, device='cpu', batch_size=2)
    big = FeatureExtractor(model, device='cpu', batch_size=16)
    a, b = small(images), big(images)
    assert a.shape == (7, 512) and (a - b).abs().max() < 1e-5
    raw = small(images, normalize=False)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(7), atol=1e-2)
    with torch.inference_mode():
        expected = model(big.preprocess(images))
    assert (raw - expected).abs().max() < 1e-5
    assert (nn.functional.normalize(raw, dim=1) - a).abs().max() < 1e-5
    # iter_batches: lazily, chunk by chunk, with the input indices
    chunks = list(small.iter_batches(iter(images)))
    assert [idx for idx, _ in chunks] == [[0, 1], [2, 3], [4, 5], [6]]
    assert (torch.cat([f for _, f in chunks]) - a).abs().max() < 1e-5


def test_grayscale_and_alpha(extractor, crop, tmp_path):
    gray = crop[..., 1]
    gray_rgb = np.repeat(gray[..., None], 3, axis=2)
    ref = extractor(gray_rgb)
    for form in (gray, gray[..., None], Image.fromarray(gray), torch.from_numpy(gray)[None]):
        assert (extractor(form) - ref).abs().max() < 1e-5
    # PIL RGBA / LA images and files are converted by PIL (alpha dropped)
    rgba = Image.fromarray(np.concatenate([crop, np.full_like(crop[..., :1], 128)], 2), mode='RGBA')
    rgba.save(tmp_path / 'rgba.png')
    ref_rgb = extractor(crop)
    assert (extractor(rgba) - ref_rgb).abs().max() < 1e-5
    assert (extractor(tmp_path / 'rgba.png') - ref_rgb).abs().max() < 1e-5
    # raw RGBA arrays are ambiguous (BGRA? premultiplied?): an error naming the input
    with pytest.raises(ValueError, match=r'input 1: .*4 channels'):
        extractor([crop, np.asarray(rgba)])


def test_bad_inputs_name_the_input(extractor, crop, tmp_path):
    with pytest.raises(ValueError, match='No images'):
        extractor([])
    with pytest.raises(ValueError, match='No images'):
        extractor(torch.zeros(0, 3, 32, 16))
    with pytest.raises(ValueError, match=r'input 1: numpy images must be uint8'):
        extractor([crop, crop.astype(np.float32)])
    with pytest.raises(ValueError, match=r'input 0: .*channels-first'):
        extractor(np.ascontiguousarray(crop.transpose(2, 0, 1)))
    with pytest.raises(ValueError, match=r'input 2: .*channels-last'):
        extractor([crop, crop, torch.from_numpy(crop)])
    with pytest.raises(ValueError, match=r'input 0: .*\[0, 1\]'):
        extractor(torch.rand(3, 64, 32) * 255)
    with pytest.raises(ValueError, match=r'input 0: .*expected CHW or BCHW'):
        extractor(torch.rand(1, 1, 3, 64, 32))
    with pytest.raises(ValueError, match=r'input 0: .*2 channels'):
        extractor(torch.rand(2, 64, 32))
    with pytest.raises(ValueError, match=r'input 1: empty image'):
        extractor([crop, np.zeros((0, 10, 3), np.uint8)])
    missing = tmp_path / 'missing.jpg'
    with pytest.raises(FileNotFoundError, match=r'input 1 .*missing\.jpg'):
        extractor([crop, missing])
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
    with pytest.raises(ValueError, match=r'broken\.jpg.*cannot read'):
        extractor([broken])
    with pytest.raises(TypeError, match=r'input 0: unsupported type dict'):
        extractor([{'image': crop}])
    with pytest.raises(ValueError, match='channel_order'):
        extractor(crop, channel_order='bgra')


def test_model_by_name_checkpoint_and_classifier(model, crop, tmp_path):
    from safetensors.torch import save_file
    ckpt = tmp_path / 'osnet_x0_25_test.safetensors'
    save_file(model.state_dict(), str(ckpt))
    by_module = FeatureExtractor(model, device='cpu')(crop)
    by_checkpoint = FeatureExtractor('osnet_x0_25', checkpoint_path=ckpt, device='cpu')
    assert by_checkpoint.preprocessing['input_size'] == (3, 256, 128)
    assert (by_checkpoint(crop) - by_module).abs().max() < 1e-6
    # a named model without weights builds with the name's pretrained_cfg
    assert FeatureExtractor('osnet_ain_x0_25', pretrained=False, device='cpu')(crop).shape == (1, 512)
    # an OSNet with a classifier is used up to its embedding (the module itself is not modified)
    with_head = osnet_zoo.osnet_x0_25(num_classes=10)
    with_head.load_state_dict(model.state_dict(), strict=False)
    with_head.eval()
    assert (FeatureExtractor(with_head, device='cpu')(crop) - by_module).abs().max() < 1e-6
    assert with_head.num_classes == 10
    with pytest.raises(ValueError, match='checkpoint_path'):
        FeatureExtractor(model, checkpoint_path=ckpt)


def test_optimized_and_half_precision_extractors(model, eager, crop):
    images = [crop, crop[10:80, 5:35], np.ascontiguousarray(crop[::-1])]
    ref = eager(images)
    fast = FeatureExtractor(model, device='cpu', batch_size=3, optimize=True)
    assert (fast(images) - ref).abs().max() < 1e-5
    bf16 = FeatureExtractor(model, device='cpu', batch_size=3, precision='bf16', optimize=True)
    out = bf16(images)
    assert out.dtype == torch.float32
    assert nn.functional.cosine_similarity(out, ref).min() > 0.99
    with pytest.raises(ValueError, match='CUDA'):
        FeatureExtractor(model, device='cpu', cuda_graph=True)


def test_onnxruntime_backend(model, eager, crop):
    images = [crop, crop[10:80, 5:35], np.ascontiguousarray(crop[::-1]), crop[::2, ::2]]
    ort_extractor = FeatureExtractor(model, device='cpu', batch_size=3, backend='onnxruntime', threads=1)
    assert ort_extractor.model.contract['check']['passed'] and ort_extractor.plan.requested == 'onnxruntime'
    options = ort_extractor.model.session.get_session_options()
    assert options.get_session_config_entry('session.intra_op.allow_spinning') == '0'  # preprocessing interleaves
    assert options.intra_op_num_threads == 1
    got, ref = ort_extractor(images, normalize=False), eager(images, normalize=False)
    assert got.shape == (4, 512) and ref.abs().max() > 0.05
    assert (got - ref).abs().max() < 1e-4  # chunks of 3 and 1: the dynamic batch works
    with pytest.raises(ValueError, match='onnxruntime'):
        FeatureExtractor(model, device='cpu', backend='onnxruntime', precision='bf16')


@pytest.fixture(scope='module')
def frame():
    """A 240x320 BGR frame with structure (OpenCV layout)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    img = np.stack([(yy * 1.7) % 256, (xx * 0.9) % 256, ((yy // 20 + xx // 16) % 2) * 180 + 40], -1)
    return np.clip(img + rng.integers(0, 30, img.shape), 0, 255).astype(np.uint8)


def test_from_boxes_equals_cropping_by_hand(extractor, frame):
    boxes = np.array([[10.2, 20.7, 60.4, 140.1], [100, 50, 180, 230], [250.5, 0, 320, 240], [0, 0, 31, 77]])
    feats, kept = extractor.from_boxes(frame, boxes, channel_order='bgr')
    assert kept.tolist() == [True] * 4 and feats.shape == (4, 512)
    windows = np.round(boxes).astype(int)  # all inside the frame: rounding only
    by_hand = extractor([frame[y0:y1, x0:x1] for x0, y0, x1, y1 in windows], channel_order='bgr')
    assert torch.equal(feats, by_hand)
    # the same frame as a CHW RGB tensor gives the same features
    chw = torch.from_numpy(np.ascontiguousarray(frame[..., ::-1])).permute(2, 0, 1)
    assert (extractor.from_boxes(chw, torch.tensor(boxes))[0] - by_hand).abs().max() < 1e-5


def test_from_boxes_clips_and_skips(extractor, frame):
    boxes = np.array([
        [-15, -10, 40, 100],       # partly outside: clipped to [0, 0, 40, 100]
        [300, 200, 400, 300],      # clipped to [300, 200, 320, 240]
        [50, 50, 50, 120],         # zero width: skipped
        [80, 80, 60, 120],         # inverted: skipped
        [400, 10, 500, 90],        # entirely outside: skipped
        [10, 10, 10.9, 90],        # under min_size (rounds to 1 px wide): skipped
        [np.nan, 0, 30, 30],       # not finite: skipped
        [5, 5, 7, 7],              # 2x2: kept (min_size=2)
    ])
    feats, kept = extractor.from_boxes(frame, boxes, channel_order='bgr')
    assert kept.tolist() == [True, True, False, False, False, False, False, True]
    assert feats.shape == (8, 512) and (feats[~kept] == 0).all()
    assert torch.allclose(feats[kept].norm(dim=1), torch.ones(3), atol=1e-5)
    by_hand = extractor([frame[0:100, 0:40], frame[200:240, 300:320], frame[5:7, 5:7]], channel_order='bgr')
    assert torch.equal(feats[kept], by_hand)
    # a stricter min_size skips the small one
    assert extractor.from_boxes(frame, boxes, channel_order='bgr', min_size=3)[1].tolist()[-1] is False
    # no detections (or none usable): zero rows of the embedding width, no forward pass needed
    empty, none_kept = extractor.from_boxes(frame, np.zeros((0, 4)), channel_order='bgr')
    assert empty.shape == (0, 512) and none_kept.shape == (0,)
    feats, kept = extractor.from_boxes(frame, [[400, 0, 410, 10]])
    assert feats.shape == (1, 512) and not kept.any() and (feats == 0).all()
    # without channel_order='bgr' an OpenCV frame gives other features
    rgb_default = extractor.from_boxes(frame, boxes[:1])[0]
    assert (rgb_default - extractor.from_boxes(frame, boxes[:1], channel_order='bgr')[0]).abs().max() > 1e-3


def test_from_boxes_bad_input(extractor, frame):
    with pytest.raises(ValueError, match=r'shape \(N, 4\)'):
        extractor.from_boxes(frame, np.zeros((3, 5)))
    with pytest.raises(ValueError, match='expected CHW'):
        extractor.from_boxes(torch.zeros(1, 3, 10, 10), np.zeros((1, 4)))
    with pytest.raises(TypeError, match='numpy HWC array or a CHW tensor'):
        extractor.from_boxes('frame.jpg', np.zeros((1, 4)))
