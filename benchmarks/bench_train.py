"""Training-step throughput: our fast settings against a plain fp32 eager loop, measured in the same run.

One step = forward + label-smoothed CE + backward + AMSGrad step, on random 256x128 images (the data
pipeline is measured separately by bench_loader.py). Example (GPU)::

    python benchmarks/bench_train.py --device cuda --model osnet_x1_0 --batch-size 64 256 --out results/

Variants: ``eager_fp32`` (the baseline, the reference's way), ``cl_bf16`` (channels_last + bf16 autocast),
``cl_bf16_compile`` (the same under torch.compile).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import osnet_zoo  # noqa: E402,F401  (registers the models)
from osnet_zoo.models.embedding import Embedder  # noqa: E402

VARIANTS = {
    'eager_fp32': dict(channels_last=False, amp=None, compile=False),
    'cl_fp32': dict(channels_last=True, amp=None, compile=False),
    'cl_bf16': dict(channels_last=True, amp=torch.bfloat16, compile=False),
    'cl_bf16_compile': dict(channels_last=True, amp=torch.bfloat16, compile=True),
}


def bench(model_name: str, batch: int, variant: str, device: torch.device, steps: int, warmup: int,
          num_classes: int = 751) -> float:
    v = VARIANTS[variant]
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=num_classes).to(device).train()
    if v['channels_last']:
        model = model.to(memory_format=torch.channels_last)
    net = Embedder(model, with_logits=True)
    if v['compile']:
        net = torch.compile(net)
    opt = torch.optim.Adam(model.parameters(), lr=1.5e-3, weight_decay=5e-4, amsgrad=True)
    ce = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(batch, 3, 256, 128, device=device)
    if v['channels_last']:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=v['amp'], enabled=v['amp'] is not None):
            _, logits = net(x)
        loss = ce(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--model', nargs='+', default=['osnet_x1_0'])
    p.add_argument('--batch-size', type=int, nargs='+', default=[64, 256])
    p.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument('--steps', type=int, default=20)
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--out', default=None, help='folder for bench_train.json')
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
        print(torch.cuda.get_device_name(), 'torch', torch.__version__)
    rows = []
    for name in args.model:
        for batch in args.batch_size:
            base = None
            for variant in args.variants:
                ips = bench(name, batch, variant, device, args.steps, args.warmup)
                base = base or (ips if variant == 'eager_fp32' else None)
                row = dict(model=name, batch=batch, variant=variant, img_per_s=round(ips, 1),
                           ratio_to_eager_fp32=round(ips / base, 2) if base else None)
                rows.append(row)
                print(f"{name:<14} batch {batch:<4} {variant:<16} {ips:>9.0f} img/s  "
                      f"x{row['ratio_to_eager_fp32'] if base else float('nan')}", flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / 'bench_train.json').write_text(json.dumps(dict(
            device=str(torch.cuda.get_device_name()) if device.type == 'cuda' else 'cpu',
            torch=torch.__version__, rows=rows), indent=2))


if __name__ == '__main__':
    main()
