"""Where a training step spends its GPU time: torch.profiler's top kernels for one configuration.

    python benchmarks/profile_train.py --model osnet_x1_0 --batch-size 256 --channels-last --amp bf16
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import timm
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import osnet_zoo  # noqa: E402,F401  (registers the models)
from osnet_zoo.models.embedding import Embedder  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model', default='osnet_x1_0')
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--amp', choices=['none', 'bf16'], default='none')
    p.add_argument('--top', type=int, default=25)
    args = p.parse_args()
    torch.backends.cudnn.benchmark = True
    model = timm.create_model(args.model, num_classes=751).cuda().train()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    net = Embedder(model, with_logits=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    ce = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(args.batch_size, 3, 256, 128, device='cuda').contiguous(memory_format=fmt)
    y = torch.randint(0, 751, (args.batch_size,), device='cuda')
    amp = torch.bfloat16 if args.amp == 'bf16' else None

    def step():
        with torch.autocast('cuda', dtype=amp, enabled=amp is not None):
            _, logits = net(x)
        loss = ce(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    print(f'{args.model} batch {args.batch_size} channels_last={args.channels_last} amp={args.amp}')
    print(prof.key_averages().table(sort_by='cuda_time_total', row_limit=args.top, max_name_column_width=70))


if __name__ == '__main__':
    main()
