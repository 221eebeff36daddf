"""weights_manifest.json: schema, facts and their sources, the timm registry generated from it, `list`."""
import json
import re

import pytest
import timm

import osnet_zoo
from osnet_zoo.models import OSNET_ARCHS
from osnet_zoo.models.osnet import _cfg
from osnet_zoo.weights.__main__ import main as weights_cli
from osnet_zoo.weights.manifest import (
    PACKAGED_MANIFEST, ManifestError, dumps_manifest, load_manifest, parse_manifest, pretrained_cfgs, repo_root_copy,
    validate_manifest_schema, write_manifest,
)
from conftest import REPO

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
    assert (REPO / 'weights_manifest.json').read_bytes() == PACKAGED_MANIFEST.read_bytes(), \
        'weights_manifest.json (repo root) differs from osnet_zoo/weights/weights_manifest.json: copy it over'
    # the writer's format, so that `convert --update-manifest` changes only the lines it means to
    assert dumps_manifest(json.loads(text)) == text
    # writing the packaged manifest refreshes the root copy too; other manifests have no copy
    assert repo_root_copy(PACKAGED_MANIFEST) == REPO / 'weights_manifest.json'
    assert repo_root_copy(REPO / 'weights_manifest.json') is None


MULTI_SOURCE = ('ms_d_c_to_market1501', 'ms_m_c_to_dukemtmcreid', 'ms_d_m_to_cuhk03', 'd_m_c_to_msmt17')
UPSTREAM_REV = 'a5c5cc037c24235cda3b21085b93ad77c9616224'


def test_every_reference_zoo_checkpoint_has_an_entry(manifest):
    expected = {f'{a}.imagenet' for a in OSNET_ARCHS}
    expected |= {f'{a}.{d}' for a in WIDTHS for d in ('market1501', 'dukemtmcreid', 'msmt17')}
    expected |= {f'{a}.{t}' for a in ('osnet_ibn_x1_0', 'osnet_ain_x1_0')
                 for t in ('market1501_to_dukemtmcreid', 'dukemtmcreid_to_market1501')}
    expected |= {f'{a}.msmt17_combineall' for a in WIDTHS + ['osnet_ibn_x1_0', 'osnet_ain_x1_0']}
    expected |= {f'{a}.{t}' for a in ('osnet_x1_0', 'osnet_ibn_x1_0', 'osnet_ain_x1_0') for t in MULTI_SOURCE}
    assert set(manifest.entries) == expected and len(expected) == 43
    cross = manifest.entry('osnet_ain_x1_0.dukemtmcreid_to_market1501')
    assert cross.training_data == ('dukemtmcreid',) and [e.target for e in cross.evaluation] == ['market1501']
    assert (cross.evaluation[0].rank1, cross.evaluation[0].rank5, cross.evaluation[0].mAP) == (61.0, 77.0, 30.6)
    assert manifest.entry('osnet_x0_5.msmt17_combineall').combineall
    assert not manifest.entry('osnet_x0_5.msmt17').combineall
    dg = manifest.entry('osnet_ain_x1_0.ms_d_c_to_market1501')
    assert dg.training_data == ('msmt17', 'dukemtmcreid', 'cuhk03') and dg.num_classes == 2510
    assert dg.distance == 'cosine' and dg.transforms == ('random_flip', 'color_jitter')


