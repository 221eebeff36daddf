"""Every command in a ```bash block of README.md and docs/*.md keeps working.

Each command is either run here (on the CPU, on a tiny synthetic dataset, with size and epoch options
appended: argparse keeps the last value of an option) or listed in SKIPPED with the reason it cannot run
here (a GPU, a real dataset, the Hub, torchrun). A command in neither table fails the test, and so does a
table entry that no page shows any more, so a new or edited command cannot rot silently. ``--help`` of
every documented entry point runs, and every documented ``python -m osnet_zoo...`` command line is parsed
by its CLI's own parser (an unknown or deprecated option fails), skipped commands included.
"""
import json
import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from osnet_zoo.data import make_synthetic_reid
from conftest import REPO, child_env, run_python

PAGES = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]

# Appended to the documented command lines so that they finish in seconds on a CPU.
TINY_TRAIN = '--epochs 1 --height 64 --width 32 --batch-size 8 --max-steps-per-epoch 2 --workers 0 --device cpu'
TINY_EVAL = '--height 64 --width 32 --workers 0 --device cpu'

# command (comments dropped, whitespace collapsed) -> options appended when it runs here
RUN: Dict[str, str] = {
    'python -m osnet_zoo': '--height 64 --width 32 --batch-size 1',
    'python -m osnet_zoo.train': TINY_TRAIN,
    'python -m osnet_zoo.train --output runs/demo --deterministic --seed 1': TINY_TRAIN,
    'python -m osnet_zoo.train --output runs/demo --deterministic --seed 1 --resume': TINY_TRAIN,
    'python -m osnet_zoo.evaluate --checkpoint runs/osnet --dataset synthetic': TINY_EVAL,
    'python -m osnet_zoo.evaluate --model osnet_x0_25 --checkpoint runs/osnet/final/model.safetensors '
    '--dataset synthetic --flip --rerank --distance euclidean --device cpu --batch-size 64': TINY_EVAL,
    'python -m osnet_zoo.visualize actmap --checkpoint runs/osnet --max-images 8 --output runs/actmap': TINY_EVAL,
    'python -m osnet_zoo.export --checkpoint runs/osnet --output runs/export': '',
    'python -m osnet_zoo.export --checkpoint runs/osnet --format torchscript --output runs/export': '',
    'python -m osnet_zoo.export --checkpoint runs/osnet --format openvino --output runs/export': '',
    # the tiny run trained here (2 steps) is near chance, where INT8 may move Rank-1 by more than the 1-point
    # default bound: the bound is widened so that the command runs through; tests/test_quantize.py checks it
    'python -m osnet_zoo.export --checkpoint runs/osnet --int8 --output runs/export': '--max-rank1-drop 100',
    'python -m osnet_zoo.export --checkpoint runs/osnet --int8 --format openvino --output runs/export':
        '--max-rank1-drop 100',
    'python -m osnet_zoo.evaluate --checkpoint runs/osnet --dataset synthetic --precision int8': TINY_EVAL,
    'python -m osnet_zoo.extract --checkpoint runs/osnet ~/.cache/osnet_zoo/data/synthetic_reid/query '
    '--output feats.safetensors --device cpu': '--workers 1',
    'python -m osnet_zoo.extract --checkpoint runs/osnet --dataset synthetic --split gallery '
    '--output runs/gallery.safetensors': '--workers 1 --device cpu',
    'python -m osnet_zoo.nas': '--epochs 1 --height 64 --width 32 --batch-size 8 --max-steps-per-epoch 2 --quiet',
    'python -m osnet_zoo.nas search --seeds 1 2 3 4 --output runs/nas4':
        '--epochs 1 --height 64 --width 32 --batch-size 8 --max-steps-per-epoch 1 --quiet',
    # after the search above (commands of one CLI run in page order)
    'python -m osnet_zoo.nas select --output runs/nas4': '--epochs 1 --batch-size 8 --max-steps-per-epoch 1 --quiet',
    'python -m osnet_zoo.nas proof --device cuda --output runs/nas_proof':
        '--device cpu --train-ids 8 --test-ids 4 --search-epochs 1 --train-epochs 1 --max-steps-per-epoch 1 '
        '--model-width 0.25 --height 64 --width 32 --batch-size 8 --seeds 1 2 --quiet',
    'python -m osnet_zoo.weights list': '',
    # the tiny set has too few different-person pairs for the default --target-fpr 1e-3: the EER's threshold
    'python -m osnet_zoo.verify --checkpoint runs/osnet --dataset synthetic': '--eer --workers 1 --device cpu',
    'python -m osnet_zoo.search --checkpoint runs/osnet --query ~/.cache/osnet_zoo/data/synthetic_reid/query '
    '--gallery ~/.cache/osnet_zoo/data/synthetic_reid/bounding_box_test --topk 10 --output runs/search':
        '--device cpu --workers 1',
}

