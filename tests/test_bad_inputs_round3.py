"""Bad inputs, round three (issue 35): nothing lost when --output holds another run; damaged run records, NAS
options and files, downloads that hang or loop, damaged recipes' files and caches.

The style of ``test_bad_inputs.py``: one parametrised test per entry point, one id per case, each asserting the
one-line message names the thing and that nothing on disk was lost. CLI cases run the real command in a
subprocess (``run_module``); network cases talk to real sockets on 127.0.0.1.
"""
from __future__ import annotations

import http.server
import json
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator

import pytest
import timm
import torch

from osnet_zoo.data.datasets import LABELLED_DATASETS
from osnet_zoo.evaluate import main as evaluate_main
from osnet_zoo.inference import FeatureExtractor
from osnet_zoo.inference.onnx_runtime import OnnxRuntimeModel, _record_path
from osnet_zoo.nas.search import QUICK_CONFIG, record_config, resolve_config
from osnet_zoo.train.__main__ import main as train_main
from osnet_zoo.weights import cache as weights_cache
from osnet_zoo.weights.__main__ import main as weights_main
from conftest import REPO, child_env, run_module, run_python
from test_bad_inputs import (assert_names, cli_error, evaluate_base, finished_run, library_error, root,  # noqa: F401
                             train_base, tree)


def cli_line(proc) -> str:
    """The one ``error:`` line a CLI subprocess ended with (non-zero status, no traceback)."""
    err = proc.stderr
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert proc.returncode != 0, f'exit status 0 on a bad input: {err[-300:]}'
    assert lines and 'Traceback' not in err, err[-800:]
    return lines[-1]


# ----------------------------------------------------------------------------------------------- --output

def _unfinished(run: Path, tmp: Path) -> Path:
    """A copy of ``run`` as it is mid-training: a checkpoint, no final model, no results."""
    out = tmp / 'run'
    shutil.copytree(run, out)
    shutil.rmtree(out / 'final')
    (out / 'results.json').unlink()
    return out


def _copy(run: Path, tmp: Path) -> Path:
    shutil.copytree(run, tmp / 'run')
    return tmp / 'run'


# id -> (the folder given as --output (made from the finished run), the command line, what the line names)
OUTPUT_CASES: Dict[str, tuple] = {
    'train_finished_other_settings': (_copy, lambda root, out: ['osnet_zoo.train', *train_base(root, out),
                                                                '--lr', '0.01'],
                                      ['run', 'other settings', 'lr', '--overwrite']),
    'train_unfinished_without_resume': (_unfinished, lambda root, out: ['osnet_zoo.train', *train_base(root, out)],
                                        ['run', '--resume', '--overwrite']),
    'nas_search_into_a_training_run': (_copy, lambda root, out: ['osnet_zoo.nas', 'search', '--output', str(out),
                                                                 '--device', 'cpu'],
                                       ['run', 'a train run', '--overwrite']),
    'evaluate_into_a_training_run': (_copy, lambda root, out: ['osnet_zoo.evaluate', *evaluate_base(
        root, root / 'data', out)], ['run', 'results.json']),
}


@pytest.mark.parametrize('case', list(OUTPUT_CASES))
def test_output_holding_another_run_is_refused(case, root, finished_run, tmp_path):
    make, argv, names = OUTPUT_CASES[case]
    out = make(finished_run, tmp_path)
    before = {p: (out / p).read_bytes() for p in tree(out)}
    proc = run_module(*argv(root, out), cwd=tmp_path)
    assert_names(cli_line(proc), *names)
    assert {p: (out / p).read_bytes() for p in tree(out)} == before, 'the run folder changed'


