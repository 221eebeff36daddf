"""The Triton depthwise 3x3 + bias + ReLU kernel, checked without a GPU: Triton's interpreter
(TRITON_INTERPRET=1, set before Triton is imported, hence a subprocess) runs it on CPU tensors."""
import json

import pytest
import torch

import osnet_zoo
from osnet_zoo.inference import optimize_for_inference
from conftest import child_env, run_python

pytest.importorskip('triton', reason='optional package triton not installed: every Triton kernel test in this file '
                                      'is skipped (pip install triton)')

CHECK = r'''
import json, torch, osnet_zoo
from osnet_zoo.inference.optimize import LiteLevel, optimize_for_inference
from osnet_zoo.inference import triton_kernels as tk
torch.manual_seed(0)
out = {}
# kernel alone: masked edges in width (37 > one 32-wide block) and channels (70 > one 64-wide block)
for n, c, h, w, dtype in [(2, 20, 8, 6, torch.float32), (1, 70, 5, 37, torch.float32), (2, 16, 4, 4, torch.float16)]:
    x = torch.randn(n, c, h, w).to(dtype).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(c, 1, 3, 3).to(dtype), torch.randn(c).to(dtype)
    assert tk._kernel_applies(x)
    y = tk.depthwise3x3_bias_relu(x, weight, bias)
    ref = tk.depthwise3x3_bias_relu_reference(x.float(), weight.float(), bias.float())
    out[f'{n}x{c}x{h}x{w} {dtype}'] = [(y.float() - ref).abs().max().item(), ref.abs().max().item(),
                                       y.is_contiguous(memory_format=torch.channels_last), str(y.dtype)]
# a whole osnet_ain_x0_25 with the kernel in every stream-batched level
model = osnet_zoo.osnet_ain(width=0.25, num_classes=0).eval()
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5); m.bias.uniform_(-0.2, 0.2)
x = torch.randn(2, 3, 64, 32)
fast = optimize_for_inference(model, triton_depthwise=True)


class CountingLaunches:  # counts kernel launches; the real kernel still runs
    def __init__(self, kernel):
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        self.launches += 1
        return self.kernel[grid]


tk._dw3x3_bias_relu_nhwc = counter = CountingLaunches(tk._dw3x3_bias_relu_nhwc)
with torch.inference_mode():
    levels = [m for m in fast.modules() if isinstance(m, LiteLevel)]
    ref, got = model(x), fast(x)
out['model'] = [((got - ref).abs().max() / ref.abs().max()).item(), len(levels), counter.launches]
print(json.dumps(out))
'''


def test_triton_depthwise_kernel_in_the_interpreter():
    run = run_python('-c', CHECK, env=child_env(TRITON_INTERPRET='1'))
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    rel, num_levels, launches = result.pop('model')
    assert num_levels == 24 and launches == 24  # every level of the 6 blocks ran the kernel once
    assert rel < 1e-5
    for case, (err, scale, channels_last, dtype) in result.items():
        assert channels_last and scale > 1
        assert err <= (1e-5 if 'float32' in case else 2e-3 * scale), (case, err)
        assert dtype == ('torch.float16' if 'float16' in case else 'torch.float32')


def test_triton_depthwise_falls_back_off_gpu():
    """Without the interpreter a CPU tensor takes the PyTorch path: same numbers as the plain model."""
    model = osnet_zoo.osnet_x0_25(num_classes=0).eval()
    x = torch.randn(1, 3, 64, 32)
    fast = optimize_for_inference(model, triton_depthwise=True)
    with torch.inference_mode():
        assert ((fast(x) - model(x)).abs().max() / model(x).abs().max()) < 1e-5
    with pytest.raises(ValueError, match='triton_depthwise'):
        optimize_for_inference(model, merge_lite=True, triton_depthwise=True)
