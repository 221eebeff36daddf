"""The command lines: `python -m osnet_zoo` in a real subprocess, and every verb's parser: the shared
vocabulary where it applies, examples in every --help, each default shown once."""
import argparse
import itertools
import json
import re
from pathlib import Path

import pytest

from conftest import run_module, run_python


def test_summary_command():
    out = run_module('osnet_zoo', '--batch-size', '2', '--height', '128', '--width', '64', '--runs', '3',
                     check=True).stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith('osnet_')}
    assert len(rows) == 9
    assert rows['osnet_x1_0'][1] == '2.170' and rows['osnet_x1_0'][2] == '244.9'  # β=1 at 128x64
    assert rows['osnet_x0_25'][3] == '512-d'
    assert all(float(r[4]) > 0 and r[5].endswith('%') for r in rows.values())  # median ms/img, spread
    assert 'median of 3 run(s) per model after a warm-up' in out


def test_summary_says_when_the_timings_are_noise():
    from osnet_zoo.__main__ import noise_warning
    quiet = {'osnet_x1_0': [10.0, 10.4, 10.2], 'osnet_x0_5': [4.0, 4.1, 4.05]}
    assert noise_warning(quiet, load_average=0.5, cpus=2) is None
    noisy = {**quiet, 'osnet_x0_5': [4.0, 12.0, 4.1]}  # one slow moment: 195% of the median
    assert 'the runs of osnet_x0_5 varied by 195%' in noise_warning(noisy, load_average=0.5, cpus=2)
    assert 'load average 7.5 on 2 CPUs' in noise_warning(quiet, load_average=7.5, cpus=2)
    assert noise_warning({'osnet_x1_0': [10.0]}, load_average=None, cpus=2) is None  # one run: no spread


def test_help():
    out = run_module('osnet_zoo', '--help', check=True)
    assert '--batch-size' in out.stdout and 'usage: python -m osnet_zoo' in out.stdout


VERBS = ['osnet_zoo.train.__main__', 'osnet_zoo.evaluate', 'osnet_zoo.extract', 'osnet_zoo.export',
         'osnet_zoo.nas.__main__', 'osnet_zoo.weights.__main__', 'osnet_zoo.visualize', 'osnet_zoo.__main__',
         'osnet_zoo.data.__main__', 'osnet_zoo.verify', 'osnet_zoo.search']


def test_every_cli_has_get_args_parser_and_the_shared_vocabulary():
    """One vocabulary: the same option names wherever a verb has that notion, and no old spelling in --help."""
    import importlib

    for name in VERBS:
        parser = importlib.import_module(name).get_args_parser()
        text = parser.format_help()
        for sub in getattr(parser, '_subparsers', None)._group_actions if parser._subparsers else []:
            for choice in sub.choices.values():
                text += choice.format_help()
        for old in ('--out ', '--amp', '--half', '--arch '):
            assert old not in text, f'{name} --help still shows {old.strip()}'
        options = set(parser._option_string_actions)
        for sub in (parser._subparsers._group_actions if parser._subparsers else []):
            for choice in sub.choices.values():
                options |= set(choice._option_string_actions)
        if name != 'osnet_zoo.__main__':
            assert '--model' in options or '--output' in options, name


def test_every_cli_ends_with_cli_run():
    """One CLI ending: every verb's ``if __name__ == '__main__':`` is ``sys.exit(cli.run(main, ...))``, and no verb
    prints its own ``error:`` line or exits with a message of its own (``SystemExit('error: ...')``)."""
    import ast
    import importlib.util

    for name in VERBS + ['osnet_zoo.train.protocol']:
        source = Path(importlib.util.find_spec(name).origin).read_text()
        guards = [n for n in ast.parse(source).body if isinstance(n, ast.If) and '__name__' in ast.unparse(n.test)]
        assert len(guards) == 1 and len(guards[0].body) == 1, name
        assert ast.unparse(guards[0].body[0]).startswith('sys.exit(cli.run(main'), name
        assert "print(f'error" not in source and 'SystemExit(' not in source, name


