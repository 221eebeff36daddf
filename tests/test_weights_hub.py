"""Pretrained weights through timm's public calls from a real, offline Hugging Face cache.

The tests make reference-layout (torchreid) checkpoints with random weights, convert them with the CLI,
lay them out as huggingface_hub's cache does after a download (blobs named by etag, snapshot symlinks,
refs/main), switch the Hub off (HF_HUB_OFFLINE=1) and load with ``timm.create_model(..., pretrained=True)``.
Nothing of huggingface_hub or timm is mocked.
"""
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
from huggingface_hub import ModelCard, ModelCardData
from safetensors.torch import save_file

from osnet_zoo import cli
from osnet_zoo.weights import (
    CheckpointError, WeightsIntegrityError, WeightsUnavailableError, file_sha256, load_osnet_checkpoint,
)
from osnet_zoo.weights.__main__ import main as weights_cli
from osnet_zoo.publish.convert import HUB_FILES, record_publication
from osnet_zoo.weights.manifest import PACKAGED_MANIFEST, load_manifest, write_manifest
from conftest import REPO, child_env, run_python, start_python

ENTRIES = list(load_manifest(PACKAGED_MANIFEST).entries)
UNKNOWN_CLASSES = 7  # classifier of a test checkpoint whose entry does not record its class count
X = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(1))
UPSTREAM = 'kaiyangzhou/osnet'
UPSTREAM_REV = 'a5c5cc037c24235cda3b21085b93ad77c9616224'  # the revision the manifest pins
X0_25_ALL = 'osnet_x0_25.msmt17_combineall'


def seed_hf_cache(cache: Path, repo_id: str, files: dict, commit: str = None) -> str:
    """Lay ``files`` ({name: path or bytes}) out as huggingface_hub does after downloading them: blobs named
    by their etag (sha256 for LFS files, git blob sha1 for small text files), snapshots/<commit>/<name> as
    relative symlinks to the blobs, and refs/main holding the commit. Returns the commit."""
    repo = Path(cache) / ('models--' + repo_id.replace('/', '--'))
    (repo / 'blobs').mkdir(parents=True, exist_ok=True)
    etags = {}
    for name, payload in files.items():
        data = Path(payload).read_bytes() if isinstance(payload, (str, Path)) else payload
        if name.endswith(('.safetensors', '.pth', '.pth.tar', '.pyth', '.bin')):
            etag = hashlib.sha256(data).hexdigest()
        else:
            etag = hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()
        (repo / 'blobs' / etag).write_bytes(data)
        etags[name] = etag
    commit = commit or hashlib.sha1(json.dumps(sorted(etags.items())).encode()).hexdigest()
    snapshot = repo / 'snapshots' / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, etag in etags.items():
        link = snapshot / name
        if not link.is_symlink():
            link.symlink_to(Path('..', '..', 'blobs', etag))
    (repo / 'refs').mkdir(exist_ok=True)
    (repo / 'refs' / 'main').write_text(commit)
    return commit


def blob_of(cache: Path, repo_id: str, filename: str) -> Path:
    repo = Path(cache) / ('models--' + repo_id.replace('/', '--'))
    commit = (repo / 'refs' / 'main').read_text()
    return (repo / 'snapshots' / commit / filename).resolve()


