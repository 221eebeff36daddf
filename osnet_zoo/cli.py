"""The command-line vocabulary shared by every ``python -m osnet_zoo.<verb>``.

Every verb names the same things the same way: ``--output``, ``--device``, ``--precision {fp32,bf16,fp16}``,
``--batch-size``, ``--workers``, ``--model``, ``--root``; options of the form KEY=VALUE are read by
:func:`parse_key_values`.

:func:`run` is the entry point of each ``__main__``: a bad input (a missing file, an unknown dataset, a
corrupt checkpoint) is printed as one ``error: ...`` line with a non-zero exit status, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import timm
import torch
import yaml

from . import threads as cpu_threads
from .precision import INFERENCE_PRECISIONS as _INFERENCE, PRECISIONS as _DTYPES

__all__ = ['PRECISIONS', 'INFERENCE_PRECISIONS', 'add_calibration', 'DEFAULT_DATA_ROOT', 'HelpFormatter',
           'ArgumentParser', 'plain_text', 'describe',
           'default_device', 'add_output', 'add_device', 'add_precision', 'add_batch_size', 'add_workers', 'add_threads',
           'set_up_threads', 'add_model', 'add_root', 'parse_key_values', 'resolve_workers',
           'check_at_least', 'check_osnet', 'error_message', 'format_table', 'run']

PRECISIONS = tuple(_DTYPES)  # the --precision names of osnet_zoo/precision.py, the one table
INFERENCE_PRECISIONS = _INFERENCE  # and int8, for the inference commands (extract, evaluate)
# Where datasets live when --root is not given ($OSNET_ZOO_DATA overrides it); synthetic sets are generated here.
DEFAULT_DATA_ROOT = os.environ.get('OSNET_ZOO_DATA', '~/.cache/osnet_zoo/data')
# Errors that mean "the input is wrong" (the message names the thing): printed as one line by run().
USER_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError,
               KeyError, RuntimeError, OSError)


# reST markup of the docstrings the verbs' --help is built from: roles (:mod:`x`, :func:`~a.b`), literals (``x``)
_ROLE = re.compile(r':(?:mod|func|class|meth|attr|data|obj|exc):`~?([^`]+)`')
_LITERAL = re.compile(r'``(.+?)``')


def plain_text(text: str) -> str:
    """A docstring passage as the plain text ``--help`` prints: roles and double backticks dropped (their text
    kept), a paragraph ending in ``::`` ends in ``:`` (a lone ``Examples::`` heading is ``examples:``, argparse's
    heading style), and the literal block under it (the examples) indented by two spaces, directly under its
    heading, each line as written."""
    lines = _LITERAL.sub(r'\1', _ROLE.sub(r'\1', text)).splitlines()
    out: List[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.rstrip().endswith('::'):
            out.append(line)
            continue
        heading = line.rstrip()[:-2].rstrip()
        out.append('examples:' if heading.strip() == 'Examples' else heading + ':')
        indent = len(line) - len(line.lstrip())
        block: List[str] = []
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():  # the blank line after the block stays, as a paragraph break
            block.pop()
            i -= 1
        block = textwrap.dedent('\n'.join(block)).strip('\n').splitlines()
        out.extend(' ' * (indent + 2) + b if b.strip() else '' for b in block)
    return '\n'.join(out)


def describe(doc: str) -> Tuple[str, str]:
    """A verb's module docstring as its parser's (description, epilog): the first paragraph, without a leading
    "`python -m osnet_zoo.<verb>`: " (the usage line names the command), and the rest as written;
    :class:`HelpFormatter` prints both as plain text."""
    first, _, rest = doc.strip().partition('\n\n')
    first = re.sub(r'^`python -m [\w.]+`:\s*', '', first)
    return first[:1].upper() + first[1:], rest


class HelpFormatter(argparse.HelpFormatter):
    """The one --help style of every verb. A description or epilog is printed as plain text (:func:`plain_text`):
    a paragraph with line breaks as written (the examples, line by line), a one-line paragraph wrapped to the
    terminal; an option's default appended to its help once, only where the help does not state it already
    (the shared helpers below state theirs)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = re.split(r'\n[ \t]*\n', plain_text(text).strip('\n'))
        return '\n\n'.join(
            super(HelpFormatter, self)._fill_text(p, width, indent) if '\n' not in p and not p[:1].isspace()
            else '\n'.join(indent + line for line in p.splitlines()) for p in paragraphs)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ''
        if ('default' in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings
                or isinstance(action.default, bool) or action.default in ([], ())):
            return text
        return text + (' ' if text else '') + '(default: %(default)s)'