def test_facts_of_the_authors_hub_repo(manifest):
    hub = {e.name: e.upstream_file for e in manifest if e.upstream_file is not None}
    assert len(hub) == 10 and all(loc.repo_id == 'kaiyangzhou/osnet' for loc in hub.values())
    pinned = {n for n, loc in hub.items() if loc.pinned}
    assert pinned == {f'{a}.imagenet' for a in WIDTHS} | {f'{a}.msmt17_combineall' for a in
                                                         ('osnet_x1_0', 'osnet_x0_5', 'osnet_x0_25', 'osnet_ain_x1_0')}
    assert all(hub[n].revision == UPSTREAM_REV and hub[n].sha256 for n in pinned)
    # no revision, no digest in any source: null, and never loaded
    for name in ('osnet_x0_75.msmt17_combineall', 'osnet_ibn_x1_0.msmt17_combineall'):
        assert hub[name].revision is None and hub[name].sha256 is None
        assert manifest.entry(name).locations() == [] and manifest.entry(name).load_source == 'hub-unpinned'
    assert hub['osnet_x1_0.imagenet'].size == 10_910_553
    assert hub['osnet_x0_25.imagenet'].sha256.startswith('f54941a6')
    assert manifest.entry('osnet_x0_25.imagenet').upstream['hf_revisions_seen'] == [
        UPSTREAM_REV, '4fb800163ca4da8f34bbb34703926eda7e7ef84e']
    for arch in WIDTHS:  # the ImageNet file names follow the reference loader's `<arch>_imagenet.pth`
        assert manifest.entry(f'{arch}.imagenet').upstream['filename'] == f'{arch}_imagenet.pth'
    for e in manifest:
        assert e.num_classes is not None and e.upstream['gdrive_id']
        assert e.hub['repo_id'] == f'osnet-zoo/{e.name}' and e.hub['filename'] == 'model.safetensors'
        assert e.license == 'mit' and 'MIT License' in e.sources['license']
        assert e.base_model == (None if e.tag == 'imagenet' else f'{e.architecture}.imagenet')


def test_our_unpublished_repos_never_supply_weights(manifest):
    for e in manifest:
        assert not e.published and all(loc.kind == 'upstream' for loc in e.locations())
    # a recorded sha256 without a revision is not published either
    half = manifest.updated('osnet_x1_0.market1501', {'hub.sha256': 'ab' * 32}).entry('osnet_x1_0.market1501')
    assert not half.published and half.locations() == [] and half.load_source == 'gdrive'


def test_every_filled_fact_names_a_readable_source(data):
    documents = set(data['source_documents'])
    own = ('upstream file name', 'classifier rows of the converted checkpoint', 'recorded by')
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
    (lambda d: d['entries'][0]['sources'].pop('upstream.sha256'),
     r"entries/0/sources: 'upstream.sha256' is a required"),
    (lambda d: d['entries'][0]['upstream'].update(sha256='abc'), r'entries/0/upstream/sha256'),
    (lambda d: d['entries'][0].update(architecture='resnet50'), r'entries/0/architecture'),
    (lambda d: d['entries'][0]['hub'].update(revision='main'), r'entries/0/hub/revision'),
    (lambda d: d['entries'][9]['evaluation'][0].update(source=None), r'entries/9/evaluation/0/source'),
    (lambda d: d['entries'][1].update(num_classes=-1), r'entries/1/num_classes'),
])
def test_schema_rejects_bad_entries_naming_the_path(data, mutate, schema_msg):
    with pytest.raises(ManifestError, match=schema_msg):
        validate_manifest_schema(_broken(data, mutate))


def test_typed_loader_names_entry_and_key(data):
    with pytest.raises(ManifestError, match=r"entry 10 \(osnet_x1_0.dukemtmcreid\): missing key 'hub'"):
        parse_manifest(_broken(data, lambda d: d['entries'][10].pop('hub')))
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
    (tmp_path / 'bad.json').write_text('{"schema_version": 2,')
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
        if e.load_source == 'hub':
            assert (cfg.hf_hub_id, cfg.hf_hub_filename) == (f'kaiyangzhou/osnet@{UPSTREAM_REV}', e.upstream['filename'])
        elif e.load_source == 'hub-unpinned':
            assert (cfg.hf_hub_id, cfg.hf_hub_filename) == ('kaiyangzhou/osnet', e.upstream['filename'])
        else:
            assert cfg.hf_hub_id is None and cfg.url == f"https://drive.google.com/uc?id={e.upstream['gdrive_id']}"
        assert cfg.num_classes == e.num_classes and cfg.license == 'mit'
        # the ImageNet classifiers: the 224 centre crop of the 256x256 image (ICCV 2019 Sec. 4.4)
        imagenet = e.task == 'imagenet-classification'
        assert cfg.input_size == ((3, 224, 224) if imagenet else (3, 256, 128)) and cfg.crop_mode == 'squash'
        assert cfg.crop_pct == (0.875 if imagenet else 1.0)


