"""`python -m osnet_zoo.export`: an OSNet embedding model as ONNX, TorchScript, a torchreid-layout ``.pt`` (the
file tracking libraries load) or TFLite, checked, with our contract and a tracker metadata JSON beside it.

Only the command line: the CLI of :mod:`osnet_zoo.inference.export` (``export_model``, ``check_export``), which
does the work.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from . import cli
from .inference import DEFAULT_MODEL, apply_run_record
from .inference.export import (
    EXPORT_FORMATS, ExportCheckError, contract_path, export_model, metadata_path,
)
from .inference.quantize import (
    CALIBRATION_SIZE, DEFAULT_MAX_RANK1_DROP, Int8AccuracyError, export_int8,
)

__all__ = ['main', 'get_args_parser', 'ENDING']


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m osnet_zoo.export``."""
    parser = cli.ArgumentParser(
        prog='python -m osnet_zoo.export',
        description='Export an OSNet embedding model and check the file: ONNX (onnxruntime), TorchScript '
                    '(torch.jit.load), OpenVINO (its CPU plugin, fp32) and TFLite (the LiteRT interpreter) must match '
                    'PyTorch (max abs diff <= 1e-4 in fp32); a torchreid .pt must reload bit-identically. Beside the '
                    'file: <file>.json (input/output names, preprocessing, check) and <file>.metadata.json '
                    '(architecture, input size, mean/std, channel order, output dim, normalised or not, and the keys '
                    'boxmot reads: model_name, num_classes, preprocess, model_kwargs.img_size).\n\n'
                    'Files are written into the --output folder as <architecture>_<tag>.<ext> (.onnx, .torchscript, '
                    '.pt, .tflite): boxmot picks its backend by the suffix, and without the metadata file it tells '
                    'the architecture from the file name; an --output ending in the format\'s suffix names the file '
                    'itself. A training run (--checkpoint runs/osnet) gives its architecture and the input size and '
                    'mean/std it was trained with.\n\n'
                    'Export writes a device-independent file: it builds, traces and checks on the CPU from generated '
                    'inputs, so --device, --root and --workers do not apply.',
        epilog='examples:\n'
               '  # for a tracker (boxmot track --reid runs/export/osnet_x0_25_msmt17_combineall.pt)\n'
               '  python -m osnet_zoo.export --model osnet_x0_25.msmt17_combineall --format torchreid\n'
               '  # ONNX with a dynamic batch -> osnet_x0_25_msmt17_combineall.onnx\n'
               '  python -m osnet_zoo.export --model osnet_x0_25.msmt17_combineall --format onnx\n'
               '  # a fixed batch of 8\n'
               '  python -m osnet_zoo.export --model osnet_x0_25.msmt17_combineall --fixed-batch --batch-size 8\n'
               '  # your own checkpoint -> osnet_x1_0_market.torchscript\n'
               '  python -m osnet_zoo.export --model osnet_x1_0 --checkpoint osnet_x1_0_market.pth \\\n'
               '      --format torchscript\n'
               '  # OpenVINO -> runs/export/osnet_x0_25_msmt17_combineall_openvino_model/ (boxmot --reid takes it)\n'
               '  python -m osnet_zoo.export --model osnet_x0_25.msmt17_combineall --format openvino\n'
               '  # TFLite for LiteRT (boxmot track --reid runs/export/osnet_x0_25_msmt17_combineall.tflite)\n'
               '  python -m osnet_zoo.export --model osnet_x0_25.msmt17_combineall --format tflite\n'
               '  # a training run -> runs/export/osnet_x0_25_trained.onnx (input size from the run)\n'
               '  python -m osnet_zoo.export --checkpoint runs/osnet\n'
               '  # INT8 for the CPU, calibrated on the run\'s training images, refused if Rank-1 drops > 1 point\n'
               '  python -m osnet_zoo.export --checkpoint runs/osnet --int8\n'
               '  # INT8 of pretrained weights, calibrated on your own crops\n'
               '  python -m osnet_zoo.export --model osnet_x0_25.msmt17_combineall --int8 --calibration crops/\n'
               '  # INT8 OpenVINO IR (NNCF) -> runs/export/osnet_x0_25_trained_int8_openvino_model/\n'
               '  python -m osnet_zoo.export --checkpoint runs/osnet --int8 --format openvino')
    cli.add_model(parser, default=None,
                  help='timm model name; with a tag (osnet_x1_0.msmt17_combineall) for pretrained weights '
                       f"(default: a training run's own architecture, else {DEFAULT_MODEL})")
    parser.add_argument('--format', default='onnx', choices=list(EXPORT_FORMATS),
                        help='onnx, torchscript (.torchscript), torchreid (a .pt holding the state_dict in the '
                             'reference key layout and its model_name), openvino (a folder <name>_openvino_model '
                             'with the fp32 IR <name>.xml / .bin: pip install "osnet-zoo[openvino]") or tflite '
                             '(.tflite, NCHW input like the others, checked with the LiteRT interpreter: pip install '
                             '"osnet-zoo[tflite]"); default: onnx')
    cli.add_output(parser, 'runs/export', 'output folder, or a file name ending in .onnx / .torchscript / .pt / '
                                          '.tflite (OpenVINO: a folder name ending in _openvino_model)')
    parser.add_argument('--checkpoint', default=None,
                        help='local checkpoint to load instead of pretrained weights, or a training run (its folder, '
                             'final/ or final/model.safetensors)')
    parser.add_argument('--no-pretrained', action='store_true', help='random weights (for testing only)')
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument('--fixed-batch', action='store_true',
                       help='ONNX: a fixed batch dimension of --batch-size (default: a dynamic batch)')
    batch.add_argument('--dynamic-batch', action='store_true', help=argparse.SUPPRESS)  # the default now
    cli.add_precision(parser, choices=('fp32', 'fp16'), help='fp32, or fp16 weights, input and output')
    cli.add_batch_size(parser, 1, help='batch size of the example (and of a --fixed-batch export)')
    parser.add_argument('--normalize', action='store_true', help='L2-normalise the features inside the graph')
    parser.add_argument('--with-classifier', action='store_true',
                        help='torchreid: keep the classifier (and write num_classes); trackers only need the '
                             'embedding')
    parser.add_argument('--opset', type=int, default=17,
                        help='ONNX opset (default 17; OpenVINO converts from that ONNX graph)')
    parser.add_argument('--no-fold-bn', action='store_true', help='keep BatchNorm layers separate')
    add_int8_options(parser)
    return parser


