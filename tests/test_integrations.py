"""``FeatureExtractor(resize=...)`` and ``osnet_zoo.integrations.boxmot`` without boxmot: the resize against OpenCV
itself (when cv2 is installed: boxmot brings it), the appearance model's rule for every kind of box."""
import numpy as np
import pytest
import timm
import torch
import torch.nn as nn

from osnet_zoo import FeatureExtractor
from osnet_zoo.inference.resize_cv2 import resize_like_cv2
from osnet_zoo.integrations.boxmot import BoxmotAppearanceModel

# (h, w) -> (H, W): downscales, upscales, mixed, one pixel, exactly 2x (OpenCV switches to INTER_AREA there)
SIZES = [((300, 130), (256, 128)), ((2000, 700), (256, 128)), ((90, 40), (256, 128)), ((1, 1), (128, 64)),
         ((1, 2), (128, 64)), ((512, 256), (256, 128)), ((333, 97), (128, 64)), ((60, 300), (256, 128))]


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = timm.create_model('osnet_x0_25', num_classes=0).eval()
    net.pretrained_cfg = {**net.pretrained_cfg, 'input_size': (3, 128, 64)}
    return net


def _picture(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize('source,target', SIZES)
def test_resize_cv2_gives_the_pixels_of_opencv(source, target):
    cv2 = pytest.importorskip('cv2', reason='OpenCV (cv2) is not installed: boxmot brings it')
    img = _picture(*source, seed=sum(source))
    want = cv2.resize(img, target[::-1], interpolation=cv2.INTER_LINEAR)
    got = resize_like_cv2(torch.from_numpy(img).permute(2, 0, 1)[None].float(), target)[0].permute(1, 2, 0)
    assert np.array_equal(got.numpy().astype(np.uint8), want)
    # ... which a plain float bilinear resize rounded to uint8 does not give
    plain = torch.nn.functional.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None].float(), size=target,
                                            mode='bilinear', align_corners=False).round()[0].permute(1, 2, 0)
    if source == (2000, 700):
        assert not np.array_equal(plain.numpy().astype(np.uint8), want)


def test_feature_extractor_resize_option():
    cv2 = pytest.importorskip('cv2', reason='OpenCV (cv2) is not installed: boxmot brings it')
    net = _net()
    boxmot_like = FeatureExtractor(net, device='cpu', backend='torch', resize='cv2', channel_order='bgr')
    ours = FeatureExtractor(net, device='cpu', backend='torch', channel_order='bgr')
    assert ours.resize == 'antialias' and "resize='cv2'" in repr(boxmot_like)
    big = _picture(300, 140, seed=1)
    # resize='cv2' feeds the network what cv2.resize gives (a crop at the input size is not resized)
    assert torch.equal(boxmot_like.preprocess(big), ours.preprocess(cv2.resize(big, (64, 128))))
    assert not torch.equal(boxmot_like.preprocess(big), ours.preprocess(big))
    at_size = _picture(128, 64, seed=2)
    assert torch.equal(boxmot_like.preprocess(at_size), ours.preprocess(at_size))
    with pytest.raises(ValueError, match=r"resize must be one of \('antialias', 'cv2'\), got 'area'"):
        FeatureExtractor(net, device='cpu', resize='area')


def test_appearance_model_rows_for_every_kind_of_box():
    net = _net()
    model = BoxmotAppearanceModel(net, device='cpu', backend='torch')
    assert model.input_shape == (128, 64) and model.embedding_dim == 512
    frame = _picture(240, 320, seed=3)
    boxes = np.array([
        [10.4, 20.2, 90.6, 200.0, 0.9, 0],  # a person-sized box (conf, cls columns ignored)
        [-40, -30, 50, 100, 0.9, 0],  # partly outside: clipped
        [100, 100, 101, 102, 0.9, 0],  # tiny: 1x2 pixels, resized like any crop
        [50.1, 50, 50.4, 90, 0.9, 0],  # rounds to zero width: no pixel
        [400, 10, 460, 120, 0.9, 0],  # entirely outside the frame
        [30, 40, 20, 80, 0.9, 0],  # inverted
        [np.nan, 0, 10, 10, 0.9, 0],  # not finite
    ], np.float32)
    rows = model.get_features(boxes, frame)
    assert rows.shape == (7, 512) and rows.dtype == np.float32
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    # boxes with pixels: the crop (rounded, clipped) through boxmot's resize
    crops = [frame[20:200, 10:91], frame[0:100, 0:50], frame[100:102, 100:101]]
    want = FeatureExtractor(net, device='cpu', backend='torch', resize='cv2', channel_order='bgr')(crops)
    assert torch.allclose(torch.from_numpy(rows[:3]), want, atol=1e-5)
    # boxes without a pixel: the embedding of an all-black crop, the same row for each
    black = FeatureExtractor(net, device='cpu', backend='torch')(np.zeros((128, 64, 3), np.uint8))
    for i in range(3, 7):
        assert torch.allclose(torch.from_numpy(rows[i]), black[0], atol=1e-5)
    assert model.get_features(np.zeros((0, 4)), frame).shape == (0, 512)
    assert np.allclose(model(boxes[:1, :4], frame), rows[:1], atol=1e-6)  # batch of 1 vs 7: rounding only


class _Silent(nn.Module):
    """A network whose output is zero for every crop (as a last ReLU can make it)."""
    pretrained_cfg = {'input_size': (3, 32, 16), 'mean': (0.5,) * 3, 'std': (0.5,) * 3, 'interpolation': 'bilinear',
                      'crop_pct': 1.0}

    def forward(self, x):
        return torch.zeros(x.shape[0], 8)


def test_appearance_model_never_returns_a_zero_norm_row():
    model = BoxmotAppearanceModel(_Silent(), device='cpu', backend='torch')
    rows = model.get_features([[0, 0, 10, 20], [50, 50, 60, 60]], _picture(40, 40, seed=4))
    assert np.array_equal(rows, np.eye(8, dtype=np.float32)[[0, 0]])


def test_appearance_model_refuses_what_it_cannot_crop():
    model = BoxmotAppearanceModel(_Silent(), device='cpu', backend='torch')
    frame = _picture(40, 40, seed=5)
    with pytest.raises(ValueError, match=r'boxes of shape \(1, 5\); expected .*oriented boxes are not supported'):
        model.get_features([[20, 20, 10, 30, 0.3]], frame)
    with pytest.raises(ValueError, match=r'frame must be an \(H, W, 3\) BGR numpy image, got \(40, 40\)'):
        model.get_features([[0, 0, 10, 10]], frame[..., 0])
    with pytest.raises(ValueError, match="channel_order='bgr'"):
        BoxmotAppearanceModel(FeatureExtractor(_Silent(), device='cpu', backend='torch'))
