"""`python -m osnet_zoo` runs in a real subprocess and reports the papers' figures."""
import subprocess
import sys


def test_summary_command():
    out = subprocess.run([sys.executable, '-m', 'osnet_zoo', '--batch-size', '2', '--height', '128', '--width', '64',
                          '--runs', '3'], capture_output=True, text=True, timeout=600, check=True).stdout
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
    out = subprocess.run([sys.executable, '-m', 'osnet_zoo', '--help'], capture_output=True, text=True, check=True)
    assert '--batch-size' in out.stdout and 'usage: python -m osnet_zoo' in out.stdout


VERBS = ['osnet_zoo.train.__main__', 'osnet_zoo.evaluate', 'osnet_zoo.extract', 'osnet_zoo.export',
         'osnet_zoo.nas.__main__', 'osnet_zoo.weights.__main__', 'osnet_zoo.visualize', 'osnet_zoo.__main__']


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


def test_deprecated_spellings_still_work_and_warn(capsys):
    from osnet_zoo.export import get_args_parser as export_parser
    from osnet_zoo.train.__main__ import get_args_parser as train_parser

    args = train_parser().parse_args(['--arch', 'osnet_x0_5', '--amp', 'none', '--out', 'somewhere'])
    assert (args.model, args.precision, args.output) == ('osnet_x0_5', 'fp32', 'somewhere')
    err = capsys.readouterr().err
    assert '--arch is deprecated' in err and 'use --model' in err and '--amp is deprecated' in err
    assert '--out is deprecated' in err and 'use --output' in err
    args = export_parser().parse_args(['--half'])
    assert args.precision == 'fp16' and '--half is deprecated' in capsys.readouterr().err
    args = train_parser().parse_args(['--model', 'osnet_x0_5', '--precision', 'bf16', '--output', 'x'])
    assert (args.model, args.precision, args.output) == ('osnet_x0_5', 'bf16', 'x')
    assert capsys.readouterr().err == ''  # the new spellings print nothing


def test_run_prints_one_line_and_exits_nonzero(capsys):
    from osnet_zoo import cli

    def bad():
        raise FileNotFoundError('dataset root /nowhere does not exist.\nExpected layout:\n  a/\n  b/')

    assert cli.run(bad) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: dataset root /nowhere') and err.count('\n') == 1 and 'Traceback' not in err
    assert cli.run(lambda: (_ for _ in ()).throw(FloatingPointError('loss became nan'))) == 2
    assert cli.run(lambda: 3) == 3 and cli.run(lambda: {'a': 1}) == 0
