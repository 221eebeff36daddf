"""`verify --record` and `mirror`: identifying reference files, learning their digests, publishing the zoo.

Reference-layout files are made from the fixtures' keys (osnet_x0_25, osnet_ain_x0_25, osnet_x0_75) at the
class counts the manifest entries record, under the names they circulate with. Nothing is mocked; the
Hub is never contacted (the push path is tested up to the operations handed to ``create_commit``).
"""
import json
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from huggingface_hub import CommitOperationAdd, ModelCard
from safetensors.torch import load_file

from osnet_zoo import cli
from osnet_zoo.weights import file_sha256, load_osnet_checkpoint
from osnet_zoo.weights.__main__ import main as weights_cli
from osnet_zoo.publish.convert import HUB_FILES, plan_push
from osnet_zoo.weights.manifest import PACKAGED_MANIFEST, load_manifest, write_manifest
from osnet_zoo.publish.mirror import STATE_FILE, commit_operations, hf_snapshot_of, identify_file
from conftest import child_env, run_module, start_python
from test_weights_hub import offline, reference_state, save_reference, seed_hf_cache

SNAPSHOT_REV = '0123456789abcdef0123456789abcdef01234567'
# file (relative to the download folder) -> (entry it is, how the manifest identifies it)
FILES = {
    'download (1).pth': ('osnet_x0_25.imagenet', 'sha256'),
    'a/osnet_x0_25_msmt17.pt': ('osnet_x0_25.msmt17', 'name+classes+keys'),
    'b/osnet_x0_25_msmt17.pt': ('osnet_x0_25.msmt17_combineall', 'name+classes+keys'),
    'osnet_ain_x0_25_imagenet.pyth': ('osnet_ain_x0_25.imagenet', 'name+classes+keys'),
}


def _state(shapes, arch, num_classes, seed):
    return reference_state(shapes[arch], num_classes, seed)


@pytest.fixture(scope='module')
def refs(tmp_path_factory, torchreid_fixtures):
    root = tmp_path_factory.mktemp('mirror')
    shapes = json.loads((torchreid_fixtures / 'keys.json').read_text())
    packaged = load_manifest(PACKAGED_MANIFEST)
    dl = root / 'downloads'
    paths = {}
    for i, (rel, (name, _)) in enumerate(FILES.items()):
        entry = packaged.entry(name)
        sd = _state(shapes, entry.architecture, entry.num_classes, seed=i)
        if rel.endswith('.pyth'):  # pycls format
            (dl / rel).parent.mkdir(parents=True, exist_ok=True)
            torch.save({'model_state': sd, 'epoch': 99}, dl / rel)
        else:
            save_reference(dl / rel, sd, trainer=entry.task == 'person-reid')
        paths[rel] = dl / rel
    # an AIN state dict under a name of the classic osnet_x0_25: keys that fit no entry of that name
    save_reference(dl / 'osnet_x0_25_duke.pth', _state(shapes, 'osnet_ain_x0_25', 702, seed=9), trainer=True)
    (dl / 'README.txt').write_text('not a checkpoint')
    # the test manifest: the first file's digest is known; the others' are not (learnt by name)
    manifest = packaged.updated('osnet_x0_25.imagenet', {'upstream.sha256': file_sha256(paths['download (1).pth']),
                                                          'upstream.size': paths['download (1).pth'].stat().st_size})
    for name in ('osnet_x0_25.msmt17', 'osnet_x0_25.msmt17_combineall', 'osnet_x0_25.dukemtmcreid'):
        manifest = manifest.updated(name, {'upstream.sha256': None, 'upstream.size': None})
    manifest_path = root / 'manifest.json'
    write_manifest(manifest, manifest_path)
    return SimpleNamespace(root=root, dl=dl, paths=paths, manifest=manifest_path, shapes=shapes)


