"""Downloads from the authors' own locations, through the real code paths, against a real local HTTP server.

A standard-library HTTP server on 127.0.0.1 (``weights_server.py``) stands in for Google Drive
(``OSNET_ZOO_GDRIVE_URL``) and the Hugging Face Hub (huggingface_hub's own ``HF_ENDPOINT``, set before the
subprocesses that use it start) and serves small real checkpoints in the reference layouts. Nothing of gdown,
huggingface_hub or timm is mocked. What cannot be tested here is Google Drive's own confirmation flow for large
files (gdown handles it; the stand-in serves files directly): see docs/weights.md.
"""
import json
import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from osnet_zoo.weights import (
    WeightsIntegrityError, WeightsTrustError, WeightsUnavailableError, file_sha256, load_osnet_checkpoint,
)
from osnet_zoo.weights.__main__ import main as weights_cli
from osnet_zoo.weights.manifest import PACKAGED_MANIFEST, load_manifest, write_manifest
from conftest import REPO, child_env, run_python, start_python
from test_weights_hub import reference_state, save_reference
from weights_server import WeightsServer

X = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(7))
PACKAGED = load_manifest(PACKAGED_MANIFEST)
FIRST_USE = 'osnet_x0_25.market1501'  # Drive only, no digest recorded: trusted on first use
RECORDED = 'osnet_x0_25.msmt17'  # Drive only, sha256 and size recorded
UNPINNED = 'osnet_x0_75.msmt17_combineall'  # the authors' Hub file, no revision recorded


def write_reference(path: Path, state_dict: dict, layout: str) -> Path:
    """A file as the reference zoo ships it: 'plain' state_dict, 'trainer' checkpoint (.pth / .pth.tar),
    or 'pycls' (.pyth: {'model_state', 'optimizer_state', 'epoch', 'cfg'})."""
    if layout == 'pycls':
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({'epoch': 99, 'model_state': state_dict, 'optimizer_state': {'state': {}, 'param_groups': []},
                    'cfg': 'MODEL:\n  TYPE: osnet_ain\n'}, path)
        return path
    return save_reference(path, state_dict, trainer=layout == 'trainer')


def layout_of(entry) -> str:
    name = entry.upstream['filename'] or ''
    if name.endswith('.pyth'):
        return 'pycls'
    return 'trainer' if entry.task == 'person-reid' else 'plain'


def embed(model):
    with torch.inference_mode():
        return model.eval().forward_head(model.forward_features(X), pre_logits=True)


def reference_embedding(name: str, path: Path, num_classes: int):
    model = timm.create_model(name.split('.')[0], num_classes=num_classes)
    return embed(load_osnet_checkpoint(model, path, strict=True))


def one_line(e: BaseException) -> str:
    text = str(e)
    assert '\n' not in text, text
    return text


def leftovers(folder: Path) -> list:
    """Anything a download may leave half-written: temporary files, or a conversion without its source.json."""
    if not folder.exists():
        return []
    bad = [p for p in folder.rglob('*') if '.tmp' in p.name or p.name.endswith('.part')]
    if (folder / 'model.safetensors').exists() and not (folder / 'source.json').exists():
        bad.append(folder / 'model.safetensors')
    return bad


@pytest.fixture(scope='module')
def shapes(torchreid_fixtures):
    return json.loads((torchreid_fixtures / 'keys.json').read_text())


@pytest.fixture(scope='module')
def files(tmp_path_factory, shapes):
    """Reference-layout files of the x0_25 tags used here (random weights, the entries' class counts)."""
    root = tmp_path_factory.mktemp('ref')
    out = {}
    for i, name in enumerate([FIRST_USE, RECORDED]):
        entry = PACKAGED.entry(name)
        sd = reference_state(shapes[entry.architecture], entry.num_classes, seed=10 + i)
        out[name] = write_reference(root / name / entry.upstream['filename'], sd, layout_of(entry))
        other = reference_state(shapes[entry.architecture], entry.num_classes, seed=50 + i)
        out[name + ':other'] = write_reference(root / (name + '.other') / entry.upstream['filename'], other,
                                               layout_of(entry))
    return out


