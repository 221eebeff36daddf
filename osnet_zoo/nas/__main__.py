"""`python -m osnet_zoo.nas`: search where instance norm goes in OSNet (the OSNet-AIN search).

Each of the six omni-scale blocks picks one of four placements (plain, IN on the last 1x1 conv, IN after
the residual add, both); 4^6 = 4,096 architectures. A supernet holds four separate blocks per position,
mixed by eq. (8) of the paper (Gumbel-softmax over non-negative weights pi), trained jointly with pi. The
argmax of pi is the derived architecture, written as a genotype JSON that builds an ordinary OSNet. With
several seeds, `select` trains each seed's child with the cross-domain recipe and keeps the best on the
targets.

Examples::

    python -m osnet_zoo.nas                                # small search on synthetic data, CPU, minutes
    python -m osnet_zoo.nas search --preset paper --root ~/datasets --device cuda --precision bf16 --channels-last
    python -m osnet_zoo.nas search --preset quick --seeds 1 2 3 4 --output runs/nas4   # then:
    python -m osnet_zoo.nas select --output runs/nas4 --epochs 10
    torchrun --nproc_per_node 4 -m osnet_zoo.nas search --preset paper --root ~/datasets --device cuda
    python -m osnet_zoo.nas proof --device cuda --output runs/nas_proof    # mini Table 7 on synthetic data

Then, in Python::

    from osnet_zoo.nas import build_model_from_genotype
    model = build_model_from_genotype('runs/nas/genotype.json', width=1.0, num_classes=0)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, List, Optional

import torch

from osnet_zoo import cli
from osnet_zoo import distributed as du

from osnet_zoo.data.datasets.registry import dataset_reference
from osnet_zoo.engine.checkpoint import claim_run_folder
from osnet_zoo.engine.settings import add_options, resume_rule

from .proof import run_proof
from .search import (PAPER_CONFIG, QUICK_CONFIG, SEARCH_GROUPS, SEARCH_SETTINGS, Engine, StoppedEarly,
                     resolve_config, search)
from .select import select
from .supernet import SEARCH_MODES


# search settings that a resumed search may change (more epochs, seeds, the selection after it); any other
# must be the recorded one, as the checkpoints were trained with it
RESUMABLE = resume_rule(SEARCH_SETTINGS, 'changeable')

# the module docstring's command lines of each subcommand: its --help examples
_EXAMPLE_LINES = [line for line in __doc__.splitlines() if line.startswith(('    python', '    torch'))]
SEARCH_EXAMPLES = 'Examples::\n\n' + '\n'.join(line for line in _EXAMPLE_LINES
                                               if ' proof ' not in line and ' select ' not in line)
SELECT_EXAMPLES = 'Examples::\n\n' + '\n'.join(line for line in _EXAMPLE_LINES
                                               if ' select ' in line or ' --seeds ' in line)
PROOF_EXAMPLES = ('Examples::\n\n' + '\n'.join(line for line in _EXAMPLE_LINES if ' proof ' in line)
                  + '\n    # a smoke run on the CPU in a minute\n    python -m osnet_zoo.nas proof --device cpu '
                    '--train-ids 8 --test-ids 4 --search-epochs 1 --train-epochs 1 --max-steps-per-epoch 1 \\\n'
                    '        --model-width 0.25 --height 64 --width 32 --batch-size 8 --seeds 1 2 '
                    '--output runs/nas_proof_smoke')


def _engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('engineering')
    cli.add_device(g)
    cli.add_precision(g)
    g.add_argument('--channels-last', action='store_true', help='channels_last memory format')
    cli.add_workers(g)
    cli.add_threads(g)
    g.add_argument('--resume', action='store_true',
                   help='continue from the checkpoints in --output (finished seeds / models are kept)')
    g.add_argument('--stop-after-epoch', type=int, default=0,
                   help='stop each training after this many epochs in this invocation (checkpoint kept), for '
                        'time-limited sessions; run again with --resume to continue (0: never)')
    g.add_argument('--quiet', action='store_true', help='no progress bars or per-epoch lines')


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m osnet_zoo.nas {search,select,proof}``."""
    description, epilog = cli.describe(__doc__)
    p = cli.ArgumentParser(prog='python -m osnet_zoo.nas', description=description, epilog=epilog)
    sub = p.add_subparsers(dest='command', metavar='{search,select,proof}')
    _add_search_parser(sub)
    _add_select_parser(sub)
    _add_proof_parser(sub)
    return p


