"""docs/reproduce.md: a section per paper, a row for every table and figure of both, and every command in it
parsed by its own CLI (an unknown option or recipe fails), with none of the old stale sentences."""
import re
import shlex

import pytest

from osnet_zoo.train import list_recipes
from conftest import REPO

PAGE = REPO / 'docs' / 'reproduce.md'
ICCV = [f'Table {i}' for i in range(1, 13)] + [f'Fig. {i}' for i in (5, 6, 7)]
TPAMI = [f'Table {i}' for i in range(1, 10)] + [f'Fig. {i}' for i in (6, 7)]


def _sections():
    text = PAGE.read_text(encoding='utf-8')
    parts = re.split(r'^## ', text, flags=re.M)
    return {p.split('\n', 1)[0]: p for p in parts[1:]}


def test_a_row_for_every_table_and_figure_of_both_papers():
    sections = _sections()
    iccv = sections['OSNet, ICCV 2019 (and supplementary)']
    tpami = sections['OSNet-AIN, TPAMI 2021']
    for section, items in ((iccv, ICCV), (tpami, TPAMI)):
        rows = [line for line in section.splitlines() if line.startswith('| ') and not line.startswith('| table')]
        for item in items:
            assert any(re.match(rf'\| {re.escape(item)}[a-f]?\b', row) for row in rows), item
        for row in rows[1:]:
            assert row.count(' | ') >= 5, f'a row needs command, data, compute, verified, not verified: {row[:80]}'


def test_no_stale_sentences():
    text = PAGE.read_text(encoding='utf-8')
    for stale in ('once the models are merged', 'being added under issue 14', "paper's other ablation dataset",
                  'every table and figure has a command', 'Tables 8, 9: cross-domain'):
        assert stale not in text
    assert '--model-args num_streams=1 aggregation=add' in text  # model 9 is T = 1 without a gate


def _commands():
    text = PAGE.read_text(encoding='utf-8')
    for span in re.findall(r'`([^`]+)`', text):
        if span.startswith(('python -m osnet_zoo', 'torchrun ')):
            yield span


@pytest.mark.parametrize('command', sorted(set(_commands())))
def test_every_command_parses(command):
    import importlib
    argv = shlex.split(command)
    argv = argv[argv.index('-m') + 1:]
    module, args = argv[0], argv[1:]
    try:
        mod = importlib.import_module(module + '.__main__')
    except ModuleNotFoundError:
        mod = importlib.import_module(module)
    try:
        parsed = mod.get_args_parser().parse_args(args)
    except SystemExit:
        if args:
            raise
        pytest.skip(f'{module} named in the text, not a command line')
    recipe = getattr(parsed, 'recipe', None)
    if recipe and recipe != 'synthetic':
        assert recipe in list_recipes()
    if module == 'osnet_zoo.train':
        from osnet_zoo.engine.recipes import resolve_config
        resolve_config(parsed)  # recipe + options give a valid config (mean/std, model args)