@pytest.fixture
def env(tmp_path, monkeypatch, files):
    """A running stand-in server, an empty osnet-zoo cache, a test manifest recording RECORDED's true digest."""
    manifest = tmp_path / 'manifest.json'
    src = files[RECORDED]
    write_manifest(PACKAGED.updated(RECORDED, {'upstream.sha256': file_sha256(src),
                                               'upstream.size': src.stat().st_size}), manifest)
    with WeightsServer() as server:
        for key in ('HF_HUB_OFFLINE', 'OSNET_ZOO_STRICT_WEIGHTS', 'OSNET_ZOO_KEEP_ORIGINALS'):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv('OSNET_ZOO_GDRIVE_URL', server.gdrive_template)
        monkeypatch.setenv('OSNET_ZOO_CACHE', str(tmp_path / 'cache'))
        monkeypatch.setenv('OSNET_ZOO_MANIFEST', str(manifest))
        server.cache = tmp_path / 'cache'
        server.manifest = manifest
        yield server


def gdrive_id(name: str) -> str:
    return PACKAGED.entry(name).upstream['gdrive_id']


# ---------------------------------------------------------------------------------------------------- first use

def test_first_use_is_locked_cached_and_loaded_without_network(env, files, caplog):
    env.drive(gdrive_id(FIRST_USE), files[FIRST_USE])
    with caplog.at_level('WARNING', logger='osnet_zoo.weights.hub'):
        model = timm.create_model(FIRST_USE, pretrained=True, num_classes=0)
    expected = reference_embedding(FIRST_USE, files[FIRST_USE], 751)
    assert torch.equal(embed(model), expected)
    digest = file_sha256(files[FIRST_USE])
    lock = json.loads((env.cache / 'weights.lock.json').read_text())['tags'][FIRST_USE]
    assert lock['sha256'] == digest and lock['size'] == files[FIRST_USE].stat().st_size
    assert lock['url'] == env.gdrive_template.replace('{id}', gdrive_id(FIRST_USE)) and lock['date']
    warnings = [r for r in caplog.records if 'trusting it on first use' in r.getMessage()]
    assert len(warnings) == 1 and digest in warnings[0].getMessage() and '\n' not in warnings[0].getMessage()
    folder = env.cache / FIRST_USE
    assert (folder / 'original' / files[FIRST_USE].name).read_bytes() == files[FIRST_USE].read_bytes()
    assert model.pretrained_cfg['url'] == PACKAGED.entry(FIRST_USE).gdrive_url and not leftovers(folder)
    assert [r for r in env.requests if 'gdrive' in r] == [f'GET /gdrive/{gdrive_id(FIRST_USE)}']

    # the server is gone: the cached safetensors loads, no request, no new warning
    env.stop()
    caplog.clear()
    with caplog.at_level('WARNING', logger='osnet_zoo.weights.hub'):
        again = timm.create_model(FIRST_USE, pretrained=True, num_classes=0)
    assert torch.equal(embed(again), expected) and not caplog.records
    assert len(env.requests) == 1
    # the cache folder is a timm folder too
    local = timm.create_model(f'local-dir:{folder}', pretrained=True, num_classes=0)
    assert torch.equal(embed(local), expected)
    # damaged cached bytes are refused, naming the file
    weights = folder / 'model.safetensors'
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(WeightsIntegrityError, match=f'cached {weights} has sha256 .*damaged'):
        timm.create_model(FIRST_USE, pretrained=True, num_classes=0)