REAL_DATA = 'needs a real benchmark dataset under ~/datasets or ~/data'
HUB = 'downloads pretrained weights from the Hugging Face Hub'
SEARCH_FEATURES = ('needs runs/gallery.safetensors of the extract command of docs/deployment.md, which runs beside it '
                   'here; tests/test_search.py searches a features file')
SKIPPED: Dict[str, str] = {
    'python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.14.1 torchvision==0.29.1 -e .[test] '
    '&& python -m osnet_zoo.train': 'creates a venv and installs from the registry; CI runs it on a fresh clone',
    'pip install osnet-zoo': 'installs the released package from the registry; tests/test_packaging.py builds and '
                             'checks what would be uploaded',
    'python -m pytest -q -n 2 tests': 'the whole suite (this test is part of it)',
    'python -m osnet_zoo.train --recipe imagenet_finetune --root ~/datasets --sources market1501 '
    '--targets market1501': REAL_DATA,
    'python -m osnet_zoo.train --recipe cross_domain_msmt17 --root ~/datasets --device cuda --precision bf16 '
    '--channels-last': REAL_DATA + '; a GPU',
    'torchrun --nproc_per_node 8 -m osnet_zoo.train --recipe scratch --root ~/datasets --device cuda':
        'torchrun on 8 GPUs; ' + REAL_DATA,
    'python -m osnet_zoo.evaluate --model osnet_ain_x1_0.msmt17_combineall --dataset market1501 dukemtmcreid '
    '--root ~/data': HUB + '; ' + REAL_DATA,
    'python -m osnet_zoo.extract --model osnet_x0_25.msmt17_combineall crops/ --output feats.safetensors':
        HUB + '; needs your crops/ folder',
    'python -m osnet_zoo.extract --model osnet_x1_0 --checkpoint osnet_x1_0_market.pth data/**/*.jpg '
    '--output feats.safetensors --device cuda --precision bf16 --batch-size 256':
        'needs the reference osnet_x1_0_market.pth, your images and a GPU',
    'python -m osnet_zoo.export --model osnet_x0_25.msmt17_combineall --format onnx': HUB,
    'python -m osnet_zoo.export --model osnet_x0_25.msmt17_combineall --format torchreid': HUB,
    'python -m osnet_zoo.export --model osnet_x0_25.msmt17_combineall --format torchscript': HUB,
    'python -m osnet_zoo.export --model osnet_x0_25.msmt17_combineall --format tflite': HUB + ' (tests/test_tflite.py '
                                                                                    'exports a local model)',
    'pip install osnet-zoo[tflite]': "installs from the registry into this environment; .ci/run installs the extra",
    'boxmot track --reid runs/export/osnet_x0_25_msmt17_combineall.tflite ...':
        "boxmot's CLI (a video and boxmot[yolo]'s detector); tests/test_boxmot_tflite.py runs its ReID and trackers",
    'python -m osnet_zoo.export --model osnet_x0_25.msmt17_combineall --format openvino': HUB,
    'python -m osnet_zoo.export --model osnet_x0_25.msmt17_combineall --int8 --calibration crops/':
        HUB + '; needs your crops/ folder',
    'python -m osnet_zoo.export --model osnet_x1_0 --checkpoint market.pth --format torchscript '
    '--output osnet.torchscript':
        'needs a trained market.pth',
    'python -m osnet_zoo.weights convert log/model.pth.tar-60 --model osnet_x1_0 --tag mydata '
    '--output converted/osnet_x1_0.mydata': 'needs your torchreid training checkpoint',
    'python -m osnet_zoo.weights convert log/model.pth.tar-60 --to torchreid --model osnet_x1_0 '
    '--output osnet_x1_0_mydata.pt': 'needs your torchreid training checkpoint',
    'torchrun --standalone --nproc_per_node 8 -m osnet_zoo.extract --model osnet_x1_0.msmt17_combineall '
    'gallery/**/*.jpg --output gallery.safetensors --device cuda --precision bf16': 'torchrun on 8 GPUs; ' + HUB,
    'torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint node0:29500 -m osnet_zoo.extract '
    '... --output /shared/gallery.safetensors --device cuda': 'two nodes of 8 GPUs (a sketch: "..." is elided)',
    'OMP_NUM_THREADS=4 torchrun --standalone --nproc_per_node 4 -m osnet_zoo.extract crops/ --output '
    'feats.safetensors --device cpu': 'torchrun; tests/test_extract_distributed.py runs the 2-process CPU case',
    'torchrun --standalone --nproc_per_node 4 -m osnet_zoo.evaluate --model osnet_x1_0 --checkpoint model.pth '
    '--dataset market1501 --root ~/data --device cuda': 'torchrun on 4 GPUs; ' + REAL_DATA,
    'python -m osnet_zoo.weights push converted/osnet_x1_0.mydata --dry-run':
        'needs the converted folder of your checkpoint',
    'python -m osnet_zoo.weights download --all': HUB + ' and Google Drive (tests/test_weights_download.py runs '
                                                  'download against a local stand-in server)',
    'python -m osnet_zoo.weights download osnet_x1_0 osnet_ain_x1_0.market1501_to_dukemtmcreid':
        HUB + ' and Google Drive (tests/test_weights_download.py runs download against a local stand-in server)',
    'python -m osnet_zoo.weights verify': 'needs a filled weights cache (tests/test_weights_download.py runs it)',
    'python -m osnet_zoo.nas --help': 'covered by the --help check',
    'python -m osnet_zoo.nas search --preset paper --root ~/datasets --device cuda --precision bf16 --channels-last':
        REAL_DATA + ' (MSMT17); a GPU',
    'torchrun --nproc_per_node 4 -m osnet_zoo.nas search --preset paper --root ~/datasets --device cuda '
    '--precision bf16': 'torchrun on 4 GPUs; ' + REAL_DATA,
    'python -m osnet_zoo.visualize actmap --model osnet_x1_0 --checkpoint runs/market/osnet_x1_0/model.safetensors '
    '--compare osnet_x1_0 --compare-checkpoint runs/market/osnet_t1/model.safetensors --compare-args num_streams=1 '
    '--dataset market1501 --root ~/data --split query --max-images 32 --output runs/actmap':
        'needs two models trained on Market1501; ' + REAL_DATA,
    'python -m osnet_zoo.visualize actmap --model osnet_x1_0.msmt17_combineall crops/ person.jpg '
    '--output runs/actmap': HUB + '; needs your crops',
    'python -m osnet_zoo.visualize gates --model osnet_x1_0.msmt17_combineall --dataset market1501 --root ~/data '
    '--split query --clusters 6 --per-cluster 15 --output runs/gates': HUB + '; ' + REAL_DATA,
    'boxmot track --reid runs/export/osnet_x0_25_msmt17_combineall.pt ...':
        "boxmot's CLI (a video and boxmot[yolo]'s detector); tests/test_boxmot.py runs its ReID and trackers",
    'pip install boxmot==25.0.0 onnxruntime==1.24.3': 'installs from the registry into this environment; .ci/run does',
    'pip check': '.ci/run does, after installing boxmot',
    'python -m pytest -q tests/test_boxmot.py': 'a test file of the suite; CI runs it with boxmot installed',
    'python -m osnet_zoo.data to-csv ~/photos/shop --output shop/listing.csv':
        'needs your folder of images; tests/test_data_listing.py runs to-csv on generated images',
    'python -m osnet_zoo.data to-csv ~/tracks/people --output people.csv':
        'needs your folder of people; tests/test_data_listing.py splits generated people, then trains and evaluates',
    'python -m osnet_zoo.data to-csv ~/tracks/people --test-fraction 0.3 --seed 1 --output people.csv':
        'needs your folder of people; tests/test_data_listing.py splits generated people with a seed',
    'python -m osnet_zoo.train --sources shop/listing.csv --targets shop/listing.csv --output runs/shop':
        'needs your listing; tests/test_data_listing.py trains on a listing of generated images',
    'python -m osnet_zoo.evaluate --checkpoint runs/shop':
        'needs your listing and run; tests/test_data_listing.py evaluates a run on its own targets to the figures '
        'train printed',
    'python benchmarks/bench_loader.py --per-worker': 'a benchmark: minutes of timing',
    'python benchmarks/bench_inference.py --preset cpu': 'a benchmark: minutes of timing',
    'python benchmarks/bench_inference.py --preset gpu': 'a benchmark on a GPU',
    'python benchmarks/bench_extractor.py': 'a benchmark: minutes of timing',
    'python -m osnet_zoo.verify --model osnet_x1_0.msmt17_combineall --dataset market1501 --root ~/data '
    '--target-fpr 1e-4 --output runs/verify_market': HUB + '; ' + REAL_DATA,
    'python -m osnet_zoo.search --checkpoint runs/osnet --query ~/.cache/osnet_zoo/data/synthetic_reid/query '
    '--gallery runs/gallery.safetensors --output runs/search_features': SEARCH_FEATURES,
    'pip install osnet-zoo[search]': 'installs from the registry; the test extra has faiss-cpu',
    'python -m osnet_zoo.search --checkpoint runs/osnet --query ~/.cache/osnet_zoo/data/synthetic_reid/query '
    '--gallery runs/gallery.safetensors --index ivf --nlist 1024 --nprobe 64 --output runs/search_ivf':
        SEARCH_FEATURES,
}