def reference_state(shapes: dict, num_classes: int, seed: int) -> dict:
    """Random weights in the reference (torchreid) layout, with sane scales and BN statistics."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in shapes.items():
        if key.startswith('classifier.'):
            if num_classes == 0:
                continue
            shape = [num_classes] + list(shape[1:])
        if key.endswith('num_batches_tracked'):
            sd[key] = torch.tensor(150)
        elif key.endswith('running_var'):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith('running_mean'):
            sd[key] = torch.randn(shape, generator=g) * 0.1
        elif len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            sd[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif key.endswith('weight'):
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            sd[key] = 0.1 * torch.randn(shape, generator=g)
    return sd


def save_reference(path: Path, state_dict: dict, trainer: bool) -> Path:
    """A .pth as the reference writes it: a plain state_dict, or its trainer checkpoint (DataParallel
    prefixes, a numpy rank-1 scalar that plain weights_only loading refuses, optimizer state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if trainer:
        torch.save({'state_dict': {'module.' + k: v for k, v in state_dict.items()}, 'epoch': 150,
                    'rank1': np.float32(0.5), 'optimizer': {'state': {}, 'param_groups': []}}, path)
    else:
        torch.save(state_dict, path)
    return path


def embed(model, x=X):
    with torch.inference_mode():
        return model.eval().forward_head(model.forward_features(x), pre_logits=True)


def reference_model(name: str, path: Path, num_classes: int):
    model = timm.create_model(name.split('.')[0], num_classes=num_classes)
    return load_osnet_checkpoint(model, path, strict=True)


def offline(monkeypatch, manifest=None):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    if manifest is None:
        monkeypatch.delenv('OSNET_ZOO_MANIFEST', raising=False)
    else:
        monkeypatch.setenv('OSNET_ZOO_MANIFEST', str(manifest))


@pytest.fixture(scope='module')
def ref_shapes(torchreid_fixtures):
    return json.loads((torchreid_fixtures / 'keys.json').read_text())


@pytest.fixture(scope='module')
def zoo(tmp_path_factory, ref_shapes):
    """Every manifest entry: a reference-layout file (named as upstream where known), converted with the CLI
    into a test manifest, our three Hub files and the upstream files seeded into one HF cache, and each
    conversion recorded as published. Backbones are shared per architecture; classifiers per entry."""
    root = tmp_path_factory.mktemp('zoo')
    packaged = load_manifest(PACKAGED_MANIFEST)
    backbones, sources, classes = {}, {}, {}
    for i, entry in enumerate(packaged):
        arch = entry.architecture
        if arch not in backbones:
            backbones[arch] = reference_state(ref_shapes[arch], 0, seed=len(backbones))
        n = entry.num_classes if entry.num_classes is not None else UNKNOWN_CLASSES
        head = reference_state({k: v for k, v in ref_shapes[arch].items() if k.startswith('classifier.')}, n, 100 + i)
        fname = entry.upstream['filename'] or f'{entry.name}.pth'
        sources[entry.name] = save_reference(root / 'upstream' / entry.name / fname, {**backbones[arch], **head},
                                             trainer=entry.task == 'person-reid')
        classes[entry.name] = n
    # the test manifest knows the true digests of the test's upstream files
    manifest = packaged
    for entry in packaged:
        if entry.upstream_file is not None or entry.upstream['sha256'] or entry.upstream['size']:
            path = sources[entry.name]
            manifest = manifest.updated(entry.name, {'upstream.sha256': file_sha256(path),
                                                     'upstream.size': path.stat().st_size})
    manifest_path = root / 'manifest.json'
    write_manifest(manifest, manifest_path)
    out = {}
    for entry in packaged:
        out[entry.name] = root / 'out' / entry.name
        assert weights_cli(['convert', str(sources[entry.name]), '--model', entry.architecture, '--tag', entry.tag,
                            '--output', str(out[entry.name]), '--check-size', '64x32', '--update-manifest',
                            '--manifest', str(manifest_path)]) == 0
    cache = root / 'hf'
    commits = {}
    for entry in load_manifest(manifest_path):
        weights = out[entry.name] / 'model.safetensors'
        commits[entry.name] = seed_hf_cache(cache, entry.hub['repo_id'], {f: out[entry.name] / f for f in HUB_FILES})
        record_publication(load_manifest(manifest_path), entry.name, entry.hub['repo_id'], commits[entry.name],
                           file_sha256(weights), weights.stat().st_size)
    # the authors' repo as huggingface_hub caches it: their file names, at the pinned revision
    seed_hf_cache(cache, UPSTREAM, {e.upstream_file.filename: sources[e.name] for e in packaged
                                    if e.upstream_file and e.upstream_file.pinned}, commit=UPSTREAM_REV)
    yield SimpleNamespace(root=root, manifest=manifest_path, cache=cache, sources=sources, out=out,
                          classes=classes, commits=commits)
    shutil.rmtree(root, ignore_errors=True)  # 1.3 GB per worker, not needed past this module


# ---------------------------------------------------------------------------------------------------- round trip

@pytest.mark.parametrize('name', ENTRIES)
def test_every_entry_round_trips_through_convert_cache_and_timm(zoo, name, monkeypatch):
    offline(monkeypatch, zoo.manifest)
    model = timm.create_model(name, pretrained=True, cache_dir=zoo.cache)
    cfg = model.pretrained_cfg
    assert cfg['hf_hub_id'] == f'osnet-zoo/{name}@{zoo.commits[name]}'  # ours, published, pinned to its commit
    assert cfg['hf_hub_filename'] == 'model.safetensors' and 'state_dict' not in cfg
    expected = reference_model(name, zoo.sources[name], zoo.classes[name])
    assert torch.equal(embed(model), embed(expected))
    if model.num_classes:  # the manifest knows the class count: the classifier is loaded too
        assert torch.equal(model.classifier.weight, expected.classifier.weight)
    manifest = load_manifest(zoo.manifest).entry(name)
    assert manifest.num_classes == zoo.classes[name]  # filled by convert where the packaged manifest has null
    assert manifest.hub['converted_from_sha256'] == file_sha256(zoo.sources[name])


# ---------------------------------------------------------------------------------------------------- upstream .pth

def test_upstream_reference_pth_mismatch_then_loads_with_its_true_digest(zoo, tmp_path, monkeypatch):
    path = zoo.sources[X0_25_ALL]  # a reference trainer checkpoint with numpy scalars, 4101 classes
    true = file_sha256(path)
    offline(monkeypatch)  # the packaged manifest: the authors' real digest, which the test file cannot have
    with pytest.raises(WeightsIntegrityError) as err:
        timm.create_model('osnet_x0_25', pretrained=True, cache_dir=zoo.cache)  # default tag: msmt17_combineall
    msg = str(err.value)
    assert path.name in msg and 'cf55163d78fc44c62c82f85ab62d39f10438679b5abe8c698ae08cfa84aa6e18' in msg
    assert f'actual:   sha256 {true}' in msg and 'What to do: delete the cached copy' in msg

    packaged = load_manifest(PACKAGED_MANIFEST)
    test_manifest = tmp_path / 'm.json'
    write_manifest(packaged.updated(X0_25_ALL, {'upstream.sha256': true, 'upstream.size': path.stat().st_size}),
                   test_manifest)
    offline(monkeypatch, test_manifest)
    model = timm.create_model('osnet_x0_25', pretrained=True, cache_dir=zoo.cache)
    assert (model.pretrained_cfg['hf_hub_id'], model.pretrained_cfg['hf_hub_filename']) == \
        (f'{UPSTREAM}@{UPSTREAM_REV}', path.name)
    expected = reference_model(X0_25_ALL, path, 4101)
    assert torch.equal(embed(model), embed(expected))
    assert torch.equal(model.classifier.weight, expected.classifier.weight)
    with pytest.raises(Exception, match='Unsupported global'):  # what timm's own weights_only read would do
        torch.load(path, weights_only=True)


def test_falls_back_to_upstream_only_when_ours_is_missing(zoo, tmp_path, monkeypatch):
    cache = tmp_path / 'hf'
    seed_hf_cache(cache, UPSTREAM, {zoo.sources[X0_25_ALL].name: zoo.sources[X0_25_ALL]}, commit=UPSTREAM_REV)
    offline(monkeypatch, zoo.manifest)  # ours published there, but not in this cache
    model = timm.create_model(X0_25_ALL, pretrained=True, cache_dir=cache, num_classes=0)
    assert model.pretrained_cfg['hf_hub_id'] == f'{UPSTREAM}@{UPSTREAM_REV}'
    assert torch.equal(embed(model), embed(reference_model(X0_25_ALL, zoo.sources[X0_25_ALL], 4101)))

    weights = (zoo.out[X0_25_ALL] / 'model.safetensors').read_bytes()
    seed_hf_cache(cache, f'osnet-zoo/{X0_25_ALL}', {'model.safetensors': weights[:-1000]},
                  commit=zoo.commits[X0_25_ALL])
    # a damaged copy of ours is an error, not a reason to quietly use another file
    with pytest.raises(WeightsIntegrityError,
                       match=rf'expected: sha256 {file_sha256(zoo.out[X0_25_ALL] / "model.safetensors")}'):
        timm.create_model(X0_25_ALL, pretrained=True, cache_dir=cache)


# ---------------------------------------------------------------------------------------------------- bad files

def test_truncated_file_names_file_expected_and_actual(zoo, tmp_path, monkeypatch):
    name = 'osnet_x0_25.msmt17'
    weights = zoo.out[name] / 'model.safetensors'
    truncated = weights.read_bytes()[: weights.stat().st_size // 2]
    cache = tmp_path / 'hf'
    seed_hf_cache(cache, f'osnet-zoo/{name}', {'model.safetensors': truncated}, commit=zoo.commits[name])
    offline(monkeypatch, zoo.manifest)
    with pytest.raises(WeightsIntegrityError) as err:
        timm.create_model(name, pretrained=True, cache_dir=cache)
    msg = str(err.value)
    assert f'osnet-zoo/{name}@{zoo.commits[name]}/model.safetensors' in msg
    assert f'expected: sha256 {file_sha256(weights)}, {weights.stat().st_size:,} bytes' in msg
    assert f'actual:   sha256 {hashlib.sha256(truncated).hexdigest()}, {len(truncated):,} bytes' in msg


def test_pinned_upstream_file_is_digest_checked(zoo, tmp_path, monkeypatch):
    name = 'osnet_x0_25.imagenet'
    fname = zoo.sources[name].name
    cache = tmp_path / 'hf'
    garbage = b'PK\x03\x04 not a checkpoint'
    seed_hf_cache(cache, UPSTREAM, {fname: garbage}, commit=UPSTREAM_REV)
    offline(monkeypatch)  # the packaged manifest: the authors' sha256 and size
    with pytest.raises(WeightsIntegrityError) as err:
        timm.create_model(name, pretrained=True, cache_dir=cache)
    msg = str(err.value)
    assert f'{UPSTREAM}@{UPSTREAM_REV}/{fname}' in msg
    assert 'expected: sha256 f54941a66bad4ddd07f2907f498c810ce639ce7a1abeaf2a151f8da118d84693, 2,973,731 bytes' in msg
    assert f'actual:   sha256 {hashlib.sha256(garbage).hexdigest()}' in msg
    # the same file cached at another revision is not the pinned one: not used
    other = tmp_path / 'hf2'
    seed_hf_cache(other, UPSTREAM, {fname: zoo.sources[name]}, commit='f' * 40)
    with pytest.raises(WeightsUnavailableError,
                       match=f'{UPSTREAM}@{UPSTREAM_REV}/{fname}: not in the Hugging Face cache'):
        timm.create_model(name, pretrained=True, cache_dir=other)


def test_offline_miss_says_what_is_missing_and_what_is_true(tmp_path, monkeypatch):
    offline(monkeypatch)
    with pytest.raises(WeightsUnavailableError) as err:
        timm.create_model('osnet_ain_x1_0', pretrained=True, cache_dir=tmp_path)
    msg = str(err.value)
    assert 'osnet_ain_x1_0.msmt17_combineall are not in the Hugging Face cache' in msg
    assert 'HF_HUB_OFFLINE=1 is set in the environment' in msg and 'unset HF_HUB_OFFLINE' in msg
    assert f'{UPSTREAM}@{UPSTREAM_REV}/osnet_ain_x1_0_msmt17_256x128' in msg and 'actual: no file' in msg
    assert 'osnet-zoo/' not in msg  # our unpublished repo is never a location
    assert 'https://drive.google.com/uc?id=1SigwBE6mPdqiJMqhuIY4aqC7--5CsMal' in msg


@pytest.mark.parametrize('name,expect', [
    ('osnet_x1_0.market1501', [
        'OSNET_ZOO_STRICT_WEIGHTS=1 allows only sources the manifest pins',
        'https://drive.google.com/uc?id=1vduhq5DpN2q1g4fYEZfPI17MJeh9qyrA',
        'save it as osnet_x1_0_market_256x128_amsgrad_ep150_stp60_lr0.0015_b64_fb10_softmax_labelsmooth_flip.pth',
        'no digest is recorded for this file',
        "timm.create_model('osnet_x1_0.market1501', pretrained=True, pretrained_cfg_overlay=dict(file="
        "'osnet_x1_0_market_256x128_amsgrad_ep150_stp60_lr0.0015_b64_fb10_softmax_labelsmooth_flip.pth'))"]),
    ('osnet_x0_25.msmt17', ['http://127.0.0.1:9/', 'cannot be reached',  # pinned by its sha256: tried
                            'must print 6f57607fed9f502b9efed546108132ee715df5a5b6e6932c6269bacb47f59f99',
                            '(3,057,863 bytes)']),
    ('osnet_ibn_x1_0', ["kaiyangzhou/osnet/osnet_ibn_x1_0_msmt17_combineall", '(hub-unpinned)',
                        'hf download kaiyangzhou/osnet osnet_ibn_x1_0_msmt17_combineall_256x128',
                        'verify --record']),
])
def test_strict_mode_refuses_unpinned_sources_and_says_how_to_load_them(tmp_path, monkeypatch, name, expect):
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.delenv('OSNET_ZOO_MANIFEST', raising=False)
    monkeypatch.setenv('OSNET_ZOO_STRICT_WEIGHTS', '1')
    monkeypatch.setenv('OSNET_ZOO_GDRIVE_URL', 'http://127.0.0.1:9/{id}')
    with pytest.raises(WeightsUnavailableError) as err:
        timm.create_model(name, pretrained=True, cache_dir=tmp_path)
    for text in expect:
        assert text in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing was downloaded


def test_the_load_line_of_the_message_loads_the_downloaded_file(zoo, tmp_path, monkeypatch):
    name = 'osnet_x0_5.dukemtmcreid'
    downloaded = tmp_path / zoo.sources[name].name  # the Drive file, as the user saved it
    downloaded.write_bytes(zoo.sources[name].read_bytes())
    monkeypatch.chdir(tmp_path)
    offline(monkeypatch)
    with pytest.raises(WeightsUnavailableError) as err:
        timm.create_model(name, pretrained=True)
    line = next(ln for ln in str(err.value).splitlines() if '3. load:' in ln).split('3. load:')[1].strip()
    model = eval(line, {'timm': timm})  # noqa: S307 -- the line we print, run as the user would
    expected = reference_model(name, zoo.sources[name], 702)
    assert model.num_classes == 702 and torch.equal(model.classifier.weight, expected.classifier.weight)


def test_unreachable_hub_fails_fast_and_truthfully(tmp_path):
    """No HF_HUB_OFFLINE, a Hub that refuses connections: one probe, the real reason, in seconds."""
    env = child_env(HF_ENDPOINT='http://127.0.0.1:9', HF_HUB_CACHE=tmp_path,
                    OSNET_ZOO_GDRIVE_URL='http://127.0.0.1:9/{id}',  # Drive, the next source, is unreachable too
                    HF_HUB_OFFLINE=None, OSNET_ZOO_MANIFEST=None, HF_HOME=None)
    script = ('import time, timm, osnet_zoo\n'
              't = time.monotonic()\n'
              'for name in ("osnet_ain_x1_0", "osnet_x0_25.imagenet"):\n'
              '    try:\n'
              '        timm.create_model(name, pretrained=True)\n'
              '    except osnet_zoo.weights.WeightsUnavailableError as e:\n'
              '        print(e)\n'
              'print("elapsed", time.monotonic() - t)\n')
    proc = run_python('-c', script, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert float(out.rsplit('elapsed', 1)[1]) < 15  # huggingface_hub alone retries for ~25 s per file
    assert out.count('http://127.0.0.1:9 cannot be reached') == 2
    assert 'HF_HUB_OFFLINE' in out and 'unset HF_HUB_OFFLINE' not in out and 'Retrying' not in proc.stderr


# ---------------------------------------------------------------------------------------------------- timm semantics

def test_overlay_file_checkpoint_path_explicit_repo_and_revision(zoo, monkeypatch, caplog):
    name = 'osnet_x0_25.market1501'
    offline(monkeypatch, zoo.manifest)
    expected = embed(reference_model(name, zoo.sources[name], zoo.classes[name]))
    # a local reference trainer checkpoint, through our safe reader and filter
    model = timm.create_model('osnet_x0_25', pretrained=True, num_classes=0,
                              pretrained_cfg_overlay=dict(file=str(zoo.sources[name])))
    assert torch.equal(embed(model), expected) and model.pretrained_cfg['file'] == str(zoo.sources[name])
    with pytest.raises(WeightsUnavailableError, match='file not found: .*nope.pth'):
        timm.create_model('osnet_x0_25', pretrained=True, pretrained_cfg_overlay=dict(file='nope.pth'))
    # timm's checkpoint_path (after creation, strict, native keys)
    model = timm.create_model('osnet_x0_25', num_classes=zoo.classes[name],
                              checkpoint_path=str(zoo.out[name] / 'model.safetensors'))
    assert torch.equal(embed(model), expected)
    # a repo the manifest does not know: loaded, with a warning giving its digest
    seed_hf_cache(zoo.cache, 'someone/osnet-finetune', {'model.safetensors': zoo.out[name] / 'model.safetensors'})
    with caplog.at_level('WARNING', logger='osnet_zoo.weights.hub'):
        model = timm.create_model('osnet_x0_25', pretrained=True, num_classes=0, cache_dir=zoo.cache,
                                  pretrained_cfg_overlay=dict(hf_hub_id='someone/osnet-finetune',
                                                              hf_hub_filename='model.safetensors'))
    assert torch.equal(embed(model), expected) and 'No sha256 is recorded' in caplog.text
    # an explicit revision
    model = timm.create_model(name, pretrained=True, cache_dir=zoo.cache, pretrained_cfg_overlay=dict(
        hf_hub_id=f'osnet-zoo/{name}@{zoo.commits[name]}'))
    assert torch.equal(embed(model), expected)


def test_other_num_classes_in_chans_and_features_only(zoo, monkeypatch):
    offline(monkeypatch, zoo.manifest)
    expected = reference_model(X0_25_ALL, zoo.sources[X0_25_ALL], 4101)
    for num_classes in (0, 10):
        model = timm.create_model(X0_25_ALL, pretrained=True, cache_dir=zoo.cache, num_classes=num_classes)
        assert model.num_classes == num_classes  # the 4101-identity classifier is dropped cleanly
        assert torch.equal(embed(model), embed(expected))
    gray = timm.create_model(X0_25_ALL, pretrained=True, cache_dir=zoo.cache, in_chans=1, num_classes=0)
    assert torch.allclose(gray.conv1.conv.weight[:, 0], expected.conv1.conv.weight.sum(1))
    feats = timm.create_model(X0_25_ALL, pretrained=True, cache_dir=zoo.cache, features_only=True).eval()
    assert 'state_dict' not in feats.pretrained_cfg
    with torch.inference_mode():
        got = feats(X)[-1]
        want = expected.eval().forward_features(X)
    assert torch.equal(got, want)


# ---------------------------------------------------------------------------------------------------- convert

def test_convert_own_checkpoint_writes_what_timm_reads(torchreid_fixtures, tmp_path, capsys):
    out = tmp_path / 'mine'
    src = torchreid_fixtures / 'osnet_ain_x0_25.safetensors'  # reference AIN layout, 11 classes
    assert weights_cli(['convert', str(src), '--model', 'osnet_ain_x0_25', '--tag', 'mydata', '--output', str(out),
                        '--check-size', '128x64']) == 0
    printed = capsys.readouterr()
    weights = out / 'model.safetensors'
    assert f'sha256 {file_sha256(weights)}  size {weights.stat().st_size} bytes' in printed.out
    assert 'osnet_ain_x0_25.mydata is not in the weights manifest' in printed.err
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == 'osnet_ain_x0_25' and config['num_classes'] == 11
    assert config['pretrained_cfg']['tag'] == 'mydata' and config['pretrained_cfg']['input_size'] == [3, 256, 128]
    card = (out / 'README.md').read_text()
    assert 'library_name: timm' in card and 'license: unknown' in card
    assert 'Omni-Scale Feature Learning' in card and 'Learning Generalisable Omni-Scale' in card
    assert f'sha256 `{file_sha256(src)}`' in card  # provenance of the source file
    # timm reads the folder itself (local-dir: names read config.json + model.safetensors)
    model = timm.create_model(f'local-dir:{out}', pretrained=True)
    expected = load_osnet_checkpoint(timm.create_model('osnet_ain_x0_25', num_classes=11), src)
    assert model.num_classes == 11 and torch.equal(embed(model), embed(expected))


def test_convert_refuses_what_does_not_fit(zoo, torchreid_fixtures, tmp_path, capsys):
    src = torchreid_fixtures / 'osnet_ain_x0_25.safetensors'
    assert cli.run(lambda: weights_cli(['convert', str(src), '--model', 'osnet_x0_25', '--tag', 'x',
                                        '--output', str(tmp_path / 'a')])) == 1
    assert 'does not fit this model' in capsys.readouterr().err
    assert cli.run(lambda: weights_cli([
        'convert', str(torchreid_fixtures / 'osnet_x0_25.safetensors'), '--model', 'osnet_x0_25',
        '--tag', 'msmt17_combineall', '--output', str(tmp_path / 'b')])) == 1
    assert 'classifier has 11 classes but the manifest entry osnet_x0_25.msmt17_combineall records 4101' in \
        capsys.readouterr().err
    # --update-manifest refuses a file that is not the manifest's reference file, unless --force
    manifest = tmp_path / 'm.json'
    write_manifest(load_manifest(PACKAGED_MANIFEST), manifest)
    args = ['convert', str(zoo.sources[X0_25_ALL]), '--model', 'osnet_x0_25', '--tag', 'msmt17_combineall',
            '--output', str(tmp_path / 'c'), '--check-size', '64x32', '--update-manifest', '--manifest', str(manifest)]
    assert cli.run(lambda: weights_cli(args)) == 1
    assert ('Refusing to record' in capsys.readouterr().err
            and load_manifest(manifest).entry(X0_25_ALL).hub['sha256'] is None)
    assert weights_cli(args + ['--force']) == 0
    assert load_manifest(manifest).entry(X0_25_ALL).hub['sha256'] == file_sha256(tmp_path / 'c' / 'model.safetensors')
    assert "which is not the reference model zoo's file for this tag" in (tmp_path / 'c' / 'README.md').read_text()


def test_model_card_carries_the_manifest_facts(zoo):
    card = (zoo.out['osnet_ain_x1_0.msmt17_combineall'] / 'README.md').read_text()
    assert 'MSMT17 (combineall: train + query + gallery)' in card and '4101 classes' in card
    assert "file name says 'msmt17' without 'combineall'" in card  # the entry's note
    assert 'hf-hub:osnet-zoo/osnet_ain_x1_0.msmt17_combineall' in card
    assert "reference model zoo's `osnet_ain_x1_0_msmt17_256x128" in card and 'whose sha256 matches' in card
    card = (zoo.out['osnet_x0_5.dukemtmcreid'] / 'README.md').read_text()
    assert '| DukeMTMC-reID | 85.1 | — | — | 67.4 |' in card and 'non-commercial' in card


@pytest.mark.parametrize('name', ENTRIES)
def test_model_cards_parse_with_huggingface_hub_and_round_trip_the_results(zoo, name):
    card = ModelCard((zoo.out[name] / 'README.md').read_text(encoding='utf-8'))
    data = card.data
    entry = load_manifest(PACKAGED_MANIFEST).entry(name)
    assert (data.library_name, data.license, data.pipeline_tag) == ('timm', 'mit', 'image-feature-extraction')
    assert data.datasets == list(entry.training_data) and 'timm' in data.tags
    assert data.base_model == (None if entry.base_model is None else f'osnet-zoo/{entry.architecture}.imagenet')
    reported = {(ev.target, metric, getattr(ev, attr)) for ev in entry.evaluation
                for attr, metric in (('rank1', 'rank-1'), ('rank5', 'rank-5'), ('rank10', 'rank-10'), ('mAP', 'map'))
                if getattr(ev, attr) is not None}
    parsed = {(r.dataset_type, r.metric_type, r.metric_value) for r in (data.eval_results or [])}
    assert parsed == reported and (entry.task == 'imagenet-classification') == (not reported)
    if reported:
        assert data.model_name == name and all(r.task_type == 'image-feature-extraction' for r in data.eval_results)
        # what the Hub reads: model-index in the YAML, re-parsed from the serialised card
        again = ModelCardData(**card.data.to_dict())
        assert {(r.dataset_type, r.metric_type, r.metric_value) for r in again.eval_results} == reported
        assert card.data.to_dict()['model-index'][0]['name'] == name


# ---------------------------------------------------------------------------------------------------- push, verify

def test_push_plan_checks_the_folder(zoo, tmp_path, capsys):
    (tmp_path / 'model.safetensors').write_bytes((zoo.out['osnet_x0_5.msmt17'] / 'model.safetensors').read_bytes())
    assert cli.run(lambda: weights_cli(['push', str(tmp_path), '--dry-run'])) == 1
    assert "missing ['config.json', 'README.md']" in capsys.readouterr().err
    entry = load_manifest(zoo.manifest).entry('osnet_x0_5.msmt17')
    with pytest.raises(CheckpointError, match='the pushed model.safetensors has sha256 ' + '0' * 64):
        record_publication(load_manifest(zoo.manifest), entry.name, entry.hub['repo_id'], 'f' * 40, '0' * 64, 10)


def test_fresh_processes_hf_hub_names_env_cache_and_push_dry_run(zoo, tmp_path):
    """The user's view: HF_HUB_OFFLINE / HF_HUB_CACHE set before Python starts, `hf-hub:` names read by timm's
    own Hub code, and `python -m osnet_zoo.weights push --dry-run`."""
    save_file({'x': X}, str(tmp_path / 'x.safetensors'))
    script = (
        'import json, sys, timm, torch, osnet_zoo\n'
        'from safetensors.torch import load_file\n'
        "x = load_file(sys.argv[1])['x']\n"
        'out = {}\n'
        f"for name in ['hf-hub:osnet-zoo/{X0_25_ALL}', '{X0_25_ALL}', 'osnet_x0_25']:\n"
        '    m = timm.create_model(name, pretrained=True, num_classes=0).eval()\n'
        '    with torch.inference_mode():\n'
        "        out[name] = dict(emb=m(x).tolist(), src=m.pretrained_cfg['hf_hub_id'])\n"
        'print(json.dumps(out))\n')
    env = child_env(HF_HUB_OFFLINE='1', HF_HUB_CACHE=zoo.cache, OSNET_ZOO_MANIFEST=zoo.manifest, HF_HOME=None)
    push_dir = zoo.out['osnet_x0_5.market1501']
    procs = [
        start_python('-c', script, tmp_path / 'x.safetensors', cwd=REPO, env=env, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True),
        start_python('-m', 'osnet_zoo.weights', 'push', push_dir, '--dry-run', cwd=REPO, env=env,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    ]
    (load_out, load_err), (push_out, push_err) = [p.communicate(timeout=600) for p in procs]
    assert procs[0].returncode == 0, load_err[-3000:]
    assert procs[1].returncode == 0, push_err[-3000:]

    loaded = json.loads(load_out.strip().splitlines()[-1])
    expected = embed(reference_model(X0_25_ALL, zoo.sources[X0_25_ALL], 4101))
    for name, result in loaded.items():
        assert torch.equal(torch.tensor(result['emb']), expected), name
    for src in (r['src'] for r in loaded.values()):  # ours, at the revision the manifest records
        assert src == f'osnet-zoo/{X0_25_ALL}@{zoo.commits[X0_25_ALL]}'

    assert 'would upload osnet_x0_5.market1501 to https://huggingface.co/osnet-zoo/osnet_x0_5.market1501' in push_out
    for f in HUB_FILES:
        path = push_dir / f
        assert f'{path.stat().st_size:>12,} bytes  sha256 {file_sha256(path)}' in push_out
    assert 'dry run: nothing uploaded.' in push_out


def test_verify_rehashes_the_cache(zoo, tmp_path, capsys):
    cache = tmp_path / 'hf'
    name = 'osnet_x0_25.dukemtmcreid'
    seed_hf_cache(cache, f'osnet-zoo/{name}', {f: zoo.out[name] / f for f in HUB_FILES})
    seed_hf_cache(cache, UPSTREAM, {zoo.sources['osnet_x0_25.imagenet'].name: zoo.sources['osnet_x0_25.imagenet']})
    assert weights_cli(['verify', '--cache-dir', str(cache), '--manifest', str(zoo.manifest)]) == 0
    out = capsys.readouterr().out
    assert f'{name}  osnet-zoo/{name}@' in out and out.count('  ok') == 2  # ours and the upstream file
    assert '2 files checked, 0 mismatched' in out

    blob = blob_of(cache, f'osnet-zoo/{name}', 'model.safetensors')
    blob.write_bytes(blob.read_bytes()[:-10])
    assert weights_cli(['verify', '--cache-dir', str(cache), '--manifest', str(zoo.manifest)]) == 1
    out = capsys.readouterr().out
    assert 'MISMATCH: sha256 expected' in out and '1 mismatched' in out
    assert weights_cli(['verify', '--cache-dir', str(tmp_path / 'none')]) == 2
