"""weights_manifest.json: schema, facts and their sources, the timm registry generated from it, `list`."""
import json
import re
from pathlib import Path

import pytest
import timm

import osnet_zoo
from osnet_zoo.models import OSNET_ARCHS
from osnet_zoo.models.osnet import _cfg
from osnet_zoo.weights.__main__ import main as weights_cli
from osnet_zoo.weights.hub import pretrained_cfgs
from osnet_zoo.weights.manifest import (
    PACKAGED_MANIFEST, ManifestError, dumps_manifest, load_manifest, parse_manifest, repo_root_copy,
    validate_manifest_schema, write_manifest,
)

REPO = Path(__file__).resolve().parents[1]
WIDTHS = ['osnet_x1_0', 'osnet_x0_75', 'osnet_x0_5', 'osnet_x0_25']


@pytest.fixture(scope='module')
def data():
    return json.loads(PACKAGED_MANIFEST.read_text(encoding='utf-8'))


@pytest.fixture(scope='module')
def manifest():
    return load_manifest(PACKAGED_MANIFEST)


def test_packaged_manifest_follows_the_schema(data):
    validate_manifest_schema(data)
    assert len(parse_manifest(data)) == len(data['entries'])


def test_repo_root_copy_is_identical_and_canonical():
    text = PACKAGED_MANIFEST.read_text(encoding='utf-8')
    assert (REPO / 'weights_manifest.json').read_text(encoding='utf-8') == text, \
        'weights_manifest.json (repo root) differs from osnet_zoo/weights/weights_manifest.json: copy it over'
    # the writer's format, so that `convert --update-manifest` changes only the lines it means to
    assert dumps_manifest(json.loads(text)) == text
    # writing the packaged manifest refreshes the root copy too; other manifests have no copy
    assert repo_root_copy(PACKAGED_MANIFEST) == REPO / 'weights_manifest.json'
    assert repo_root_copy(REPO / 'weights_manifest.json') is None


def test_every_reference_zoo_checkpoint_has_an_entry(manifest):
    expected = {f'{a}.imagenet' for a in OSNET_ARCHS}
    expected |= {f'{a}.{d}' for a in WIDTHS for d in ('market1501', 'dukemtmcreid', 'msmt17')}
    expected |= {f'{a}.{t}' for a in ('osnet_ibn_x1_0', 'osnet_ain_x1_0')
                 for t in ('market1501_to_dukemtmcreid', 'dukemtmcreid_to_market1501')}
    expected |= {f'{a}.msmt17_combineall' for a in WIDTHS + ['osnet_ibn_x1_0', 'osnet_ain_x1_0']}
    assert set(manifest.entries) == expected
    cross = manifest.entry('osnet_ain_x1_0.dukemtmcreid_to_market1501')
    assert cross.training_data == ('dukemtmcreid',) and [e.target for e in cross.evaluation] == ['market1501']
    assert manifest.entry('osnet_x0_5.msmt17_combineall').combineall
    assert not manifest.entry('osnet_x0_5.msmt17').combineall


def test_facts_from_the_issue_and_the_reference_code(manifest):
    # the upstream Hub files named by issue 7
    hub = {e.name: e.upstream_file for e in manifest if e.upstream_file is not None}
    assert set(hub) == {'osnet_x1_0.imagenet', 'osnet_x0_25.imagenet', 'osnet_x1_0.msmt17_combineall',
                        'osnet_x0_25.msmt17_combineall', 'osnet_ain_x1_0.msmt17_combineall'}
    assert all(loc.repo_id == 'kaiyangzhou/osnet' for loc in hub.values())
    assert hub['osnet_x1_0.imagenet'].size == 8_806_280
    assert hub['osnet_x1_0.msmt17_combineall'].sha256.startswith('48df972f')
    assert hub['osnet_x0_25.msmt17_combineall'].sha256.startswith('cf55163d')
    assert hub['osnet_ain_x1_0.msmt17_combineall'].sha256 is None  # not known: null, never a guess
    # ImageNet file names follow the reference loader's `<arch>_imagenet.pth`
    for arch in OSNET_ARCHS:
        assert manifest.entry(f'{arch}.imagenet').upstream['filename'] == f'{arch}_imagenet.pth'
        assert manifest.entry(f'{arch}.imagenet').num_classes == 1000
    # our repos follow one scheme
    for e in manifest:
        assert e.hub['repo_id'] == f'osnet-zoo/{e.name}' and e.hub['filename'] == 'model.safetensors'