FENCE = re.compile(r'^```bash[ \t]*\n(.*?)^```', re.S | re.M)


def documented_commands() -> List[Tuple[str, List[str]]]:
    """(page name, argv) of every command line in a ```bash block, in page order; a trailing backslash
    continues a line, ``#`` starts a comment."""
    found = []
    for page in PAGES:
        for block in FENCE.findall(page.read_text(encoding='utf-8')):
            for line in block.replace('\\\n', ' ').splitlines():
                argv = shlex.split(line, comments=True)
                if argv:
                    found.append((str(page.relative_to(REPO)), argv))
    return found


def key(argv: List[str]) -> str:
    return ' '.join(argv)


def entry_point(argv: List[str]) -> Optional[Tuple[str, str, List[str]]]:
    """('module', name, args) for ``python -m name`` / ``torchrun ... -m name``, ('script', path, args) for
    ``python path.py``, None for anything else (pip, shell)."""
    if argv[0] in ('python', 'python3') and len(argv) > 1:
        if argv[1] == '-m' and len(argv) > 2 and argv[2].startswith('osnet_zoo'):
            return 'module', argv[2], argv[3:]
        if argv[1].endswith('.py'):
            return 'script', argv[1], argv[2:]
    if argv[0] == 'torchrun' and '-m' in argv:
        i = argv.index('-m')
        return 'module', argv[i + 1], argv[i + 2:]
    return None