def test_run_prints_on_rank_zero_only_when_every_rank_has_the_error(capsys, monkeypatch):
    """Under torchrun (RANK set) a verb whose ranks fail together prints the one error line on rank 0 only; the
    status is the same on every rank (error_status, or exit_codes' for that type)."""
    from osnet_zoo import cli

    def bad():
        raise ValueError('--batch-size must be >= 1, got 0.')

    for rank, printed in (('0', True), ('1', False)):
        monkeypatch.setenv('RANK', rank)
        assert cli.run(bad, error_status=2, same_on_every_rank=True) == 2
        assert (capsys.readouterr().err == 'error: --batch-size must be >= 1, got 0.\n') is printed
        assert cli.run(bad, exit_codes={ValueError: 4}) == 4 and capsys.readouterr().err.startswith('error: ')


def test_only_the_current_spellings_parse(capsys):
    """The spellings that were never released (--arch, --amp, --half) are refused by the parser."""
    from osnet_zoo.export import get_args_parser as export_parser
    from osnet_zoo.train.__main__ import get_args_parser as train_parser

    args = train_parser().parse_args(['--model', 'osnet_x0_5', '--precision', 'bf16', '--output', 'x'])
    assert (args.model, args.precision, args.output) == ('osnet_x0_5', 'bf16', 'x')
    for parser, old in ((train_parser, ['--arch', 'osnet_x0_5']), (train_parser, ['--amp', 'bf16']),
                        (export_parser, ['--half'])):
        with pytest.raises(SystemExit):
            parser().parse_args(old)
        assert old[0] in capsys.readouterr().err


def test_key_values_are_read_as_yaml_scalars():
    from osnet_zoo import cli

    assert cli.parse_key_values(['num_streams=1', 'gate=static', 'flag=true', 'sizes=[1, 2]', 'empty='],
                                '--model-args') == {'num_streams': 1, 'gate': 'static', 'flag': True,
                                                    'sizes': [1, 2], 'empty': ''}
    assert cli.parse_key_values({'a': 1}, '--model-args') == {'a': 1} and cli.parse_key_values(None, 'x') == {}
    with pytest.raises(ValueError, match='--model-args: expected KEY=VALUE'):
        cli.parse_key_values(['num_streams'], '--model-args')
    with pytest.raises(ValueError, match='--compare-args: expected KEY=VALUE'):
        cli.parse_key_values(['=1'], '--compare-args')


def test_run_prints_one_line_and_exits_nonzero(capsys):
    from osnet_zoo import cli

    def bad():
        raise FileNotFoundError('dataset root /nowhere does not exist.\nExpected layout:\n  a/\n  b/')

    assert cli.run(bad) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: dataset root /nowhere') and err.count('\n') == 1 and 'Traceback' not in err
    assert cli.run(lambda: (_ for _ in ()).throw(FloatingPointError('loss became nan'))) == 2
    assert cli.run(lambda: 3) == 3 and cli.run(lambda: {'a': 1}) == 0


# The shared options (README: "every command speaks the same options where they apply").
SHARED = {'--model': 'osnet_x0_25', '--root': 'data', '--output': 'out', '--device': 'cpu', '--precision': 'fp16',
          '--batch-size': '4', '--workers': '1'}