def _add_search_parser(sub: Any) -> None:
    """``search``: the preset and every option that overrides it."""
    s = sub.add_parser('search', help='search the IN placement (the default command)',
                       epilog=SEARCH_EXAMPLES,
                       description='Search the IN placement. --preset quick (default): synthetic data, width 0.25, '
                                   '128x64, batch 32, SGD lr 0.05, 6 epochs, temperature halved every epoch, '
                                   'one seed; CPU-sized. --preset paper: MSMT17 (all splits), '
                                   'width 1.0, 256x128, SGD lr 0.1, wd 5e-4, global batch 512, cosine, 120 epochs, '
                                   'temperature 10 halved every 20 epochs (floor 1), flip + colour jitter, seeds '
                                   '1 2 3 4, then the selection (see `select`) on market1501 and dukemtmcreid. Any '
                                   'option below overrides the preset.')
    s.add_argument('--preset', choices=['quick', 'paper'], default='quick', help='the settings to start from')
    s.add_argument('--overwrite', action='store_true',
                   help='when --output holds another run (a training, a search of other settings, or one with '
                        'checkpoints without --resume), move it aside to OUTPUT.replaced-<time> (default: refuse)')
    cli.add_output(s, 'runs/nas', 'output folder (genotype.json, probabilities.png, seeds.json)')
    groups = add_options(s, SEARCH_SETTINGS, SEARCH_GROUPS)  # one option per declared setting (search.py)
    groups[SEARCH_GROUPS[0]].add_argument(
        '--synthetic-ids', type=int, nargs=2, metavar=('TRAIN', 'TEST'),
        help='identities of generated synthetic sets (default 100 50); a root holds one size')
    _engine_args(s)


def _add_select_parser(sub: Any) -> None:
    """``select``: train each seed's child cross-domain and keep the best."""
    se = sub.add_parser('select', epilog=SELECT_EXAMPLES,
                        help='train each seed\'s child cross-domain and keep the best',
                        description='Read the search in --output (config.json, seed_<k>/genotype.json), train each '
                                    'seed\'s child from scratch on the search\'s sources with the cross-domain recipe '
                                    '(--recipe; default: the search\'s, cross_domain_msmt17 for the paper preset, '
                                    'synthetic for quick), test it on --targets, keep the best mean mAP. Writes '
                                    'selection.json, selection.md (the table of the seeds) and genotype.json.')
    cli.add_output(se, 'runs/nas', 'the search folder; the selection is written into it')
    se.add_argument('--root', help="datasets root (default: the search's, from its config.json)")
    se.add_argument('--recipe', help='training recipe of the children (name or YAML path)')
    se.add_argument('--targets', nargs='+', help='cross-domain test datasets (default: the search\'s)')
    se.add_argument('--epochs', type=int, help='training epochs of each child (default: the recipe\'s)')
    cli.add_batch_size(se, None, help='global batch of the children\'s training (default: the recipe\'s)')
    se.add_argument('--lr', type=float, help='learning rate (default: the recipe\'s)')
    se.add_argument('--max-steps-per-epoch', type=int, help='cap iterations per epoch (smoke tests)')
    _engine_args(se)


def _add_proof_parser(sub: Any) -> None:
    """``proof``: the mini Table 7 on synthetic data."""
    pr = sub.add_parser('proof', epilog=PROOF_EXAMPLES,
                        help='mini Table 7: search on synthetic domain A, train 4 models, test on domain B',
                        description='Mini Table 7 on synthetic data: search on domain A once per seed; train each '
                                    'seed\'s child and keep the best on B (the selection); train OSNet, OSNet-IBN and '
                                    'the published OSNet-AIN placement with the same budget; '
                                    'evaluate on domain B (other camera styles). Writes OUT/proof.json and '
                                    'OUT/proof.md. The defaults are sized to finish within 8 minutes on one H100 '
                                    '(an estimate; --stop-after-epoch and --resume split a run).')
    cli.add_output(pr, 'runs/nas_proof', 'output folder (proof.json, proof.md, the search and the trainings)')
    pr.add_argument('--train-ids', type=int, default=400, help='training identities per domain')
    pr.add_argument('--test-ids', type=int, default=100, help='test identities per domain')
    pr.add_argument('--search-epochs', type=int, default=30, help='epochs of the search')
    pr.add_argument('--train-epochs', type=int, default=30, help='epochs of each of the four trainings')
    cli.add_batch_size(pr, 128)
    pr.add_argument('--lr', type=float, default=0.1, help='learning rate')
    pr.add_argument('--model-width', type=float, default=1.0, help='OSNet width multiplier beta')
    pr.add_argument('--height', type=int, default=128, help='image height')
    pr.add_argument('--width', type=int, default=64, help='image width')
    pr.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3, 4],
                    help='one search per seed; with several, the child with the best mAP on domain B after training '
                         'is kept, as in the paper (B is then not unseen by the selection: one seed keeps it clean)')
    pr.add_argument('--mode', choices=SEARCH_MODES, default='all', help="the search's mode (see search --help)")
    pr.add_argument('--max-steps-per-epoch', type=int, default=0, help='cap iterations per epoch (smoke tests)')
    _engine_args(pr)