def test_train_overwrite_moves_the_old_run_aside(root, finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    results = (out / 'results.json').read_bytes()
    train_main([*train_base(root, out), '--lr', '0.01', '--overwrite'])
    aside = [p for p in tmp_path.iterdir() if p.name.startswith('run.replaced-')]
    assert len(aside) == 1 and (aside[0] / 'results.json').read_bytes() == results, 'the old run is lost'
    assert json.loads((out / 'config.json').read_text())['lr'] == 0.01
    assert json.loads((out / 'run.json').read_text())['kind'] == 'train'


def test_train_same_settings_into_a_finished_run_changes_nothing(root, finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    first = json.loads((out / 'results.json').read_text())['targets']
    stamps = {p: (out / p).stat().st_mtime_ns for p in ('results.json', 'checkpoint.pth', 'final/model.safetensors')}
    assert train_main(train_base(root, out)) == first
    assert {p: (out / p).stat().st_mtime_ns for p in stamps} == stamps, 'a finished run was trained again'


def test_train_resume_of_an_unfinished_run_is_still_allowed(root, finished_run, tmp_path):
    out = _unfinished(finished_run, tmp_path)
    results = train_main([*train_base(root, out), '--resume'])
    assert results and (out / 'final' / 'model.safetensors').is_file()


# ----------------------------------------------------------------------------------------------- run record

def _edited_record(run: Path, tmp: Path, edit: Callable[[dict], None]) -> Path:
    final = tmp / 'final'
    shutil.copytree(run / 'final', final)
    config = json.loads((final / 'config.json').read_text())
    edit(config)
    (final / 'config.json').write_text(json.dumps(config))
    return final


def _prep(key: str, value) -> Callable[[dict], None]:
    return lambda c: c['pretrained_cfg'].__setitem__(key, value)


# id -> (the edit of final/config.json, what the message names)
RECORD_EDITS: Dict[str, tuple] = {
    'input_size_negative': (_prep('input_size', [3, -32, 16]), ['config.json', 'input_size']),
    'input_size_zero': (_prep('input_size', [3, 0, 16]), ['config.json', 'input_size']),
    'input_size_two_values': (_prep('input_size', [32, 16]), ['config.json', 'input_size']),
    'mean_two_values': (_prep('mean', [0.5, 0.5]), ['config.json', 'mean']),
    'std_zeros': (_prep('std', [0, 0, 0]), ['config.json', 'std', 'above 0']),
    'architecture_empty': (lambda c: c.__setitem__('architecture', ''), ['config.json', 'architecture']),
    'architecture_missing': (lambda c: c.pop('architecture'), ['config.json', 'architecture']),
}


@pytest.mark.parametrize('case', list(RECORD_EDITS))
def test_feature_extractor_refuses_a_damaged_run_record(case, finished_run, tmp_path):
    edit, names = RECORD_EDITS[case]
    final = _edited_record(finished_run, tmp_path, edit)
    assert_names(library_error(lambda: FeatureExtractor(checkpoint_path=str(final), device='cpu')), *names)


@pytest.mark.parametrize('case', ['input_size_two_values', 'mean_two_values', 'std_zeros'])
def test_export_refuses_a_damaged_run_record_and_writes_nothing(case, finished_run, tmp_path):
    edit, names = RECORD_EDITS[case]
    final = _edited_record(finished_run, tmp_path / 'in', edit)
    proc = run_module('osnet_zoo.export', '--checkpoint', str(final), '--output', str(tmp_path / 'out'),
                      cwd=tmp_path)
    assert_names(cli_line(proc), *names)
    assert not (tmp_path / 'out').exists() or tree(tmp_path / 'out') == {}


# ----------------------------------------------------------------------------------------------- NAS

NAS_OPTIONS: Dict[str, tuple] = {
    'epochs_zero': (['--epochs', '0'], ['--epochs', '0']),
    'tau_initial_negative': (['--tau-initial', '-1'], ['--tau-initial', '-1']),
    'tau_floor_negative': (['--tau-floor', '-0.5'], ['--tau-floor', '-0.5']),
    'seeds_repeated': (['--seeds', '1', '1'], ['--seeds', '1 1']),
}


@pytest.mark.parametrize('case', list(NAS_OPTIONS))
def test_nas_search_refuses_an_option_out_of_range(case, tmp_path):
    extra, names = NAS_OPTIONS[case]
    proc = run_module('osnet_zoo.nas', 'search', '--device', 'cpu', '--output', str(tmp_path / 'nas'),
                      '--root', str(tmp_path / 'data'), *extra, cwd=tmp_path)
    assert_names(cli_line(proc), *names)
    assert not (tmp_path / 'nas').exists(), 'searched before refusing'


def _search_folder(tmp: Path, edit: Callable[[dict], None] = lambda c: None) -> Path:
    """A search folder as ``nas search`` leaves it after one epoch of seed 1 (its config.json written by the
    search's own writer; the checkpoint's content is not read by the refusals)."""
    out = tmp / 'nas'
    cfg = resolve_config(QUICK_CONFIG, root=str(tmp / 'data'))
    record_config(cfg, out / 'config.json')
    config = json.loads((out / 'config.json').read_text())
    edit(config)
    (out / 'config.json').write_text(json.dumps(config))
    (out / 'seed_1').mkdir()
    (out / 'seed_1' / 'checkpoint.pth').write_bytes(b'an epoch of seed 1')
    return out


NAS_FOLDERS: Dict[str, tuple] = {
    'resume_other_width': (lambda tmp: _search_folder(tmp), ['search', '--resume', '--model-width', '0.5'],
                           ['model_width', '0.25', '0.5']),
    'search_again_without_resume': (lambda tmp: _search_folder(tmp), ['search'], ['--resume', '--overwrite']),
    'select_seeds_an_int': (lambda tmp: _search_folder(tmp, lambda c: c.__setitem__('seeds', 3)), ['select'],
                            ['config.json', 'seeds', '3']),
    'select_seeds_empty': (lambda tmp: _search_folder(tmp, lambda c: c.__setitem__('seeds', [])), ['select'],
                           ['config.json', 'seeds', '[]']),
}


@pytest.mark.parametrize('case', list(NAS_FOLDERS))
def test_nas_refuses_a_folder_it_cannot_continue(case, tmp_path):
    make, argv, names = NAS_FOLDERS[case]
    out = make(tmp_path)
    before = {p: (out / p).read_bytes() for p in tree(out)}
    proc = run_module('osnet_zoo.nas', *argv, '--device', 'cpu', '--output', str(out), cwd=tmp_path)
    assert_names(cli_line(proc), *names)
    assert {p: (out / p).read_bytes() for p in tree(out)} == before, 'the search folder changed'


@pytest.mark.parametrize('case', ['not_json', 'a_list', 'no_results'])
def test_nas_select_names_a_damaged_result_file(case, tmp_path):
    from osnet_zoo.nas.select import _read_result
    payload = {'not_json': '{"seed": 1,', 'a_list': '[1, 2]', 'no_results': '{"seed": 1, "epochs": 1}'}[case]
    path = tmp_path / 'result.json'
    path.write_text(payload)
    assert_names(library_error(lambda: _read_result(path)), 'result.json', 'delete it')


# ----------------------------------------------------------------------------------------------- network

@contextmanager
def silent_host() -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers: its base URL."""
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(64)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.getsockname()[1]}'
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


@contextmanager
def http_host(handler: Callable[[http.server.BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering every HEAD and GET with ``handler``: its base URL."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            handler(self)

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()


def _redirect_loop(request) -> None:
    request.send_response(302)
    request.send_header('Location', request.path)
    request.send_header('Content-Length', '0')
    request.end_headers()


def _root_answers_files_hang(request) -> None:
    if request.path == '/':  # the reachability probe is answered, the file never is
        request.send_response(200)
        request.send_header('Content-Length', '0')
        request.end_headers()
        return
    time.sleep(30)


LOAD = 'import timm, osnet_zoo\ntimm.create_model({!r}, pretrained=True)\n'
# a tag with a Hub file (then Drive), and a tag on Drive only
HUB_TAG, DRIVE_TAG = 'osnet_x0_25.msmt17_combineall', 'osnet_x0_25.market1501'

# id -> (the host (a context manager yielding its URL), the tag loaded, what the message names)
HOSTS: Dict[str, tuple] = {
    'silent_host_hub': (silent_host, HUB_TAG, ['127.0.0.1', 'OSNET_ZOO_READ_TIMEOUT']),
    'silent_host_drive': (silent_host, DRIVE_TAG, ['127.0.0.1', 'OSNET_ZOO_READ_TIMEOUT']),
    'hub_file_never_answers': (lambda: http_host(_root_answers_files_hang), HUB_TAG,
                               ['/resolve/', 'did not answer', 'OSNET_ZOO_READ_TIMEOUT']),
    'redirect_loop_drive': (lambda: http_host(_redirect_loop), DRIVE_TAG, ['127.0.0.1', 'redirect']),
    'redirect_loop_hub': (lambda: http_host(_redirect_loop), HUB_TAG, ['127.0.0.1', 'redirect']),
}


@pytest.mark.parametrize('case', list(HOSTS))
def test_pretrained_from_a_bad_host_answers_within_the_timeouts(case, tmp_path):
    host, tag, names = HOSTS[case]
    with host() as url:
        env = child_env(HF_ENDPOINT=url, OSNET_ZOO_GDRIVE_URL=url + '/{id}', HF_HUB_CACHE=tmp_path / 'hf',
                        OSNET_ZOO_CACHE=tmp_path / 'oz', OSNET_ZOO_CONNECT_TIMEOUT='2', OSNET_ZOO_READ_TIMEOUT='2',
                        HF_HUB_OFFLINE=None, OSNET_ZOO_MANIFEST=None)
        # the subprocess's own limit: huggingface_hub alone would wait minutes (retries with 60 s timeouts)
        proc = run_python('-c', LOAD.format(tag), cwd=REPO, env=env, timeout=150)
    assert proc.returncode != 0 and 'WeightsUnavailableError' in proc.stderr, proc.stderr[-800:]
    assert_names(proc.stderr, *names)


@pytest.mark.parametrize('template', ['http://[::1/{id}', 'ftp://host/{id}', 'http:///{id}'])
def test_malformed_gdrive_url_is_one_line(template, monkeypatch):
    monkeypatch.setenv(weights_cache.GDRIVE_ENV, template)
    assert_names(library_error(lambda: weights_cache.gdrive_download_url('abc')), 'OSNET_ZOO_GDRIVE_URL', template)


@pytest.mark.parametrize('value', ['soon', '0', '-3', 'inf'])
def test_bad_timeout_setting_is_one_line(value, monkeypatch):
    monkeypatch.setenv(weights_cache.READ_TIMEOUT_ENV, value)
    assert_names(library_error(weights_cache.network_timeouts), 'OSNET_ZOO_READ_TIMEOUT', value)


def test_cache_tag_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    root = tmp_path / 'oz'
    root.mkdir()
    (root / DRIVE_TAG).write_text('not a folder')
    monkeypatch.setenv(weights_cache.CACHE_ENV, str(root))
    monkeypatch.setenv(weights_cache.GDRIVE_ENV, 'http://127.0.0.1:9/{id}')  # never reached
    message = library_error(lambda: timm.create_model(DRIVE_TAG, pretrained=True))
    assert_names(message, DRIVE_TAG, 'is a file', 'delete it')
    assert (root / DRIVE_TAG).read_text() == 'not a folder'


# ----------------------------------------------------------------------------------------------- recipes' files

def _pa100k(tmp: Path, payload: bytes) -> Path:
    (tmp / 'pa100k' / 'data').mkdir(parents=True)
    (tmp / 'pa100k' / 'annotation.mat').write_bytes(payload)
    return tmp


def _cifar10(tmp: Path) -> Path:
    base = tmp / 'cifar-10-batches-bin'
    base.mkdir(parents=True)
    for name in [f'data_batch_{i}.bin' for i in range(1, 6)] + ['test_batch.bin']:
        (base / name).write_bytes(b'')
    (base / 'batches.meta.txt').write_bytes(b'airplane\n\xff\xfe\x00car\n')
    return tmp


def _imagenet(tmp: Path, nested: bool) -> Path:
    from PIL import Image
    for split in ('train', 'val'):
        for wnid in ('n01', 'n02'):
            (tmp / 'imagenet' / split / wnid).mkdir(parents=True)
            for i in range(2):
                Image.new('RGB', (8, 8)).save(tmp / 'imagenet' / split / wnid / f'{i}.JPEG')
    if nested:
        (tmp / 'imagenet' / 'val' / 'n02' / 'more').mkdir()
        Image.new('RGB', (8, 8)).save(tmp / 'imagenet' / 'val' / 'n02' / 'more' / '9.JPEG')
    else:
        Image.new('RGB', (8, 8)).save(tmp / 'imagenet' / 'val' / 'ILSVRC2012_val_00000001.JPEG')
    return tmp


RECIPE_FILES: Dict[str, tuple] = {
    'pa100k_empty_annotation': ('pa100k', lambda tmp: _pa100k(tmp, b''), ['annotation.mat', 'MATLAB']),
    'pa100k_truncated_annotation': ('pa100k', lambda tmp: _pa100k(tmp, b'MATLAB 5.0 MAT-file' + b'\x00' * 100),
                                    ['annotation.mat', 'truncated']),
    'cifar10_meta_not_utf8': ('cifar10', _cifar10, ['batches.meta.txt', 'UTF-8']),
    'imagenet_val_nested_folder': ('imagenet', lambda tmp: _imagenet(tmp, True), ['more', 'n02']),
    'imagenet_val_loose_image': ('imagenet', lambda tmp: _imagenet(tmp, False), ['ILSVRC2012_val_00000001.JPEG',
                                                                                  'class folder']),
}


@pytest.mark.parametrize('case', list(RECIPE_FILES))
def test_recipe_dataset_files_refused_by_name(case, tmp_path):
    pytest.importorskip('scipy')
    name, make, names = RECIPE_FILES[case]
    root = make(tmp_path)
    assert_names(library_error(lambda: LABELLED_DATASETS[name](root)), *names)


# ----------------------------------------------------------------------------------------------- ONNX cache

def _drop_output(record_file: Path) -> None:
    record = json.loads(record_file.read_text())
    del record['contract']['output']
    record_file.write_text(json.dumps(record))


def _folder_instead(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / 'stray').write_text('x')


ONNX_DAMAGE: Dict[str, Callable[[Path], None]] = {
    'record_a_list': lambda onnx: _record_path(onnx).write_text('[1, 2]'),
    'record_a_string': lambda onnx: _record_path(onnx).write_text('"model"'),
    'record_without_output': lambda onnx: _drop_output(_record_path(onnx)),
    'folder_in_place_of_the_file': _folder_instead,
    'folder_in_place_of_the_record': lambda onnx: _folder_instead(_record_path(onnx)),
}


@pytest.fixture(scope='module')
def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model('osnet_x0_25', num_classes=0).eval()


@pytest.mark.parametrize('case', list(ONNX_DAMAGE))
def test_damaged_onnx_cache_entry_is_rebuilt(case, small_model, tmp_path):
    pytest.importorskip('onnxruntime')
    first = OnnxRuntimeModel(small_model, cache=tmp_path, input_size=(3, 64, 32))
    ONNX_DAMAGE[case](first.path)
    rebuilt = OnnxRuntimeModel(small_model, cache=tmp_path, input_size=(3, 64, 32))
    again = OnnxRuntimeModel(small_model, cache=tmp_path, input_size=(3, 64, 32))
    assert rebuilt.path == first.path and not rebuilt.cache_hit, 'the damaged entry was used'
    assert again.cache_hit, 'the entry was not repaired: every later build exports again (or falls back)'
    x = torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.allclose(again(x), small_model(x), atol=1e-4)


# ----------------------------------------------------------------------------------------------- the audit's four

def test_weights_convert_of_a_run_writes_its_input_size(finished_run, tmp_path):
    recorded = json.loads((finished_run / 'final' / 'config.json').read_text())['pretrained_cfg']
    assert recorded['input_size'] == [3, 32, 16]
    code = weights_main(['convert', str(finished_run / 'final' / 'model.safetensors'), '--model', 'osnet_x0_25',
                         '--tag', 'mine', '--output', str(tmp_path / 'hub')])
    written = json.loads((tmp_path / 'hub' / 'config.json').read_text())['pretrained_cfg']
    assert code == 0 and written['input_size'] == [3, 32, 16], written['input_size']
    assert written['mean'] == recorded['mean'] and written['std'] == recorded['std']


def test_weights_verify_says_what_is_true_of_an_existing_cache(tmp_path, monkeypatch, capsys):
    (tmp_path / 'oz').mkdir()
    monkeypatch.setenv(weights_cache.CACHE_ENV, str(tmp_path / 'oz'))
    code = weights_main(['verify', '--cache-dir', str(tmp_path / 'no_hf')])
    err = capsys.readouterr().err
    assert code == 2 and 'no osnet-zoo cache at' not in err, err
    assert_names(err, str(tmp_path / 'oz'), 'holds no converted tag', 'no such folder')


def test_offline_recipe_pretrained_failure_names_pretrained(root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    line = cli_error(train_main, [*train_base(root, tmp_path / 'run'), '--pretrained', 'imagenet'], capsys)
    assert_names(line, '--pretrained imagenet', 'HF_HUB_OFFLINE')
    assert '--init-checkpoint None' not in line, line


def test_evaluate_accepts_no_pretrained(root, tmp_path):
    argv = evaluate_base(root, root / 'data', tmp_path / 'out')
    at = argv.index('--checkpoint')
    del argv[at:at + 2]
    results = evaluate_main([*argv, '--no-pretrained'])
    assert 0 <= results['targets']['market1501']['mAP'] <= 1