def test_every_filled_fact_names_a_readable_source(data):
    documents = set(data['source_documents'])
    own = ('upstream file name', 'classifier rows of the converted checkpoint')
    for raw in data['entries']:
        for key, text in raw['sources'].items():
            assert text.split(':')[0] in documents or text.startswith(own), (raw['tag'], key, text)
        for ev in raw['evaluation']:
            if any(ev[m] is not None for m in ('rank1', 'rank5', 'rank10', 'mAP')):
                assert ev['source'], f"{raw['architecture']}.{raw['tag']}: a reported metric needs its source"
        if raw['hub']['revision'] is not None:  # published implies converted
            assert raw['hub']['sha256'] is not None


def _broken(data, mutate):
    bad = json.loads(json.dumps(data))
    mutate(bad)
    return bad


@pytest.mark.parametrize('mutate,schema_msg', [
    (lambda d: d['entries'][0]['sources'].pop('upstream.sha256'), r"entries/0/sources: 'upstream.sha256' is a required"),
    (lambda d: d['entries'][0]['upstream'].update(sha256='abc'), r'entries/0/upstream/sha256'),
    (lambda d: d['entries'][0].update(architecture='resnet50'), r'entries/0/architecture'),
    (lambda d: d['entries'][0]['hub'].update(revision='main'), r'entries/0/hub/revision'),
    (lambda d: d['entries'][2]['evaluation'][0].update(rank1=94.8), r'entries/2/evaluation/0/source'),
    (lambda d: d['entries'][1].update(num_classes=-1), r'entries/1/num_classes'),
])
def test_schema_rejects_bad_entries_naming_the_path(data, mutate, schema_msg):
    with pytest.raises(ManifestError, match=schema_msg):
        validate_manifest_schema(_broken(data, mutate))


def test_typed_loader_names_entry_and_key(data):
    with pytest.raises(ManifestError, match=r"entry 3 \(osnet_x1_0.dukemtmcreid\): missing key 'hub'"):
        parse_manifest(_broken(data, lambda d: d['entries'][3].pop('hub')))
    with pytest.raises(ManifestError, match=r'upstream.sha256 must be 64 lowercase hex'):
        parse_manifest(_broken(data, lambda d: d['entries'][0]['upstream'].update(sha256='ABC')))
    with pytest.raises(ManifestError, match='duplicate architecture.tag'):
        parse_manifest(_broken(data, lambda d: d['entries'].append(d['entries'][0])))
    with pytest.raises(ManifestError, match='default tag osnet_x1_0.nope has no entry'):
        parse_manifest(_broken(data, lambda d: d['default_tags'].update(osnet_x1_0='nope')))


def test_manifest_env_and_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv('OSNET_ZOO_MANIFEST', str(tmp_path / 'nope.json'))
    with pytest.raises(ManifestError, match=r'not found: .*nope.json \(set by \$OSNET_ZOO_MANIFEST\)'):
        load_manifest()
    (tmp_path / 'bad.json').write_text('{"schema_version": 1,')
    with pytest.raises(ManifestError, match='bad.json is not valid JSON'):
        load_manifest(tmp_path / 'bad.json')