def test_every_documented_command_is_run_or_skipped():
    commands = documented_commands()
    assert len(commands) > 20, commands  # the parser found the blocks
    shown = {key(argv) for _, argv in commands}
    unlisted = [f'{page}: {key(argv)}' for page, argv in commands if key(argv) not in RUN and key(argv) not in SKIPPED]
    assert not unlisted, ('documented commands neither run nor skipped; add each to RUN (with tiny options) or '
                          'SKIPPED (with the reason) in tests/test_docs_commands.py:\n' + '\n'.join(unlisted))
    stale = sorted((set(RUN) | set(SKIPPED)) - shown)
    assert not stale, 'entries for commands that no page shows any more:\n' + '\n'.join(stale)
    assert not set(RUN) & set(SKIPPED)


# Runs in one interpreter: `--help` of each entry point (and subcommand), then each documented module command
# line through its CLI's own parser. Prints a JSON list of failures.
CHECKER = r'''
import contextlib, importlib, importlib.util, io, json, runpy, sys
failures = []
for kind, target, args in json.loads(sys.argv[1]):
    mod = None
    if kind == 'module':
        spec = importlib.util.find_spec(target)
        mod = importlib.import_module(target + '.__main__' if spec.submodule_search_locations else target)
        # weights/ is being moved to get_args_parser (issue 12); build_parser is its current name
        parser = (getattr(mod, 'get_args_parser', None) or getattr(mod, 'build_parser'))()
        subs = [a for a in parser._actions if a.__class__.__name__ == '_SubParsersAction']
        if subs and target == 'osnet_zoo.nas' and (not args or args[0] not in (*subs[0].choices, '-h', '--help')):
            args = ['search'] + args  # what nas main does: `python -m osnet_zoo.nas [options]` is a search
        prefixes = [[]] + ([[args[0]]] if subs and args and args[0] in subs[0].choices else [])
    else:
        prefixes = [[]]
    for prefix in prefixes:
        out, err = io.StringIO(), io.StringIO()
        sys.argv = [target, *prefix, '--help']
        code = 'no exit'
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if kind == 'module':
                    runpy.run_module(target, run_name='__main__', alter_sys=True)
                else:
                    runpy.run_path(target, run_name='__main__')
            except SystemExit as e:
                code = e.code
        if code not in (0, None) or 'usage:' not in out.getvalue():
            failures.append(f'{target} {" ".join(prefix)} --help: exit {code}: {err.getvalue()[-500:]}')
    if mod is not None and not {'-h', '--help'} & set(args):  # help was run above
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                parser.parse_args(args)
            except SystemExit as e:
                failures.append(f'{target} {" ".join(args)}: rejected by its parser: {err.getvalue()[-300:]}')
        if 'deprecated' in err.getvalue():
            failures.append(f'{target} {" ".join(args)}: uses a deprecated option: {err.getvalue().strip()}')
print(json.dumps(failures))
'''