def _engine(args: argparse.Namespace) -> Engine:
    device = du.init_distributed(args.device)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    return Engine(device=device, precision=args.precision, channels_last=args.channels_last,
                  workers=cli.resolve_workers(args.workers, args.device), resume=args.resume, quiet=args.quiet,
                  stop_after_epoch=args.stop_after_epoch)


def main(argv: Optional[List[str]] = None) -> None:
    """Run ``python -m osnet_zoo.nas``; options without a subcommand mean ``search``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ('search', 'select', 'proof', '-h', '--help'):
        argv = ['search'] + argv  # `python -m osnet_zoo.nas [options]` means a search
    args = get_args_parser().parse_args(argv)
    engine = _engine(args)
    _, line = cli.set_up_threads(args.threads, engine.workers)
    if du.is_main_process() and not args.quiet:  # the start line
        print(line)
    try:
        _run(args, engine)
    except StoppedEarly as e:
        if du.is_main_process():
            print(e)
    finally:
        du.cleanup()


def _run(args: argparse.Namespace, engine: Engine) -> None:
    if args.command == 'proof':
        run_proof(Path(args.output), engine, train_ids=args.train_ids, test_ids=args.test_ids,
                  search_epochs=args.search_epochs, train_epochs=args.train_epochs, batch_size=args.batch_size,
                  lr=args.lr, model_width=args.model_width, height=args.height, width=args.width,
                  seeds=args.seeds, mode=args.mode, max_steps_per_epoch=args.max_steps_per_epoch)
        return
    if args.command == 'select':
        targets = [dataset_reference(n) for n in args.targets] if args.targets else args.targets
        result = select(Path(args.output), engine, recipe=args.recipe, root=args.root, targets=targets,
                        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        max_steps_per_epoch=args.max_steps_per_epoch)
        if du.is_main_process():
            print(Path(args.output, 'selection.md').read_text(), end='')
            print(f"kept seed {result['kept_seed']}: {' / '.join(result['block_norms'])}; wrote {args.output}/"
                  'genotype.json, selection.json, selection.md')
        return
    base = PAPER_CONFIG if args.preset == 'paper' else QUICK_CONFIG
    keys = [k for k in base if hasattr(args, k)]
    overrides = {k: getattr(args, k) for k in keys}
    if overrides.get('targets') == ['none']:
        overrides['targets'] = []
    for key in ('sources', 'targets'):  # a listing or folder by its absolute path, as train records it
        if overrides.get(key):
            overrides[key] = [dataset_reference(n) for n in overrides[key]]
    if args.synthetic_ids:
        overrides['dataset_options'] = dict(num_train_ids=args.synthetic_ids[0], num_test_ids=args.synthetic_ids[1])
    cfg = resolve_config(base, **overrides)
    claim_run_folder(args.output, 'nas search', {k: v for k, v in cfg.items() if k != 'root'}, resume=engine.resume,
                     overwrite=args.overwrite, resumable=RESUMABLE, writer=du.is_main_process())
    du.barrier()  # the folder is claimed (or moved aside) before any rank writes into it
    found = search(cfg, Path(args.output), engine)
    if du.is_main_process():
        for g in found:
            print(f"seed {g['seed']}: {' / '.join(g['block_norms'])}")
    if cfg['select']:
        result = select(Path(args.output), engine)
        if du.is_main_process():
            print(Path(args.output, 'selection.md').read_text(), end='')
            print(f"kept seed {result['kept_seed']}; wrote {args.output}/genotype.json, selection.md")
    elif du.is_main_process():
        print(f'wrote {args.output}/genotype.json, {args.output}/probabilities.png' if len(found) == 1 else
              f'wrote {args.output}/seed_*/genotype.json; choose among them with '
              f'`python -m osnet_zoo.nas select --output {args.output}`')


if __name__ == '__main__':
    sys.exit(cli.run(main))