def test_published_safetensors_are_preferred_over_the_upstream_file(manifest):
    entry = manifest.entry('osnet_ain_x1_0.msmt17_combineall')
    assert [loc.kind for loc in entry.locations()] == ['upstream']  # ours not published yet
    published = manifest.updated(entry.name, {'hub.sha256': 'cd' * 32, 'hub.size': 10, 'hub.revision': 'e' * 40})
    locs = published.entry(entry.name).locations()
    assert [loc.kind for loc in locs] == ['osnet-zoo', 'upstream'] and locs[0].revision == 'e' * 40
    cfg = pretrained_cfgs(_cfg, published)[entry.name]
    assert cfg['hf_hub_id'] == 'osnet-zoo/osnet_ain_x1_0.msmt17_combineall@' + 'e' * 40
    assert cfg['hf_hub_filename'] == 'model.safetensors'


def test_list_command_prints_metrics_and_where_each_tag_loads_from(capsys):
    assert weights_cli(['list']) == 0
    out = capsys.readouterr().out
    manifest = load_manifest(PACKAGED_MANIFEST)
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith('osnet_')}
    assert {name.rstrip('*') for name in rows} == set(manifest.entries)
    assert 'osnet_ain_x1_0.msmt17_combineall*' in rows and 'osnet_ain_x0_25.imagenet*' in rows
    assert re.search(r'MSMT17 \(all\)\s+4101\s+Market1501 66\.6 / 37\.5; DukeMTMC-reID 66\.0 / 45\.3\s+'
                     r'hub kaiyangzhou/osnet@a5c5cc0 \(sha256\)$', rows['osnet_x1_0.msmt17_combineall*'])
    assert re.search(r'Market1501\s+751\s+Market1501 92\.5 / 79\.8\s+gdrive \(first use\)$',
                     rows['osnet_x0_5.market1501'])
    assert rows['osnet_x0_25.msmt17'].endswith('gdrive (sha256)')
    assert rows['osnet_x0_75.msmt17_combineall*'].endswith('hub, unpinned (first use)')
    assert 'loads from: 8 hub, 2 hub-unpinned, 33 gdrive.' in out
    assert weights_cli(['list', '--model', 'osnet_ibn_x1_0']) == 0
    assert len([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('osnet_')]) == 8
    with pytest.raises(SystemExit):
        weights_cli(['convert', '--help'])
    helped = capsys.readouterr().out
    assert '--update-manifest' in helped and 'usage: python -m osnet_zoo.weights convert' in helped


def test_readme_zoo_table_is_generated_from_the_manifest(capsys):
    assert weights_cli(['list', '--markdown']) == 0
    table = capsys.readouterr().out.strip()
    readme = (REPO / 'README.md').read_text(encoding='utf-8')
    start, end = '<!-- zoo-table: generated by `python -m osnet_zoo.weights list --markdown` -->', '<!-- /zoo-table -->'
    assert start in readme and end in readme
    assert readme.split(start)[1].split(end)[0].strip() == table, \
        'README zoo table is stale: replace it with the output of `python -m osnet_zoo.weights list --markdown`'
    assert (table.count('\n| `osnet_') == 43
            and '| `osnet_x1_0` | `market1501` | Market1501 | Market1501 94.2 / 82.6 | Google Drive (first use) |'
            in table)
    # each architecture's default tag is marked, with its source
    assert table.count(' (default) |') == 9
    assert '| `osnet_ain_x0_25` | `imagenet` (default) | ImageNet-1k | - | Google Drive (first use) |' in table
    assert '| `osnet_x1_0` | `msmt17_combineall` (default) |' in table


def test_package_exports():
    assert osnet_zoo.weights.PACKAGED_MANIFEST == PACKAGED_MANIFEST
    assert issubclass(osnet_zoo.weights.WeightsIntegrityError, osnet_zoo.CheckpointError)
