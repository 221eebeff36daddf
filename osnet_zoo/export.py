"""`python -m osnet_zoo.export`: an OSNet embedding model as ONNX or TorchScript, checked against PyTorch, with
its input/output and preprocessing contract beside it (the library: ``osnet_zoo.inference.export``)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import cli
from .inference.export import ExportCheckError, export_model

__all__ = ['main', 'get_args_parser', 'export_model', 'ExportCheckError']


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m osnet_zoo.export',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Export an OSNet embedding model to ONNX or TorchScript, check the file against PyTorch '
                    '(onnxruntime / torch.jit.load; max abs diff <= 1e-4 in fp32) and write the input/output '
                    'names and preprocessing contract to <out>.json beside it.',
        epilog='examples:\n'
               '  python -m osnet_zoo.export --model osnet_x0_25.msmt17_combineall --format onnx --dynamic-batch\n'
               '  python -m osnet_zoo.export --model osnet_x1_0 --checkpoint osnet_x1_0_market.pth \\\n'
               '      --format torchscript --output osnet_x1_0_market.pt')
    cli.add_model(parser)
    parser.add_argument('--format', default='onnx', choices=['onnx', 'torchscript'])
    cli.add_output(parser, None, 'output file (default: <model>.onnx / <model>.pt)')
    parser.add_argument('--checkpoint', default=None, help='local checkpoint to load instead of pretrained weights')
    parser.add_argument('--no-pretrained', action='store_true', help='random weights (for testing only)')
    parser.add_argument('--dynamic-batch', action='store_true', help='ONNX: a variable batch dimension')
    cli.add_precision(parser, choices=('fp32', 'fp16'), help='fp32, or fp16 weights, input and output')
    cli.add_batch_size(parser, 1, help='(fixed) batch size of the export')
    parser.add_argument('--normalize', action='store_true', help='L2-normalise the features inside the graph')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset (default 17)')
    parser.add_argument('--no-fold-bn', action='store_true', help='keep BatchNorm layers separate')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    out = args.output or (args.model.replace('/', '_') + ('.onnx' if args.format == 'onnx' else '.pt'))
    try:
        contract = export_model(
            args.model, out, fmt=args.format, dynamic_batch=args.dynamic_batch, half=args.precision == 'fp16',
            batch_size=args.batch_size, normalize=args.normalize, pretrained=not args.no_pretrained,
            checkpoint_path=args.checkpoint, opset=args.opset, fold_bn=not args.no_fold_bn)
    except ExportCheckError as e:
        print(f'CHECK FAILED: {e}', file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    check = contract['check']
    print(f"Wrote {out} ({args.format}, input {contract['input']['name']} {contract['input']['shape']} "
          f"{contract['input']['dtype']}, output {contract['output']['name']} {contract['output']['shape']})")
    print(f"Check vs PyTorch ({check['runtime']}, batch sizes {check['batch_sizes']}): max abs diff "
          f"{check['max_abs_diff']:.3g} (outputs up to {check['max_abs_reference']:.3g}; tolerance "
          f"{check['tolerance']:g}, {check['tolerance_kind']}): PASSED")
    print(f'Contract: {out}.json')
    return 0


if __name__ == '__main__':
    sys.exit(main())
