"""`python -m osnet_zoo`: a summary of the OSNet family (params, mult-adds, a forward pass)."""
from __future__ import annotations

import argparse
import time

import timm
import torch

import osnet_zoo
from osnet_zoo import cli
from osnet_zoo.models import OSNET_ARCHS, count_mult_adds, count_params


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m osnet_zoo``."""
    parser = argparse.ArgumentParser(
        prog='python -m osnet_zoo',
        description='List the OSNet variants registered into timm with their parameters and mult-adds '
                    '(the papers\' Table 1), and time one forward pass of each on this machine.',
        epilog='examples:\n'
               '  python -m osnet_zoo                                  # 256x128, batch 8, on the CPU or GPU\n'
               '  python -m osnet_zoo --height 128 --width 64 --batch-size 2 --device cpu',
        formatter_class=cli.HelpFormatter)
    parser.add_argument('--height', type=int, default=256, help='input height (default 256)')
    parser.add_argument('--width', type=int, default=128, help='input width (default 128)')
    cli.add_batch_size(parser, 8, help='batch for the timed forward pass')
    cli.add_device(parser)
    return parser


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> None:
    """Run ``python -m osnet_zoo``: print each registered OSNet's params, mult-adds, embedding size and ms/img."""
    args = get_args_parser().parse_args(argv)
    device = torch.device(args.device)

    print(f'osnet-zoo {osnet_zoo.__version__} (timm {timm.__version__}, torch {torch.__version__})')
    print(f'input {args.height}x{args.width}, eval mode, embedding = fc output (no classifier), device {device}\n')
    print(f'{"model":<18}{"params (M)":>12}{"mult-adds (M)":>15}{"embedding":>11}{"ms/img":>9}')
    x = torch.randn(args.batch_size, 3, args.height, args.width, device=device)
    for name in OSNET_ARCHS:
        model = timm.create_model(name, num_classes=0).eval()
        params = count_params(model)
        macs = count_mult_adds(model, (args.height, args.width))
        model.to(device)
        with torch.inference_mode():
            model(x[:1])  # warm-up
            _synchronize(device)
            t0 = time.perf_counter()
            out = model(x)
            _synchronize(device)  # CUDA runs asynchronously: wait for the forward before reading the clock
            ms = (time.perf_counter() - t0) * 1000 / len(x)
        print(f'{name:<18}{params / 1e6:>12.3f}{macs / 1e6:>15.1f}{str(out.shape[1]) + "-d":>11}{ms:>9.1f}')


if __name__ == '__main__':
    main()