def test_files_are_identified_by_digest_else_name_classes_and_keys(refs):
    manifest = load_manifest(refs.manifest)
    for rel, (name, by) in FILES.items():
        ident, _ = identify_file(refs.paths[rel], manifest)
        assert (ident.entry.name if ident.entry else ident.problem, ident.by) == (name, by), rel
    # the two files named osnet_x0_25_msmt17.pt are told apart by their classifiers (1041 / 4101) ...
    ident, _ = identify_file(refs.paths['a/osnet_x0_25_msmt17.pt'], manifest)
    assert ident.candidates == ['osnet_x0_25.msmt17', 'osnet_x0_25.msmt17_combineall']
    # ... and never guessed when the class count cannot separate them
    unknown = manifest.updated('osnet_x0_25.msmt17_combineall', {'num_classes': None})
    ident, _ = identify_file(refs.paths['a/osnet_x0_25_msmt17.pt'], unknown)
    assert ident.entry is None and 'ambiguous' in ident.problem and 'osnet_x0_25.msmt17_combineall' in ident.problem
    ident, _ = identify_file(refs.dl / 'osnet_x0_25_duke.pth', manifest)
    assert ident.entry is None and 'osnet_x0_25.dukemtmcreid' in ident.problem and 'keys' in ident.problem


def test_record_refuses_what_does_not_fit_naming_file_and_entry(refs, tmp_path, capsys):
    manifest = tmp_path / 'm.json'
    write_manifest(load_manifest(refs.manifest), manifest)
    before = manifest.read_bytes()
    wrong_keys = refs.dl / 'osnet_x0_25_duke.pth'
    assert cli.run(lambda: weights_cli(['verify', '--record', str(wrong_keys), '--manifest', str(manifest)])) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and str(wrong_keys) in err and 'osnet_x0_25.dukemtmcreid' in err and 'keys' in err
    wrong_classes = refs.paths['a/osnet_x0_25_msmt17.pt']
    assert cli.run(lambda: weights_cli(['verify', '--record', str(wrong_classes), '--tag', 'osnet_x0_25.market1501',
                                        '--manifest', str(manifest)])) == 1
    err = capsys.readouterr().err
    assert str(wrong_classes) in err and '1041 classes' in err and 'osnet_x0_25.market1501 has 751' in err
    assert manifest.read_bytes() == before  # nothing written


def test_record_from_hf_cache_pins_an_unpinned_hub_tag_which_then_loads(refs, tmp_path, monkeypatch, capsys):
    # osnet_x0_75.msmt17_combineall is on the authors' repo without a recorded revision or digest: refused.
    name = 'osnet_x0_75.msmt17_combineall'
    manifest_path = tmp_path / 'm.json'
    write_manifest(load_manifest(refs.manifest), manifest_path)
    entry = load_manifest(manifest_path).entry(name)
    assert entry.load_source == 'hub-unpinned'
    source = save_reference(tmp_path / 'src' / entry.upstream['filename'],
                            _state(refs.shapes, 'osnet_x0_75', 4101, seed=5), trainer=True)
    cache = tmp_path / 'hf'
    seed_hf_cache(cache, entry.upstream['hf_hub_id'], {entry.upstream['filename']: source}, commit=SNAPSHOT_REV)
    snapshot_file = cache / 'models--kaiyangzhou--osnet' / 'snapshots' / SNAPSHOT_REV / entry.upstream['filename']
    assert hf_snapshot_of(snapshot_file) == ('kaiyangzhou/osnet', SNAPSHOT_REV, entry.upstream['filename'])
    assert weights_cli(['verify', '--record', str(snapshot_file), '--manifest', str(manifest_path)]) == 0
    assert f'{name} (identified by name+classes+keys)' in capsys.readouterr().out
    entry = load_manifest(manifest_path).entry(name)
    assert (entry.upstream['sha256'], entry.upstream['size'], entry.upstream['hf_revision']) == (
        file_sha256(source), source.stat().st_size, SNAPSHOT_REV)
    assert entry.load_source == 'hub' and 'verify --record' in entry.sources['upstream.sha256']
    # timm's real path, from the offline cache, at the recorded revision, digest-checked
    offline(monkeypatch, manifest_path)
    model = timm.create_model(name, pretrained=True, cache_dir=cache)
    assert model.pretrained_cfg['hf_hub_id'] == f'kaiyangzhou/osnet@{SNAPSHOT_REV}'
    expected = load_osnet_checkpoint(timm.create_model('osnet_x0_75', num_classes=4101), source)
    assert torch.equal(model.classifier.weight, expected.classifier.weight)
    # recording again learns nothing new, and a different file is refused by its now-known digest
    assert weights_cli(['verify', '--record', str(snapshot_file), '--manifest', str(manifest_path)]) == 0
    assert 'recorded: nothing new' in capsys.readouterr().out
    other = save_reference(tmp_path / 'other' / entry.upstream['filename'],
                           _state(refs.shapes, 'osnet_x0_75', 4101, seed=6), trainer=True)
    assert cli.run(lambda: weights_cli(['verify', '--record', str(other), '--tag', name,
                                        '--manifest', str(manifest_path)])) == 1
    assert 'sha256' in capsys.readouterr().err