def test_updates_are_validated_and_atomic(tmp_path, manifest):
    path = tmp_path / 'm.json'
    write_manifest(manifest, path)
    before = path.read_text()
    with pytest.raises(ManifestError, match='hub.sha256 must be 64'):
        write_manifest(manifest.updated('osnet_x0_25.msmt17', {'hub.sha256': 'not-a-digest'}), path)
    assert path.read_text() == before  # nothing half-written
    digest = 'ab' * 32
    write_manifest(manifest.updated('osnet_x0_25.msmt17', {'hub.sha256': digest, 'hub.size': 123}), path)
    again = load_manifest(path).entry('osnet_x0_25.msmt17')
    assert again.hub['sha256'] == digest and again.hub['size'] == 123
    changed = [a for a, b in zip(before.splitlines(), path.read_text().splitlines()) if a != b]
    assert len(changed) == 2  # exactly the two fields
    assert not list(tmp_path.glob('.*.tmp'))


def test_timm_registry_lists_every_tag_with_the_default_first(manifest):
    assert set(timm.list_pretrained('osnet*')) == set(manifest.entries)
    for arch, tag in manifest.default_tags.items():
        cfg = timm.models.get_pretrained_cfg(arch)  # the untagged name resolves to the default tag
        assert cfg.tag == tag
    assert manifest.default_tags['osnet_ain_x1_0'] == 'msmt17_combineall'
    for e in manifest:
        cfg = timm.models.get_pretrained_cfg(e.name)
        best = e.locations()[0]
        assert (cfg.hf_hub_id, cfg.hf_hub_filename) == (best.repo_id, best.filename)
        assert cfg.num_classes == (e.num_classes if e.num_classes is not None else 0)
        assert cfg.input_size == (3, 256, 128) and cfg.crop_mode == 'squash'


def test_published_safetensors_are_preferred_over_the_upstream_file(manifest):
    entry = manifest.entry('osnet_ain_x1_0.msmt17_combineall')
    assert [loc.kind for loc in entry.locations()] == ['upstream', 'osnet-zoo']  # ours not published yet
    published = manifest.updated(entry.name, {'hub.sha256': 'cd' * 32, 'hub.size': 10, 'hub.revision': 'e' * 40})
    locs = published.entry(entry.name).locations()
    assert [loc.kind for loc in locs] == ['osnet-zoo', 'upstream'] and locs[0].revision == 'e' * 40
    cfg = pretrained_cfgs(_cfg, published)[entry.name]
    assert cfg['hf_hub_id'] == 'osnet-zoo/osnet_ain_x1_0.msmt17_combineall' and cfg['hf_hub_filename'] == 'model.safetensors'
    # without any Hub file of the reference, our (planned) repo is the only location
    assert [loc.kind for loc in manifest.entry('osnet_x0_75.market1501').locations()] == ['osnet-zoo']


def test_list_command_prints_the_manifest(capsys):
    assert weights_cli(['list']) == 0
    out = capsys.readouterr().out
    manifest = load_manifest(PACKAGED_MANIFEST)
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith('osnet_')}
    assert {name.rstrip('*') for name in rows} == set(manifest.entries)
    assert 'osnet_ain_x1_0.msmt17_combineall*' in rows and 'osnet_ain_x0_25.imagenet*' in rows
    assert re.search(r'MSMT17 \(all\)\s+4101\s+.*hub \+sha256\s+planned$', rows['osnet_x1_0.msmt17_combineall*'])
    assert re.search(r'Market1501\s+\?\s+market1501\s+-\s+-\s+gdrive\s+planned$', rows['osnet_x0_5.market1501'])
    assert weights_cli(['list', '--arch', 'osnet_ibn_x1_0']) == 0
    assert len([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('osnet_')]) == 4
    with pytest.raises(SystemExit):
        weights_cli(['convert', '--help'])
    helped = capsys.readouterr().out
    assert '--update-manifest' in helped and 'usage: python -m osnet_zoo.weights convert' in helped


def test_package_exports():
    assert osnet_zoo.weights.PACKAGED_MANIFEST == PACKAGED_MANIFEST
    assert issubclass(osnet_zoo.weights.WeightsIntegrityError, osnet_zoo.CheckpointError)
