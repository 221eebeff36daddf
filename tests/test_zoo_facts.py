"""The weights manifest against the facts it was filled from (``../shared/zoo/osnet_zoo_facts.tsv``), read
here independently: every fact the file states is in the manifest, and nothing it leaves empty is filled."""
import csv
import json
import os
from pathlib import Path

import pytest

from conftest import REPO

FACTS = Path(os.environ.get('OSNET_ZOO_FACTS', REPO.parent / 'shared' / 'zoo' / 'osnet_zoo_facts.tsv'))
MANIFEST = REPO / 'osnet_zoo' / 'weights' / 'weights_manifest.json'


@pytest.fixture(scope='module')
def rows():
    if not FACTS.is_file():
        if os.environ.get('CI') or not os.environ.get('OSNET_ZOO_SKIP_FIXTURE_TESTS'):
            pytest.fail(f'zoo facts missing: expected {FACTS} (../shared beside the clone, or set OSNET_ZOO_FACTS; '
                        'OSNET_ZOO_SKIP_FIXTURE_TESTS=1 skips)')
        pytest.skip(f'zoo facts not found at {FACTS} (OSNET_ZOO_SKIP_FIXTURE_TESTS is set)')
    with open(FACTS, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f, delimiter='\t'))


@pytest.fixture(scope='module')
def entries():
    data = json.loads(MANIFEST.read_text())
    return {(e['architecture'], e['tag']): e for e in data['entries']}


def _metrics(cell: str):
    """'market1501:R1=59.9,mAP=31.0;dukemtmcreid:R1=61.5' -> {target: {'rank1': 59.9, 'mAP': 31.0, ...}}."""
    out = {}
    for part in filter(None, (p.strip() for p in cell.split(';'))):
        target, _, figures = part.partition(':')
        values = dict(kv.split('=') for kv in figures.split(','))
        out[target.strip()] = {{'R1': 'rank1', 'R5': 'rank5', 'R10': 'rank10'}.get(k.strip(), k.strip()): float(v)
                               for k, v in values.items()}
    return out


def test_one_entry_per_row(rows, entries):
    assert len(rows) == 43
    assert {(r['architecture'], r['tag']) for r in rows} == set(entries)


def test_every_stated_fact_is_recorded_and_no_empty_cell_is_filled(rows, entries):
    for r in rows:
        e = entries[(r['architecture'], r['tag'])]
        up = e['upstream']
        where = f"{r['architecture']}.{r['tag']}"
        pairs = [('gdrive_id', up['gdrive_id']), ('filename', up['filename']), ('sha256', up['sha256']),
                 ('hf_hub_repo', up['hf_hub_id'])]
        for column, recorded in pairs:
            assert recorded == (r[column] or None), f'{where}: {column}'
        assert up['size'] == (int(r['size_bytes']) if r['size_bytes'] else None), f'{where}: size'
        assert e['num_classes'] == (int(r['num_classes']) if r['num_classes'] else None), f'{where}: num_classes'
        assert e['distance'] == (r['distance'] or None), f'{where}: distance'
        revisions = [v.strip() for v in r['hf_revision'].split(';') if v.strip()]
        if revisions:
            assert up['hf_revision'] in revisions and set(up['hf_revisions_seen']) == set(revisions), where
        else:
            assert up['hf_revision'] is None, where
        if r['input_size']:
            assert tuple(e['input_size'][-2:]) == tuple(int(v) for v in r['input_size'].strip('()').split(',')), where
        else:
            assert e['input_size'] is None, where
        if r['transforms']:
            assert e['transforms'] == [t.strip() for t in r['transforms'].split(',')], where
        reported = _metrics(r['targets_and_metrics'])
        recorded = {ev['target']: ev for ev in e['evaluation']}
        assert set(recorded) == set(reported), f'{where}: targets'
        for target, figures in reported.items():
            for key in ('rank1', 'rank5', 'rank10', 'mAP'):
                assert recorded[target][key] == figures.get(key), f'{where}: {target} {key}'


def test_licence_is_recorded_with_its_source(entries):
    for e in entries.values():
        assert e['license'] == 'mit' and 'MIT' in e['sources']['license']