def test_a_changed_file_after_first_use_is_refused(env, files):
    env.drive(gdrive_id(FIRST_USE), files[FIRST_USE])
    timm.create_model(FIRST_USE, pretrained=True, num_classes=0)
    first = file_sha256(files[FIRST_USE])
    lock_file = env.cache / 'weights.lock.json'
    before = lock_file.read_bytes()
    # the conversion is gone (a new machine sharing the lock file, a cleaned cache); Drive now serves other bytes
    for p in sorted((env.cache / FIRST_USE).rglob('*'), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    env.drive(gdrive_id(FIRST_USE), files[FIRST_USE + ':other'])
    with pytest.raises(WeightsTrustError) as err:
        timm.create_model(FIRST_USE, pretrained=True, num_classes=0)
    msg = one_line(err.value)
    assert first in msg and file_sha256(files[FIRST_USE + ':other']) in msg and str(lock_file) in msg
    assert lock_file.read_bytes() == before
    assert not (env.cache / FIRST_USE / 'model.safetensors').exists() and not leftovers(env.cache / FIRST_USE)
    assert not (env.cache / FIRST_USE / 'original' / files[FIRST_USE].name).exists()


# ---------------------------------------------------------------------------------------------------- recorded

def test_recorded_digest_refuses_a_wrong_file_and_loads_the_right_one(env, files, monkeypatch):
    env.drive(gdrive_id(RECORDED), files[RECORDED + ':other'])
    with pytest.raises(WeightsIntegrityError) as err:
        timm.create_model(RECORDED, pretrained=True, num_classes=0)
    msg = one_line(err.value)
    assert file_sha256(files[RECORDED]) in msg and file_sha256(files[RECORDED + ':other']) in msg
    assert RECORDED in msg and env.gdrive_template.replace('{id}', gdrive_id(RECORDED)) in msg
    assert 'Manual fallback:' in msg and PACKAGED.entry(RECORDED).gdrive_url in msg
    assert not (env.cache / RECORDED / 'model.safetensors').exists() and not leftovers(env.cache / RECORDED)
    env.drive(gdrive_id(RECORDED), files[RECORDED])
    monkeypatch.setenv('OSNET_ZOO_KEEP_ORIGINALS', '0')  # the downloaded file is dropped after conversion
    model = timm.create_model(RECORDED, pretrained=True)
    assert model.num_classes == 1041 and not list((env.cache / RECORDED / 'original').iterdir())
    assert torch.equal(embed(model), reference_embedding(RECORDED, files[RECORDED], 1041))
    assert not (env.cache / 'weights.lock.json').exists()  # verified against the manifest: nothing to trust
    assert json.loads((env.cache / RECORDED / 'source.json').read_text())['status'] == 'verified'


# ---------------------------------------------------------------------------------------------------- failures

def test_html_page_truncated_body_and_malicious_pickle_fail_in_one_line_leaving_nothing(env, files, tmp_path):
    gid, url = gdrive_id(FIRST_USE), env.gdrive_template.replace('{id}', gdrive_id(FIRST_USE))
    marker = tmp_path / 'pwned'

    class Evil:
        def __reduce__(self):
            return os.system, (f'touch {marker}',)

    cases = {
        'html': (b'', 'sent an HTML page ("Google Drive - Quota exceeded")'),
        'truncate': (files[FIRST_USE].read_bytes(), 'download is incomplete'),
        'ok': (pickle.dumps({'state_dict': Evil()}), 'not a readable checkpoint (Refusing to load'),
    }
    for mode, (payload, expected) in cases.items():
        env.drive(gid, payload, mode=mode)
        t = time.monotonic()
        with pytest.raises(WeightsIntegrityError) as err:
            timm.create_model(FIRST_USE, pretrained=True, num_classes=0)
        assert time.monotonic() - t < 20
        msg = one_line(err.value)
        assert expected in msg and FIRST_USE in msg and url in msg and 'Manual fallback:' in msg, msg
        assert not (env.cache / FIRST_USE / 'model.safetensors').exists() and not leftovers(env.cache / FIRST_USE)
        assert not (env.cache / 'weights.lock.json').exists()
    assert not marker.exists()
    # a file of another architecture: refused before anything is trusted
    env.drive(gid, files[RECORDED])
    with pytest.raises(WeightsIntegrityError, match='is not a checkpoint of osnet_x0_25 .*1041 classes'):
        timm.create_model(FIRST_USE, pretrained=True, num_classes=0)
    assert not (env.cache / 'weights.lock.json').exists()


def test_unreachable_drive_fails_fast_with_the_reason(env, monkeypatch):
    monkeypatch.setenv('OSNET_ZOO_GDRIVE_URL', 'http://127.0.0.1:9/{id}')
    t = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as err:
        timm.create_model(FIRST_USE, pretrained=True, num_classes=0)
    assert time.monotonic() - t < 15
    msg = str(err.value)
    assert f'http://127.0.0.1:9/{gdrive_id(FIRST_USE)}: cannot be reached' in msg and '3. load:' in msg


def test_strict_mode_refuses_unpinned_sources_and_allows_recorded_digests(env, files, monkeypatch):
    env.drive(gdrive_id(FIRST_USE), files[FIRST_USE])
    timm.create_model(FIRST_USE, pretrained=True, num_classes=0)  # trusted on first use, cached
    monkeypatch.setenv('OSNET_ZOO_STRICT_WEIGHTS', '1')
    requests = len(env.requests)
    with pytest.raises(WeightsUnavailableError) as err:
        timm.create_model(FIRST_USE, pretrained=True, num_classes=0)  # not even the cached first use
    msg = str(err.value)
    assert 'OSNET_ZOO_STRICT_WEIGHTS=1' in msg and "pretrained_cfg_overlay=dict(file='osnet_x0_25_market" in msg
    with pytest.raises(WeightsUnavailableError, match='OSNET_ZOO_STRICT_WEIGHTS=1'):
        timm.create_model(UNPINNED, pretrained=True, num_classes=0)
    assert len(env.requests) == requests  # nothing was fetched
    env.drive(gdrive_id(RECORDED), files[RECORDED])
    model = timm.create_model(RECORDED, pretrained=True, num_classes=0)
    assert torch.equal(embed(model), reference_embedding(RECORDED, files[RECORDED], 1041))


# ---------------------------------------------------------------------------------------------------- kill -9

def test_kill_9_mid_download_leaves_nothing_then_a_clean_retry(env, files, tmp_path):
    big = files[FIRST_USE].read_bytes()
    env.drive(gdrive_id(FIRST_USE), big, mode='slow')  # ~3 MB at 64 KiB / 50 ms: a few seconds
    script = f'import timm, osnet_zoo\ntimm.create_model({FIRST_USE!r}, pretrained=True, num_classes=0)\n'
    proc = start_python('-c', script, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    folder = env.cache / FIRST_USE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        partial = [p for p in folder.rglob('*.tmp*') if p.stat().st_size > 0] if folder.exists() else []
        if partial:
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    assert partial, 'the download never started'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert not (folder / 'model.safetensors').exists() and not (folder / 'source.json').exists()
    assert not (env.cache / 'weights.lock.json').exists()
    # the retry clears the killed download's temporary file and finishes
    env.drive(gdrive_id(FIRST_USE), big)
    model = timm.create_model(FIRST_USE, pretrained=True, num_classes=0)
    assert torch.equal(embed(model), reference_embedding(FIRST_USE, files[FIRST_USE], 751))
    assert not leftovers(folder)


# ---------------------------------------------------------------------------------------------------- CLI

def test_download_cli_summary_verify_and_mirror_from_the_cache(env, files, tmp_path, capsys):
    env.drive(gdrive_id(FIRST_USE), files[FIRST_USE])
    env.drive(gdrive_id(RECORDED), files[RECORDED])
    assert weights_cli(['download', FIRST_USE, RECORDED, 'osnet_x0_25.dukemtmcreid']) == 1  # the last: no file
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith('osnet_x0_25.')}
    assert 'gdrive' in rows[FIRST_USE] and file_sha256(files[FIRST_USE]) in rows[FIRST_USE]
    assert rows[FIRST_USE].rstrip().endswith('first use') and rows[RECORDED].rstrip().endswith('verified')
    assert 'failed' in rows['osnet_x0_25.dukemtmcreid'] and 'HTTP 404' in out
    assert weights_cli(['download', FIRST_USE]) == 0 and 'cached' in capsys.readouterr().out

    assert weights_cli(['verify']) == 0
    out = capsys.readouterr().out
    assert f'{FIRST_USE}' in out and 'ok (first use, locked)' in out and 'ok (verified)' in out
    # mirror --dry-run takes the cache's kept originals
    work = tmp_path / 'mirror'
    assert weights_cli(['mirror', '--dry-run', '--output', str(work), '--manifest', str(env.manifest)]) == 0
    state = json.loads((work / 'mirror_state.json').read_text())
    assert set(state['tags']) == {FIRST_USE, RECORDED}
    # a damaged conversion and a lock that disagrees with the cache are reported
    weights = env.cache / FIRST_USE / 'model.safetensors'
    weights.write_bytes(weights.read_bytes()[:-4])
    assert weights_cli(['verify']) == 1
    assert 'MISMATCH' in capsys.readouterr().out


def test_download_of_several_tags_from_an_unreachable_host_names_each_tags_own_url(env):
    """After the first Drive file's host fails to answer, the next tag is not requested, and its failure line
    names its own URL (never the first tag's)."""
    base = env.url
    env.stop()  # a real server's port, now closed: connections are refused
    proc = run_python('-m', 'osnet_zoo.weights', 'download', FIRST_USE, RECORDED, cwd=env.cache.parent)
    assert proc.returncode == 1, proc.stderr[-2000:]
    failed = {line.split(': ', 2)[1]: line for line in proc.stdout.splitlines() if line.startswith('failed: ')}
    assert set(failed) == {FIRST_USE, RECORDED}, proc.stdout[-2000:]
    for name, other in ((FIRST_USE, RECORDED), (RECORDED, FIRST_USE)):
        assert f'{base}/gdrive/{gdrive_id(name)}: ' in failed[name]
        assert gdrive_id(other) not in failed[name], failed[name]
    assert f'{base}/gdrive/{gdrive_id(FIRST_USE)}: cannot be reached (ConnectionError' in failed[FIRST_USE]
    assert f'{base}/gdrive/{gdrive_id(RECORDED)}: not requested: {base[len("http://"):]} cannot be reached' \
        in failed[RECORDED]


# ---------------------------------------------------------------------------------------------------- the Hub

def _fresh_machine(server: WeightsServer, cache: Path, manifest: Path) -> dict:
    """The environment of a machine that reaches the Hub and Drive at ``server``, with empty caches under ``cache``."""
    return child_env(HF_ENDPOINT=server.url, HF_HUB_CACHE=cache / 'hf', OSNET_ZOO_CACHE=cache / 'oz',
                     OSNET_ZOO_GDRIVE_URL=server.gdrive_template, OSNET_ZOO_MANIFEST=manifest, HF_HUB_DISABLE_XET='1',
                     HF_HUB_OFFLINE=None, HF_HOME=None, OSNET_ZOO_STRICT_WEIGHTS=None)


def test_unpinned_hub_file_at_main_is_locked_with_its_commit_then_a_change_is_refused(tmp_path, shapes):
    entry = PACKAGED.entry(UNPINNED)
    fname = entry.upstream['filename']
    first = write_reference(tmp_path / 'a' / fname, reference_state(shapes['osnet_x0_75'], 4101, 1), 'trainer')
    second = write_reference(tmp_path / 'b' / fname, reference_state(shapes['osnet_x0_75'], 4101, 2), 'trainer')
    manifest = tmp_path / 'm.json'
    write_manifest(PACKAGED, manifest)
    script = (f'import timm, osnet_zoo\n'
              f'm = timm.create_model({UNPINNED!r}, pretrained=True, num_classes=0)\n'
              f"print('SRC', m.pretrained_cfg['hf_hub_id'])\n")
    with WeightsServer() as server:
        # not at the manifest's most-pinned revision of the repo: the file is taken from main
        server.hub('kaiyangzhou/osnet', 'a5c5cc037c24235cda3b21085b93ad77c9616224', 'other.pth', b'x', head=False)
        server.hub('kaiyangzhou/osnet', '1' * 40, fname, first)
        proc = run_python('-c', script, cwd=REPO, env=_fresh_machine(server, tmp_path / 'c1', manifest))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f'SRC kaiyangzhou/osnet@{"1" * 40}' in proc.stdout and 'trusting it on first use' in proc.stderr
        lock = json.loads((tmp_path / 'c1' / 'oz' / 'weights.lock.json').read_text())['tags'][UNPINNED]
        assert (lock['sha256'], lock['revision'], lock['source']) == (file_sha256(first), '1' * 40, 'hub-unpinned')
        assert lock['url'] == f'{server.url}/kaiyangzhou/osnet/resolve/{"1" * 40}/{fname}'
    # the authors push another file to main; a fresh machine with the same lock file
    with WeightsServer() as server:
        server.hub('kaiyangzhou/osnet', '2' * 40, fname, second)
        lock_dir = tmp_path / 'c3' / 'oz'
        lock_dir.mkdir(parents=True)
        (lock_dir / 'weights.lock.json').write_bytes((tmp_path / 'c1' / 'oz' / 'weights.lock.json').read_bytes())
        proc = run_python('-c', script, cwd=REPO, env=_fresh_machine(server, tmp_path / 'c3', manifest))
    assert proc.returncode != 0 and 'WeightsTrustError' in proc.stderr
    assert file_sha256(first) in proc.stderr and file_sha256(second) in proc.stderr
    assert not (lock_dir / UNPINNED / 'model.safetensors').exists()


# ---------------------------------------------------------------------------------------------------- 43 tags

WALK = '''
import sys, timm, torch, osnet_zoo
from osnet_zoo.models.osnet import checkpoint_filter_fn
from osnet_zoo.weights import read_checkpoint, unwrap_state_dict
tags = sys.argv[1].split(',')
sources = sys.argv[2].split(',')
for walk in ('first', 'cached'):
    for tag, src in zip(tags, sources):
        model = timm.create_model(tag, pretrained=True, num_classes=0)
        expected = checkpoint_filter_fn(unwrap_state_dict(read_checkpoint(src)), model)
        got = model.state_dict()
        assert expected and all(torch.equal(got[k], v) for k, v in expected.items()), tag
        print(walk, tag, model.pretrained_cfg.get('hf_hub_id') or model.pretrained_cfg.get('url'), flush=True)
    if walk == 'first':
        print('WALKED', flush=True)
        sys.stdin.readline()  # the test stops the server before the cached walk
'''


def test_all_43_tags_load_through_timm_then_again_with_the_server_stopped(tmp_path, shapes):
    """Every tag through timm.create_model(tag, pretrained=True, num_classes=0) against the stand-ins: the 8
    pinned Hub files and the 2 unpinned ones from the local Hub, the 33 others from the local Drive; the test
    manifest records the test files' digests where the packaged one records the authors'. Then the same walk
    with the server stopped: every tag from the osnet-zoo cache."""
    backbones, srcs = {}, {}
    manifest = PACKAGED
    with WeightsServer() as server:
        for i, entry in enumerate(PACKAGED):
            arch = entry.architecture
            if arch not in backbones:
                backbones[arch] = reference_state(shapes[arch], 0, seed=len(backbones))
            head = reference_state({k: v for k, v in shapes[arch].items() if k.startswith('classifier.')},
                                   entry.num_classes, seed=100 + i)
            path = write_reference(tmp_path / 'ref' / entry.name / entry.upstream['filename'],
                                   {**backbones[arch], **head}, layout_of(entry))
            srcs[entry.name] = path
            # the test files' digests and sizes stand in for the authors' where the manifest records them
            known = {'upstream.sha256': file_sha256(path) if entry.upstream['sha256'] else None,
                     'upstream.size': path.stat().st_size if entry.upstream['size'] else None}
            manifest = manifest.updated(entry.name, known)
            up = entry.upstream_file
            if up is not None:
                server.hub(up.repo_id, 'a5c5cc037c24235cda3b21085b93ad77c9616224', up.filename, path)
            else:
                server.drive(entry.upstream['gdrive_id'], path)
        manifest_path = tmp_path / 'm.json'
        write_manifest(manifest, manifest_path)
        names = [e.name for e in PACKAGED]
        proc = start_python('-c', WALK, ','.join(names), ','.join(str(srcs[n]) for n in names), cwd=REPO,
                            env=_fresh_machine(server, tmp_path, manifest_path), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = []
        for line in proc.stdout:
            if line.startswith('WALKED'):
                break
            first.append(line.split())
        else:
            pytest.fail(proc.stderr.read()[-3000:])
        requests = list(server.requests)
    # the server is stopped: the cached walk
    out, err = proc.communicate('go\n', timeout=600)
    assert proc.returncode == 0, err[-3000:]
    cached = [line.split() for line in out.splitlines() if line.startswith('cached')]
    assert [r[1] for r in first] == names and [r[1] for r in cached] == names
    assert [r[2] for r in first] == [r[2] for r in cached]
    hub = {e.name for e in PACKAGED if e.upstream_file is not None}
    assert len(hub) == 10 and all(r[2].startswith('kaiyangzhou/osnet@') for r in first if r[1] in hub)
    assert all(r[2].startswith('https://drive.google.com/uc?id=') for r in first if r[1] not in hub)
    assert sum('/gdrive/' in r for r in requests if r.startswith('GET')) == 33
    lock = json.loads((tmp_path / 'oz' / 'weights.lock.json').read_text())['tags']
    recorded = {e.name for e in PACKAGED if e.upstream['sha256']}  # verified; the others trusted on first use
    assert set(lock) == set(names) - recorded and len(recorded) == 12