def documented_env(home: Path) -> Dict[str, str]:
    """A user's environment with ``home`` as HOME, offline, on the CPU. OSNET_ZOO_DATA is unset: the documented
    default data root, under that HOME."""
    return child_env(HOME=home, HF_HUB_OFFLINE='1', MPLBACKEND='Agg', CUDA_VISIBLE_DEVICES='', OSNET_ZOO_DATA=None)


def test_documented_help_and_options_parse(tmp_path):
    checks, seen = [], set()
    for _, argv in documented_commands():
        entry = entry_point(argv)
        if entry and key(argv) not in seen:
            seen.add(key(argv))
            checks.append(list(entry))
    assert {c[1] for c in checks} >= {'osnet_zoo.train', 'osnet_zoo.evaluate', 'osnet_zoo.extract',
                                      'osnet_zoo.export', 'osnet_zoo.nas', 'osnet_zoo.weights', 'osnet_zoo.visualize'}
    proc = run_python('-c', CHECKER, json.dumps(checks), cwd=REPO, env=documented_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failures, '\n'.join(failures)


@pytest.fixture(scope='module')
def tiny_home(tmp_path_factory) -> Path:
    """A HOME whose default data root holds tiny synthetic sets, which every command reads back as they are
    (the documented commands generate the full-size ones on first use)."""
    home = tmp_path_factory.mktemp('home')
    root = home / '.cache' / 'osnet_zoo' / 'data'
    tiny = dict(num_train_ids=12, num_test_ids=6, num_cameras=3, num_distractors=4, num_junk=2)
    make_synthetic_reid(root / 'synthetic_reid', **tiny)
    make_synthetic_reid(root / 'synthetic_reid_b', domain=1, **tiny)
    return home


TRAINED = 'runs/osnet'  # what `python -m osnet_zoo.train` writes; the commands naming it wait for it


def run_documented(home: Path, page: str, argv: List[str]) -> Optional[str]:
    """Run one documented command (``~`` is the temporary HOME) with its tiny options; None or a failure."""
    args = [str(home) + a[1:] if a.startswith('~') else a for a in argv]
    proc = run_python(*args[1:], *shlex.split(RUN[key(argv)]), cwd=home, env=documented_env(home))
    if proc.returncode != 0:
        return f'{page}: {key(argv)} (+ {RUN[key(argv)]}) exited {proc.returncode}:\n{proc.stderr[-1500:]}'
    return None


def test_documented_commands_run(tiny_home):
    todo, seen = [], set()
    for page, argv in documented_commands():
        if key(argv) in RUN and key(argv) not in seen:
            seen.add(key(argv))
            todo.append((page, argv))
    assert seen == set(RUN), set(RUN) - seen
    # Two at a time (the CI machine's two cores, one thread each). Commands of one verb run in page order
    # (a --resume after its run; the evaluate commands share their default output folder), and the users
    # of the trained model start after the training.
    failures = []
    for phase in (False, True):
        groups: Dict[str, List[Tuple[str, List[str]]]] = {}
        for page, argv in todo:
            if any(a == TRAINED or a.startswith(TRAINED + '/') for a in argv) == phase:
                groups.setdefault(entry_point(argv)[1], []).append((page, argv))
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = pool.map(lambda group: [run_documented(tiny_home, *c) for c in group], groups.values())
            failures += [f for group in results for f in group if f]
    assert not failures, '\n\n'.join(failures)
    assert (tiny_home / 'runs' / 'osnet' / 'final' / 'model.safetensors').is_file()
    assert (tiny_home / 'feats.safetensors').is_file() and (tiny_home / 'runs' / 'gallery.safetensors').is_file()
    # export writes under its --output folder, named for trackers; nothing lands in the working folder
    assert (tiny_home / 'runs' / 'export' / 'osnet_x0_25_trained.onnx').is_file()
    assert (tiny_home / 'runs' / 'export' / 'osnet_x0_25_trained.torchscript').is_file()
    assert not list(tiny_home.glob('*.onnx')) and not list(tiny_home.glob('*.torchscript'))