class ArgumentParser(argparse.ArgumentParser):
    """The parser of every verb: :class:`HelpFormatter` unless told otherwise, for its subcommands' parsers too
    (``add_subparsers`` makes them of this class)."""

    def __init__(self, *args: Any, formatter_class: type = HelpFormatter, **kwargs: Any) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def default_device() -> str:
    """'cuda' when a GPU is visible, else 'cpu'."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def add_output(parser: argparse.ArgumentParser, default: Optional[str], help: str, required: bool = False) -> None:
    """``--output``; a ``default`` other than None is shown in the help."""
    parser.add_argument('--output', default=default, required=required,
                        help=help + ('' if default is None else f' (default: {default})'))


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device`` (cpu, cuda, cuda:1, ...), CUDA when available by default."""
    parser.add_argument('--device', default=default_device(),
                        help='cpu, cuda, cuda:1, ... (default: cuda when a GPU is visible, else cpu)')


def add_precision(parser: argparse.ArgumentParser, choices: Sequence[str] = PRECISIONS, default: str = 'fp32',
                  help: str = 'numeric precision: fp32, or bf16 / fp16 mixed precision') -> None:
    """``--precision {fp32,bf16,fp16}``."""
    parser.add_argument('--precision', default=default, choices=list(choices), help=f'{help} (default: {default})')


def add_calibration(parser: argparse.ArgumentParser, default_size: int) -> None:
    """``--calibration`` and ``--calibration-size``: the person crops that calibrate an INT8 model."""
    parser.add_argument('--calibration', default=None,
                        help='INT8: person crops to calibrate on, a folder (searched recursively), a glob pattern or a '
                             "CSV listing (default: a training run's own training images)")
    parser.add_argument('--calibration-size', type=int, default=default_size,
                        help=f'INT8: calibration images, spread evenly over the listing (default: {default_size})')


def add_batch_size(parser: argparse.ArgumentParser, default: Optional[int], help: str = 'images per batch') -> None:
    """``--batch-size`` (images per batch); a ``default`` other than None is shown in the help."""
    parser.add_argument('--batch-size', type=int, default=default,
                        help=help + ('' if default is None else f' (default: {default})'))


def add_workers(parser: argparse.ArgumentParser, default: Optional[int] = None,
                help: str = 'data-loading worker processes (default: 0 on the CPU, where decoding small crops is '
                            'cheap and extra processes compete with the model for cores; 8 on a GPU)') -> None:
    """``--workers``; the default None lets :func:`resolve_workers` pick by device."""
    parser.add_argument('--workers', type=int, default=default, help=help)


def resolve_workers(workers: Optional[int], device: str) -> int:
    """The ``--workers`` default: 0 on the CPU, up to 8 on a GPU."""
    if workers is not None:
        if workers < 0:
            raise ValueError(f'--workers must be >= 0, got {workers}.')
        return workers
    return 0 if str(device).startswith('cpu') else min(8, os.cpu_count() or 1)


def add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads`` (CPU compute threads) and ``--spin`` (waiting threads busy-wait, the old behaviour)."""
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU compute threads (default: the CPUs this process may use, from its affinity and '
                             'cgroup quota, less the loader workers; OMP_NUM_THREADS, when set, wins)')
    parser.add_argument('--spin', action='store_true',
                        help="waiting threads busy-wait (OpenMP's default wait policy, onnxruntime's spinning): the "
                             'old behaviour, lowest latency on an idle machine, far slower beside other busy '
                             'processes (default: they sleep; docs/deployment.md)')


def set_up_threads(threads: Optional[int], workers: int = 0, worker_kind: str = 'loader workers') -> Tuple[int, str]:
    """Size this process's torch CPU pool (``--threads``, else :func:`osnet_zoo.threads.compute_threads`: the
    CPU budget less ``workers``); returns the count and the start line saying what was decided, to print once."""
    check_at_least(threads=(threads, 1))
    count = cpu_threads.compute_threads(torch.get_num_threads(), workers, threads)
    torch.set_num_threads(count)
    return count, cpu_threads.describe(count, workers, worker_kind)


def parse_key_values(items: Union[Sequence[str], Mapping[str, Any], None], option: str) -> Dict[str, Any]:
    """``['num_streams=1', 'direction=b2a']`` -> ``{'num_streams': 1, 'direction': 'b2a'}``; each value is
    read as a YAML scalar (``1`` an int, ``true`` a bool, ``[1, 2]`` a list, anything else a string).
    A mapping (from a recipe) is returned as a dict; an item without ``=`` is an error naming ``option``."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    if isinstance(items, str):
        items = [items]
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition('=')
        if not sep or not key.strip():
            raise ValueError(f'{option}: expected KEY=VALUE, got {item!r}')
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ''
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """``rows`` under ``header`` as aligned plain-text columns (two spaces apart, a dashed rule under the header)."""
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(len(header))]
    line = lambda r: '  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return '\n'.join([line(header), line(['-' * w for w in widths])] + [line(r) for r in rows])