NO_DATA = 'reads no dataset and loads no images'
# Every parser of every verb (module, subcommand), what else it needs to parse, and the shared options that do
# not apply to it, each with the reason. Any other shared option missing from a parser fails the test.
PARSERS = {
    'train': ('osnet_zoo.train.__main__', None, [], {}),
    'train.protocol': ('osnet_zoo.train.protocol', None, ['--dataset', 'viper'], {}),
    'evaluate': ('osnet_zoo.evaluate', None, [], {}),
    'extract': ('osnet_zoo.extract', None, [], {}),
    'verify': ('osnet_zoo.verify', None, [], {}),
    'search': ('osnet_zoo.search', None, ['--query', 'q.jpg', '--gallery', 'g/'], {
        '--root': 'search takes its images, listings and features files by path: no dataset root'}),
    'export': ('osnet_zoo.export', None, [], {
        '--device': 'export writes a device-independent file: it builds, traces and checks on the CPU',
        '--root': 'export checks on generated inputs: it ' + NO_DATA, '--workers': 'export ' + NO_DATA}),
    'visualize actmap': ('osnet_zoo.visualize', 'actmap', [], {}),
    'visualize gates': ('osnet_zoo.visualize', 'gates', [], {}),
    'visualize attributes': ('osnet_zoo.visualize', 'attributes', ['--run', 'runs/pa100k'], {
        '--model': 'the trained run (--run) names its model'}),
    'data stats': ('osnet_zoo.data.__main__', 'stats', ['--dataset', 'market1501'], {
        '--model': 'stats reads pixels: no model runs', '--device': 'stats sums pixels on the CPU',
        '--precision': 'stats sums pixels in float64: no model runs'}),
    'data to-csv': ('osnet_zoo.data.__main__', 'to-csv', ['folder'], {
        **{o: 'to-csv lists the image files of a folder: it decodes no pixels and runs no model' for o in SHARED
           if o != '--output'},
        '--root': 'to-csv reads the folder given as its argument, not a dataset under a root'}),
    'nas search': ('osnet_zoo.nas.__main__', 'search', [], {
        '--model': 'the search builds its own supernet (--model-width)'}),
    'nas select': ('osnet_zoo.nas.__main__', 'select', [], {
        '--model': "select builds each seed's child from its genotype (the search's --model-width)"}),
    'nas proof': ('osnet_zoo.nas.__main__', 'proof', [], {
        '--model': 'the proof trains four fixed architectures (--model-width)',
        '--root': 'the proof generates its two synthetic domains in --output'}),
    'weights list': ('osnet_zoo.weights.__main__', 'list', [], {
        o: 'list prints the manifest: no model is run' for o in SHARED if o != '--model'}),
    'weights download': ('osnet_zoo.weights.__main__', 'download', [], {
        **{o: 'download fetches and checks files: no model is run on data' for o in SHARED},
        '--model': 'download takes any number of tags (ARCH.TAG, or ARCH for its default) as positional arguments',
        '--output': 'download writes into the osnet-zoo cache ($OSNET_ZOO_CACHE), which every load reads'}),
    'weights convert': ('osnet_zoo.weights.__main__', 'convert', ['ckpt.pth'], {
        o: 'convert checks one forward pass on the CPU and ' + NO_DATA for o in SHARED
        if o not in ('--model', '--output')}),
    'weights push': ('osnet_zoo.weights.__main__', 'push', ['folder'], {
        o: 'push uploads a converted folder' for o in SHARED}),
    'weights verify': ('osnet_zoo.weights.__main__', 'verify', [], {
        o: 'verify re-hashes cached files' for o in SHARED}),
    'weights mirror': ('osnet_zoo.weights.__main__', 'mirror', ['folder'], {
        o: 'mirror converts files on the CPU and ' + NO_DATA for o in SHARED if o != '--output'}),
    'summary': ('osnet_zoo.__main__', None, [], {
        '--model': 'the summary lists every variant', '--root': 'the summary ' + NO_DATA,
        '--workers': 'the summary ' + NO_DATA, '--output': 'the summary prints a table, writes no file',
        '--precision': "the summary times fp32 forward passes, as the papers' tables count them"}),
}


def _parser(module: str, command):
    import importlib
    parser = importlib.import_module(module).get_args_parser()
    if command is None:
        return parser
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


def test_every_parser_is_listed():
    """A new verb or subcommand must say here which shared options apply to it."""
    import importlib
    listed = {(module, command) for module, command, _, _ in PARSERS.values()}
    for module in {module for module, _, _, _ in PARSERS.values()}:
        parser = importlib.import_module(module).get_args_parser()
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        found = {(module, c) for c in subs[0].choices} if subs else {(module, None)}
        assert found <= listed, f'{module}: parsers not in tests/test_cli.py PARSERS: {sorted(found - listed)}'
        assert 'example' in parser.format_help().lower(), f'{module} --help shows no examples'


@pytest.mark.parametrize('label', list(PARSERS))
def test_shared_options_parse_help_has_examples_and_one_default(label):
    module, command, required, not_applicable = PARSERS[label]
    parser = _parser(module, command)
    applies = [o for o in SHARED if o not in not_applicable]
    missing = [o for o in applies if o not in parser._option_string_actions]
    assert not missing, f'{label} lacks the shared option(s) {missing}'
    # each applicable shared option parses under its shared name, into the shared dest
    argv = [*required, *(a for o in applies for a in (o, SHARED[o]))]
    args = parser.parse_args(argv)
    for option in applies:
        value = getattr(args, option[2:].replace('-', '_'))
        assert str(value) == SHARED[option], (label, option, value)
    text = parser.format_help()
    assert 'example' in text.lower(), f'{label} --help shows no examples'
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.help and action.help is not argparse.SUPPRESS:
            shown = formatter._expand_help(action)
            assert shown.count('(default') <= 1, f'{label} {action.option_strings}: {shown}'


