"""The minimum-versions job's smoke test (.ci/run): every module of osnet_zoo imports, and the default path works
end to end: a model is built, FeatureExtractor (backend='auto': onnxruntime on the CPU, through the ONNX export
and its check) embeds a few crops and boxes, and the features agree with the PyTorch model's."""
import importlib
import pkgutil
import sys
from importlib.metadata import version

import numpy as np
import timm
import torch

import osnet_zoo
from osnet_zoo import FeatureExtractor


def main() -> None:
    names = [m.name for m in pkgutil.walk_packages(osnet_zoo.__path__, 'osnet_zoo.')]
    for name in names:
        importlib.import_module(name)
    print(f'imported {len(names)} modules with ' + ', '.join(
        f'{p} {version(p)}' for p in ('torch', 'torchvision', 'timm', 'huggingface_hub', 'safetensors', 'gdown',
                                      'requests', 'numpy', 'pillow', 'tqdm', 'pyyaml', 'matplotlib', 'onnx',
                                      'onnxruntime')))
    torch.manual_seed(0)
    net = timm.create_model('osnet_x0_25', num_classes=0)
    extractor = FeatureExtractor(net, device='cpu')
    assert extractor.backend == 'onnxruntime', f'the default CPU backend fell back: {extractor.plan.reason}'
    crops = [np.random.default_rng(i).integers(0, 256, (200 + 10 * i, 90, 3), dtype=np.uint8) for i in range(3)]
    features = extractor(crops)
    assert features.shape == (3, 512)
    assert torch.allclose(features, FeatureExtractor(net, device='cpu', backend='torch')(crops), atol=1e-4)
    frame = np.zeros((240, 320, 3), np.uint8)
    boxed, kept = extractor.from_boxes(frame, [[10, 10, 100, 200], [5, 5, 5, 5]])
    assert boxed.shape == (2, 512) and kept.tolist() == [True, False]
    print(f'smoke test passed: {extractor!r}')


if __name__ == '__main__':
    main()
    sys.exit(0)