def check_at_least(**options: Tuple[Optional[int], int]) -> None:
    """Refuse an option below its lowest sensible value, naming it: ``check_at_least(batch_size=(args.batch_size,
    1))`` gives ``--batch-size must be >= 1, got 0``. A value of None (not given) passes."""
    for name, (value, low) in options.items():
        if value is not None and value < low:
            raise ValueError(f'--{name.replace("_", "-")} must be >= {low}, got {value}.')


def add_model(parser: argparse.ArgumentParser, default: Optional[str] = 'osnet_x1_0', required: bool = False,
              help: str = 'timm model name (osnet_x1_0, osnet_ain_x1_0, ...), with a weights tag '
                          '(osnet_x1_0.msmt17_combineall) for pretrained weights') -> None:
    """``--model``: a timm model name, with a weights tag (``osnet_x1_0.msmt17_combineall``) for
    pretrained weights."""
    parser.add_argument('--model', default=default, required=required,
                        help=help + ('' if default is None else f' (default: {default})'))


def add_root(parser: argparse.ArgumentParser) -> None:
    """``--root``: the datasets root (default None: ``$OSNET_ZOO_DATA`` or ``~/.cache/osnet_zoo/data``)."""
    parser.add_argument('--root', default=None,
                        help='datasets root, each dataset in its released layout; synthetic sets are generated '
                             'there (default: $OSNET_ZOO_DATA or ~/.cache/osnet_zoo/data)')


def check_osnet(model: Optional[str], why: str) -> str:
    """``--model`` names an OSNet (``osnet_*``, with or without a weights tag) and is returned; otherwise a
    ValueError saying ``why`` it must, with the registered OSNets. None (no --model, no training run to take the
    architecture from) is refused the same way."""
    names = ', '.join(timm.list_models('osnet*'))
    if not model:
        raise ValueError(f'give --model (an OSNet: {names}) or a training run as --checkpoint; {why}')
    if model.split('.')[0] not in timm.list_models('osnet*'):
        raise ValueError(f'unknown model {model!r}: {why}; OSNet models: {names}')
    return model


def error_message(exc: BaseException) -> str:
    """One readable line for an exception (a KeyError's repr quotes are dropped; an error raised in a DataLoader
    worker, whose message is the worker's whole traceback, is its last line)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    text = str(exc).strip() or type(exc).__name__
    if 'Original Traceback' in text:
        text = text.splitlines()[-1].split('Error: ', 1)[-1]
    return ' '.join(text.split())


def run(main: Callable[[], Any], exit_codes: Optional[Dict[type, int]] = None, error_status: int = 1,
        same_on_every_rank: bool = False) -> int:
    """The one ending of every ``__main__``: ``sys.exit(cli.run(main))``.

    Runs ``main`` and turns a bad input into one ``error: <message>`` line on stderr (never a traceback) and an
    exit status: the first type of ``exit_codes`` the exception is an instance of gives it (a
    ``FloatingPointError``, a diverged training, is 2), any other user error ``error_status``. An int returned
    by ``main`` is the exit status; anything else is 0. ``same_on_every_rank``: under torchrun every rank
    fails with the same error (:func:`osnet_zoo.distributed.fail_together`), so only rank 0 prints it.
    """
    codes = {FloatingPointError: 2, **(exit_codes or {})}
    try:
        result = main()
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    except (*codes, *USER_ERRORS) as e:
        if not same_on_every_rank or os.environ.get('RANK', '0') == '0':
            print(f'error: {error_message(e)}', file=sys.stderr)
        return next((code for kind, code in codes.items() if isinstance(e, kind)), error_status)
    return result if isinstance(result, int) else 0