# --help as a user reads it: plain text (the docstrings it is built from are reST), examples line by line
HELP_SCRIPT = r'''
import contextlib, io, json, runpy, sys
shown = {}
for label, module, argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    sys.argv = [module, *argv, '--help']
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module(module, run_name='__main__', alter_sys=True)
            code = None
        except SystemExit as e:
            code = e.code
    shown[label] = [code, out.getvalue()]
print(json.dumps(shown))
'''
REST_MARKUP = re.compile(r'::|``|:(?:mod|func|class|meth|attr):`')


def _help_commands():
    """(label, module, argv) of every verb's --help and each of its subcommands'."""
    commands = {label.split()[0]: (module.removesuffix('.__main__'), []) for label, (module, _, _, _)
                in PARSERS.items()}
    commands.update({label: (module.removesuffix('.__main__'), [command]) for label, (module, command, _, _)
                     in PARSERS.items() if command})
    return [(label, module, argv) for label, (module, argv) in commands.items()]


def _examples(text: str):
    """The lines of the 'examples:' section of a --help text (up to the next unindented line)."""
    lines = text.splitlines()
    start = lines.index('examples:') + 1
    return [line for line in itertools.takewhile(lambda s: not s or s[0].isspace(), lines[start:])]


def test_every_help_is_plain_text_with_its_examples_line_by_line():
    commands = _help_commands()
    assert len(commands) == len(PARSERS) + 4  # + visualize, data, nas and weights themselves
    proc = run_python('-c', HELP_SCRIPT, json.dumps(commands), check=True)
    shown = json.loads(proc.stdout)
    for label, (code, text) in shown.items():
        assert code in (0, None) and text.startswith('usage: python -m osnet_zoo'), (label, code, text[:300])
        assert not REST_MARKUP.search(text), f'{label} --help shows reST markup: {REST_MARKUP.findall(text)}'
        description = text.split('\n\n')[1]  # the usage line names the command: the description does not
        assert not description.startswith(('`', 'python -m')), (label, description[:80])
        examples = _examples(text)
        assert any('python -m osnet_zoo' in line or 'torchrun' in line for line in examples), label
        command_indent, continued = 0, False
        for line in examples:
            # a command's continuation never runs into its first line (a lost line break leaves a run of spaces)
            assert not re.search(r'\S {2,}--', line), f'{label}: two example lines joined: {line!r}'
            indent = len(line) - len(line.lstrip())
            if continued:  # the line after a trailing backslash: on its own line, indented under its command
                assert line.strip() and indent > command_indent, f'{label}: a lost continuation before {line!r}'
            else:
                command_indent = indent
            continued = line.endswith('\\')
    # extract's --output is required, and its usage says so (no brackets around it)
    usage = shown['extract'][1].split('\n\n')[0]
    assert ' --output OUTPUT' in usage and '[--output' not in usage


def test_plain_text_turns_rest_into_what_help_prints():
    from osnet_zoo import cli

    doc = ('Uses :func:`~osnet_zoo.x.f` and ``--flag``; see :mod:`osnet_zoo.y`. Examples::\n\n'
           '    python -m osnet_zoo.train \\\n        --epochs 1\n\nThen, in Python::\n\n    import osnet_zoo\n\nEnd.')
    assert cli.plain_text(doc) == ('Uses osnet_zoo.x.f and --flag; see osnet_zoo.y. Examples:\n'
                                   '  python -m osnet_zoo.train \\\n      --epochs 1\n\n'
                                   'Then, in Python:\n  import osnet_zoo\n\nEnd.')
    assert cli.plain_text('Examples::\n\n    a\n    b').splitlines() == ['examples:', '  a', '  b']
    assert cli.describe('`python -m osnet_zoo.nas`: search where IN goes.\n\nMore.') == ('Search where IN goes.',
                                                                                        'More.')