def add_int8_options(parser: argparse.ArgumentParser) -> None:
    """``--int8`` and its calibration and accuracy options."""
    group = parser.add_argument_group(
        'INT8 (post-training static quantization for the CPU; docs/deployment.md)')
    group.add_argument('--int8', action='store_true',
                       help='write an INT8 model instead of fp32, calibrated on --calibration: --format onnx: a QDQ '
                            '.onnx (onnxruntime\'s quantizer); --format openvino: an IR folder (NNCF; pip install '
                            '"osnet-zoo[int8]"). A training run is evaluated before and after on its own evaluation '
                            'split')
    cli.add_calibration(group, CALIBRATION_SIZE)
    group.add_argument('--max-rank1-drop', type=float, default=DEFAULT_MAX_RANK1_DROP,
                       help='refuse to write an INT8 model whose Rank-1 on the run\'s evaluation split is more than '
                            f'this many points below fp32 (default: {DEFAULT_MAX_RANK1_DROP:g})')


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``python -m osnet_zoo.export``; returns 0. A failed check raises ExportCheckError, a bad input its own
    error: :func:`osnet_zoo.cli.run` prints either as one line and exits with 1 or 2 (:data:`ENDING`)."""
    args = get_args_parser().parse_args(argv)
    apply_run_record(args, default_model=DEFAULT_MODEL)
    if args.int8:
        return _main_int8(args)
    contract = export_model(
        args.model, args.output, fmt=args.format, dynamic_batch=not args.fixed_batch,
        half=args.precision == 'fp16', batch_size=args.batch_size, normalize=args.normalize,
        pretrained=not args.no_pretrained, checkpoint_path=args.checkpoint, opset=args.opset,
        fold_bn=not args.no_fold_bn, with_classifier=args.with_classifier)
    check = contract['check']
    out = Path(args.output)
    out = out if out.is_file() or out.name == contract['file'] else out / contract['file']
    print(f"Wrote {out} ({args.format}, {contract['architecture']}, input {contract['input']['shape']} "
          f"{contract['input']['dtype']}, output {contract['output']['shape']})")
    if args.format == 'torchreid':
        print(f"Check: reloaded through {check['runtime']}: {check['tensors_checked']} tensors bit-identical, "
              f"embedding max abs diff {check['max_abs_diff']:.3g}: PASSED")
    else:
        print(f"Check vs PyTorch ({check['runtime']}, batch sizes {check['batch_sizes']}): max abs diff "
              f"{check['max_abs_diff']:.3g} (outputs up to {check['max_abs_reference']:.3g}; tolerance "
              f"{check['tolerance']:g}, {check['tolerance_kind']}): PASSED")
    print(f'Contract: {contract_path(out)}; tracker metadata: {metadata_path(out)}')
    return 0


def _main_int8(args: argparse.Namespace) -> int:
    """``--int8``: quantize, report the accuracy cost, write (or refuse)."""
    if args.format not in ('onnx', 'openvino'):
        raise ValueError(f'--int8 writes --format onnx (onnxruntime) or openvino (NNCF), not --format {args.format}.')
    if args.precision != 'fp32' or args.fixed_batch or args.normalize or args.no_fold_bn:
        raise ValueError('--int8 quantizes the fp32 export (dynamic batch, BN folded, unnormalised): drop '
                         '--precision / --fixed-batch / --normalize / --no-fold-bn.')
    out, contract = export_int8(args.model, args.output, calibration=args.calibration,
                           calibration_size=args.calibration_size, fmt=args.format,
                           max_rank1_drop=args.max_rank1_drop, pretrained=not args.no_pretrained,
                           checkpoint_path=args.checkpoint)
    quantization, accuracy = contract['quantization'], contract['accuracy']
    print(f"Wrote {out} (INT8, {quantization['engine']}, {contract['architecture']}, calibrated on "
          f"{quantization['calibration_images']} images)")
    for target, v in (accuracy.get('targets') or {}).items():
        print(f"Accuracy on {target} ({v['query']} queries, {v['gallery']} gallery): Rank-1 {v['fp32']['rank1']:.1f}% "
              f"-> {v['int8']['rank1']:.1f}%, mAP {v['fp32']['mAP']:.1f}% -> {v['int8']['mAP']:.1f}% (fp32 -> INT8)")
    cosine = accuracy['cosine_on_calibration']
    print(f"Cosine to fp32 on the {cosine['images']} calibration crops: mean {cosine['mean']:.5f}, min "
          f"{cosine['min']:.5f}")
    if accuracy['rank1_drop'] is None:
        print(f"Not measured: {accuracy['not_measured']}.")
    else:
        print(f"Rank-1 drop {accuracy['rank1_drop']:.2f} points <= --max-rank1-drop {accuracy['max_rank1_drop']:g}: "
              'PASSED')
    print(f'Contract (with the accuracy report): {contract_path(out)}; tracker metadata: {metadata_path(out)}')
    return 0


# exit status 1: the exported file does not match PyTorch (the files are kept, check.passed false), or the INT8
# model loses more Rank-1 than --max-rank1-drop (nothing written); 2: a bad input
ENDING = dict(exit_codes={ExportCheckError: 1, Int8AccuracyError: 1}, error_status=2)

if __name__ == '__main__':
    sys.exit(cli.run(main, **ENDING))
