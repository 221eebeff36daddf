"""Antialiased vs plain bilinear resize of person crops to 256x128: pixel and feature differences
(docs/trackers.md). Random weights with trained-like BN statistics. Run: python benchmarks/resize_antialias.py"""
import numpy as np, torch, torch.nn.functional as F, timm, sys
sys.path.insert(0, 'benchmarks')
import osnet_zoo
from bench_inference import _randomise_statistics
torch.manual_seed(0)
m = timm.create_model('osnet_x0_25', num_classes=0).eval(); _randomise_statistics(m)
ext = osnet_zoo.FeatureExtractor(m, device='cpu', channel_order='rgb')
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:1080, 0:1920]
frame = np.stack([(yy * 1.3) % 256, (xx * 0.7) % 256, ((yy // 9 + xx // 7) % 2) * 180 + 40], -1)
frame = np.clip(frame + rng.integers(0, 40, frame.shape), 0, 255).astype(np.uint8)
mean = torch.tensor(ext.preprocessing['mean']).view(1, 3, 1, 1) * 255
std = torch.tensor(ext.preprocessing['std']).view(1, 3, 1, 1) * 255
for h, w in [(200, 90), (256, 128), (300, 130), (400, 170), (600, 260)]:
    crop = frame[100:100 + h, 200:200 + w]
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float()
    aa = F.interpolate(x, size=(256, 128), mode='bilinear', align_corners=False, antialias=True)
    plain = F.interpolate(x, size=(256, 128), mode='bilinear', align_corners=False)
    pix = (aa - plain).abs()
    with torch.no_grad():
        fa = F.normalize(m((aa - mean) / std), dim=1); fp = F.normalize(m((plain - mean) / std), dim=1)
    ours = ext(crop)
    print(f'{h}x{w}: pixels mean|d| {pix.mean():.2f} max|d| {pix.max():.1f} (0-255); '
          f'1-cos {1 - (fa * fp).sum().item():.2e}; extractor==antialias {torch.allclose(ours, fa, atol=1e-5)}')