def test_mirror_dry_run_end_to_end_interrupted_and_resumed(refs, tmp_path, capsys):
    work = tmp_path / 'work'
    before = refs.manifest.read_bytes()
    proc = start_python('-m', 'osnet_zoo.weights', 'mirror', refs.dl, '--dry-run', '--output', work, '--manifest',
                        refs.manifest, env=child_env(HF_HUB_OFFLINE='1'), stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)
    state_path = work / STATE_FILE
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state_path.is_file() and json.loads(state_path.read_text())['tags']:  # atomic: never half-written
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    first = json.loads(state_path.read_text())['tags']
    assert 1 <= len(first) < len(FILES), first  # killed part-way, with a finished tag recorded

    assert weights_cli(['mirror', str(refs.dl), '--dry-run', '--output', str(work),
                        '--manifest', str(refs.manifest)]) == 0
    out = capsys.readouterr().out
    for name in first:
        assert f'{name}: finished in an earlier run' in out
    assert 'skip osnet_x0_25_duke.pth' in out and 'skip README.txt' in out
    state = json.loads(state_path.read_text())
    assert sorted(state['tags']) == sorted(name for name, _ in FILES.values())
    assert refs.manifest.read_bytes() == before  # a dry run leaves the manifest alone
    would = load_manifest(work / 'weights_manifest.dry-run.json')
    for rel, (name, by) in FILES.items():
        tag = state['tags'][name]
        assert (tag['source'], tag['identified_by'], tag['revision']) == (rel, by, None)
        assert tag['operations'] == list(HUB_FILES)
        folder = Path(tag['folder'])
        entry = would.entry(name)
        # digests learnt from the file, and the conversion's digest, as a real run would record them
        assert entry.upstream['sha256'] == file_sha256(refs.paths[rel]) == tag['source_sha256']
        assert entry.hub['sha256'] == file_sha256(folder / 'model.safetensors') == tag['sha256']
        assert entry.hub['revision'] is None and not entry.published
        # bit-identical to the reference file
        expected = load_osnet_checkpoint(timm.create_model(entry.architecture, num_classes=entry.num_classes),
                                         refs.paths[rel]).state_dict()
        written = load_file(str(folder / 'model.safetensors'))
        assert written.keys() == expected.keys() and all(torch.equal(written[k], v) for k, v in expected.items())
        card = ModelCard.load(folder / 'README.md')
        assert card.data.library_name == 'timm' and f'hf-hub:osnet-zoo/{name}' in card.text


def test_push_operations_are_the_folder_files_with_their_digests(refs, tmp_path):
    # huggingface_hub cannot commit to a local directory, so the push is checked up to create_commit: the
    # operations mirror() hands it, with the sha256 huggingface_hub itself computes for the upload.
    manifest = load_manifest(refs.manifest)
    work = tmp_path / 'work'
    assert weights_cli(['mirror', str(refs.dl / 'a'), '--dry-run', '--output', str(work), '--repo-prefix',
                        'me', '--manifest', str(refs.manifest)]) == 0
    folder = work / 'osnet_x0_25.msmt17'
    plan = plan_push(folder, repo_id='me/osnet_x0_25.msmt17', manifest=manifest)
    ops = commit_operations(plan)
    assert all(isinstance(op, CommitOperationAdd) for op in ops)
    assert [op.path_in_repo for op in ops] == list(HUB_FILES)
    for op in ops:
        assert Path(op.path_or_fileobj) == folder / op.path_in_repo
        assert op.upload_info.sha256.hex() == file_sha256(folder / op.path_in_repo)
        assert op.upload_info.size == (folder / op.path_in_repo).stat().st_size
    assert 'hf-hub:me/osnet_x0_25.msmt17' in (folder / 'README.md').read_text()


def test_mirror_refuses_a_missing_folder(tmp_path):
    """The command as a user runs it: exit status 1 and one ``error:`` line naming the folder, no traceback."""
    proc = run_module('osnet_zoo.weights', 'mirror', tmp_path / 'nope', '--dry-run', '--output', tmp_path / 'w',
                      env=child_env(HF_HUB_OFFLINE='1'))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [f'error: mirror: {tmp_path / "nope"} is not a folder of downloaded reference '
                                        'files.']
