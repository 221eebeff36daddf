"""VIPeR, GRID and CUHK01 readers and their multi-split protocols, on synthetic copies of the released layouts."""
import json
import os
import re
import shutil
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from osnet_zoo.data import read_image
from osnet_zoo.data.datasets import (
    DatasetLayoutError, SplitFileError, aggregate_runs, build_dataset, cuhk01, format_aggregate, grid,
    protocol_runs, viper,
)
from osnet_zoo.data.synthetic_small import make_synthetic_cuhk01, make_synthetic_grid, make_synthetic_viper
from osnet_zoo.metrics import evaluate_features

scipy_io = pytest.importorskip('scipy.io', reason='optional package scipy not installed: the VIPeR/GRID/CUHK01 tests '
                                                  'in this file are skipped (pip install scipy)')

N = 8  # identities per synthetic dataset: 4 train, 4 test
DISTRACTORS = 5


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp('small')
    make_synthetic_viper(root, num_ids=N)
    make_synthetic_grid(root, num_ids=N, num_distractors=DISTRACTORS)
    make_synthetic_cuhk01(root, num_ids=N)
    return root


@pytest.fixture
def own_root(root, tmp_path):
    """A private copy of the datasets (without split files) for tests that change them."""
    for name in ('viper', 'grid', 'cuhk01'):
        shutil.copytree(root / name, tmp_path / name, ignore=shutil.ignore_patterns('*_splits.json'))
    return tmp_path


def _name_id(path, pattern):
    return int(re.match(pattern, os.path.basename(path)).group(1))


def _all_queries_have_a_match(ds):
    q, g = ds.query, ds.gallery
    res = evaluate_features(np.random.rand(len(q), 8).astype(np.float32), np.random.rand(len(g), 8).astype(np.float32),
                            [it.pid for it in q], [it.pid for it in g], [it.camid for it in q],
                            [it.camid for it in g], max_rank=10)
    return res['num_valid_queries'] == res['num_queries'] == len(q) > 0


# ----------------------------------------------------------------------------------------------------- VIPeR

def test_viper_split_directions_and_identities(root):
    a2b = viper(root, split_id=3)
    b2a = build_dataset('viper', root, split_id=3, direction='b2a')
    assert a2b.train == b2a.train and a2b.query == b2a.gallery and a2b.gallery == b2a.query
    assert {it.camid for it in a2b.query} == {0} and {it.camid for it in a2b.gallery} == {1}
    assert all('/cam_a/' in it.path for it in a2b.query) and all('/cam_b/' in it.path for it in a2b.gallery)
    # training: both images of half the identities, relabelled 0..N/2-1, one per camera
    assert sorted(it.pid for it in a2b.train) == sorted(list(range(N // 2)) * 2)
    assert {(it.pid, it.camid) for it in a2b.train} == {(p, c) for p in range(N // 2) for c in (0, 1)}
    train_ids = {_name_id(it.path, r'(\d+)_') for it in a2b.train}
    test_ids = {it.pid for it in a2b.query}
    all_ids = {_name_id(p.name, r'(\d+)_') for p in (root / 'viper' / 'VIPeR' / 'cam_a').iterdir()}
    assert len(test_ids) == N // 2 and not train_ids & test_ids and train_ids | test_ids == all_ids
    assert all(_name_id(it.path, r'(\d+)_') == it.pid for it in a2b.query + a2b.gallery)
    assert _all_queries_have_a_match(a2b) and _all_queries_have_a_match(b2a)
    assert len({frozenset(it.pid for it in viper(root, split_id=s).query) for s in range(10)}) > 1


def test_viper_split_file_written_once_reused_and_same_everywhere(root, tmp_path):
    viper(root)
    split_file = root / 'viper' / 'VIPeR' / 'viper_splits.json'
    before = split_file.stat().st_mtime_ns
    saved = json.loads(split_file.read_text())
    assert len(saved['splits']) == 10 and all(len(s['train']) == N // 2 for s in saved['splits'])
    viper(root, split_id=9, direction='b2a')
    assert split_file.stat().st_mtime_ns == before  # read back, not drawn again
    # another machine with the same images draws the same splits
    make_synthetic_viper(tmp_path, num_ids=N)
    viper(tmp_path)
    assert (tmp_path / 'viper' / 'VIPeR' / 'viper_splits.json').read_bytes() == split_file.read_bytes()
    # the file is the truth: a valid edited partition is what the reader uses
    other = tmp_path / 'viper' / 'VIPeR' / 'viper_splits.json'
    data = json.loads(other.read_text())
    data['splits'][0] = {'train': data['splits'][0]['test'], 'test': data['splits'][0]['train']}
    other.write_text(json.dumps(data))
    assert {it.pid for it in viper(tmp_path).query} == set(saved['splits'][0]['train'])


def test_viper_damaged_or_mismatched_split_file_is_named(own_root):
    viper(own_root)
    split_file = own_root / 'viper' / 'VIPeR' / 'viper_splits.json'
    good = split_file.read_text()
    split_file.write_text(good[: len(good) // 2])  # torn
    with pytest.raises(SplitFileError, match=re.escape(str(split_file))):
        viper(own_root)
    data = json.loads(good)
    data['splits'][4]['train'] = data['splits'][4]['train'][1:]  # one identity lost
    split_file.write_text(json.dumps(data))
    with pytest.raises(SplitFileError, match='split 4 is not a partition'):
        viper(own_root)
    split_file.write_text(good)
    for cam in ('cam_a', 'cam_b'):  # the images changed: one identity fewer
        sorted((own_root / 'viper' / 'VIPeR' / cam).iterdir())[0].unlink()
    with pytest.raises(SplitFileError, match='other identities') as e:
        viper(own_root)
    assert 'delete it' in str(e.value) and isinstance(e.value, DatasetLayoutError)
    split_file.unlink()
    assert len(viper(own_root).query) == (N - 1) - (N - 1) // 2  # new splits for the new identities


def test_viper_layout_errors_show_the_layout(own_root, tmp_path):
    with pytest.raises(DatasetLayoutError, match='does not exist') as e:
        viper(tmp_path / 'nowhere')
    assert 'cam_a/000_45.bmp' in str(e.value)
    base = own_root / 'viper' / 'VIPeR'
    lone = sorted((base / 'cam_b').iterdir())[2]
    lone.unlink()
    with pytest.raises(DatasetLayoutError, match='has no image in') as e:
        viper(own_root)
    assert lone.name.split('_')[0] in str(e.value)
    (base / 'cam_a' / 'portrait.bmp').write_bytes(b'')
    with pytest.raises(DatasetLayoutError, match='portrait.bmp: file name is not IDENTITY_ANGLE'):
        viper(own_root)
    shutil.rmtree(base / 'cam_b')
    with pytest.raises(DatasetLayoutError, match='missing cam_b'):
        viper(own_root)
    with pytest.raises(ValueError, match='split_id must be an integer in 0..9'):
        viper(own_root, split_id=10)
    with pytest.raises(ValueError, match='direction'):
        viper(own_root, direction='a->b')


# ---------------------------------------------------------------------------------------------------- CUHK01

def test_cuhk01_split_views(root):
    ds = build_dataset('cuhk01', root, split_id=2)
    assert ds.num_train_pids == N // 2 and len(ds.train) == 4 * (N // 2)
    assert {it.pid for it in ds.train} == set(range(N // 2))
    assert len(ds.query) == len(ds.gallery) == 2 * (N - N // 2)
    assert {it.camid for it in ds.query} == {0} and {it.camid for it in ds.gallery} == {1}
    # images 1-2 are the first view, 3-4 the second; identities as in the file names
    assert all(it.path.endswith(('001.png', '002.png')) for it in ds.query)
    assert all(it.path.endswith(('003.png', '004.png')) for it in ds.gallery)
    assert all(_name_id(it.path, r'(\d{4})') == it.pid for it in ds.query + ds.gallery)
    train_ids = {_name_id(it.path, r'(\d{4})') for it in ds.train}
    assert not train_ids & {it.pid for it in ds.query} and {it.pid for it in ds.query} == {it.pid for it in ds.gallery}
    assert _all_queries_have_a_match(ds)
    assert json.loads((root / 'cuhk01' / 'cuhk01_splits.json').read_text())['num_train'] == N // 2


def test_cuhk01_zip_is_extracted_once_and_resumes(root, tmp_path):
    zipped = make_synthetic_cuhk01(tmp_path / 'a', num_ids=N, as_zip=True)
    assert sorted(p.name for p in zipped.iterdir()) == ['CUHK01.zip', 'synthetic_small.json']
    ds = cuhk01(tmp_path / 'a', split_id=2)
    campus = zipped / 'campus'
    assert len(list(campus.iterdir())) == 4 * N and not (zipped / 'campus.partial').exists()
    with zipfile.ZipFile(zipped / 'CUHK01.zip') as zf:
        assert zf.read('campus/0003004.png') == (campus / '0003004.png').read_bytes()
    # the same images as the folder layout: the same splits, the same items (up to the root)
    assert [it.path.replace(str(tmp_path / 'a'), '') for it in ds.query] == \
        [it.path.replace(str(root), '') for it in cuhk01(root, split_id=2).query]
    (zipped / 'CUHK01.zip').rename(zipped / 'moved.zip')
    assert cuhk01(tmp_path / 'a', split_id=2).query == ds.query  # extracted once: the zip is no longer needed
    # an interrupted extraction: some images there, one torn; the next use completes it
    again = make_synthetic_cuhk01(tmp_path / 'b', num_ids=N, as_zip=True)
    partial = again / 'campus.partial'
    with zipfile.ZipFile(again / 'CUHK01.zip') as zf:
        zf.extract('campus/0001001.png', tmp_path / 'b' / 'x')
        torn = zf.read('campus/0002003.png')
    partial.mkdir()
    shutil.move(tmp_path / 'b' / 'x' / 'campus' / '0001001.png', partial / '0001001.png')
    (partial / '0002003.png').write_bytes(torn[:100])
    cuhk01(tmp_path / 'b')
    assert (again / 'campus' / '0002003.png').read_bytes() == torn and len(list((again / 'campus').iterdir())) == 4 * N


def test_cuhk01_layout_errors(own_root, tmp_path):
    with pytest.raises(DatasetLayoutError, match='campus') as e:
        cuhk01(tmp_path / 'nowhere')
    assert 'PPPPIII.png' in str(e.value)
    (tmp_path / 'bad' / 'cuhk01').mkdir(parents=True)
    (tmp_path / 'bad' / 'cuhk01' / 'CUHK01.zip').write_bytes(b'not a zip')
    with pytest.raises(DatasetLayoutError, match='CUHK01.zip as a zip file'):
        cuhk01(tmp_path / 'bad')
    campus = own_root / 'cuhk01' / 'campus'
    for n in (3, 4):
        (campus / f'0005{n:03d}.png').unlink()
    with pytest.raises(DatasetLayoutError, match='identity 0005 has no image from view 2'):
        cuhk01(own_root)
    shutil.copy(campus / '0001001.png', campus / '0001009.png')
    with pytest.raises(DatasetLayoutError, match='0001009.png: image number 9'):
        cuhk01(own_root)


# ------------------------------------------------------------------------------------------------------ GRID

def _mat_train_ids(root):
    mat = scipy_io.loadmat(str(root / 'grid' / 'underground_reid' / 'features_and_partitions.mat'))
    return [set(mat['trainIdxAll'][0][s][0][0]['personIdx'].ravel().astype(int)) for s in range(10)]


def test_grid_splits_come_from_the_mat_file(root):
    expected = _mat_train_ids(root)
    for split_id in (0, 7):
        ds = grid(root, split_id=split_id)
        train_ids = {_name_id(it.path, r'(\d{4})_') for it in ds.train}
        assert train_ids == expected[split_id] and len(ds.train) == 2 * len(train_ids)
        assert {it.pid for it in ds.train} == set(range(N // 2))
        assert all('/probe/' in it.path for it in ds.query) and len(ds.query) == N - N // 2
        assert {it.pid for it in ds.query} == set(range(1, N + 1)) - expected[split_id]
        g_ids = [it.pid for it in ds.gallery]
        assert g_ids.count(0) == DISTRACTORS and set(g_ids) - {0} == {it.pid for it in ds.query}
        assert {it.camid for it in ds.query + ds.gallery} <= set(range(8))
        assert _all_queries_have_a_match(ds)
    assert grid(root, split_id=0).train != grid(root, split_id=7).train
    everything = grid(root).combineall()  # distractors (identity 0) never join training
    assert len(everything.train) == 2 * N and not any('/0000_' in it.path for it in everything.train)


def test_grid_reads_a_struct_array_by_the_third_field(own_root):
    mat_path = own_root / 'grid' / 'underground_reid' / 'features_and_partitions.mat'
    folds = np.zeros((1, 10), dtype=[('probe', object), ('gallery', object), ('persons', object)])
    rng = np.random.default_rng(5)
    ids = []
    for s in range(10):
        ids.append(rng.permutation(np.arange(1, N + 1))[:N // 2])
        folds[0, s] = (ids[-1] * 2.0, ids[-1] * 2.0 - 1, ids[-1].astype(float)[None, :])
    scipy_io.savemat(str(mat_path), {'trainIdxAll': folds})
    ds = grid(own_root, split_id=6)
    assert {_name_id(it.path, r'(\d{4})_') for it in ds.train} == set(ids[6].tolist())


def test_grid_errors(own_root, tmp_path, monkeypatch):
    base = own_root / 'grid' / 'underground_reid'
    with pytest.raises(ValueError, match='split_id must be an integer in 0..9'):
        grid(own_root, split_id=10)
    scipy_io.savemat(str(base / 'features_and_partitions.mat'), {'testIdxAll': np.zeros((1, 2))})
    with pytest.raises(DatasetLayoutError, match='has no trainIdxAll entry'):
        grid(own_root)
    (base / 'features_and_partitions.mat').write_bytes(b'garbage')
    with pytest.raises(DatasetLayoutError, match='cannot read .*features_and_partitions.mat'):
        grid(own_root)
    (base / 'features_and_partitions.mat').unlink()
    with pytest.raises(DatasetLayoutError, match='missing features_and_partitions.mat') as e:
        grid(own_root)
    assert 'probe/0001_1_' in str(e.value)
    monkeypatch.setitem(sys.modules, 'scipy.io', None)  # as if scipy were not installed
    with pytest.raises(ImportError, match=re.escape('pip install "osnet-zoo[grid]"')):
        make_synthetic_grid(tmp_path, num_ids=4)


def test_grid_unpaired_images_are_named(own_root):
    gallery = own_root / 'grid' / 'underground_reid' / 'gallery'
    match = next(p for p in sorted(gallery.iterdir()) if p.name.startswith('0003_'))
    match.rename(gallery / ('0000' + match.name[4:]))  # probe 0003 loses its true match
    with pytest.raises(DatasetLayoutError, match='identity 3 has no image in'):
        grid(own_root)


# ------------------------------------------------------------------------------------------------- protocols

def test_protocol_runs_cover_every_split_and_direction(root):
    runs = protocol_runs('viper')
    assert len(runs) == 20 and len({(r.split_id, r.options['direction']) for r in runs}) == 20
    assert {r.split_id for r in runs} == set(range(10))
    for name in ('grid', 'cuhk01'):
        assert [r.split_id for r in protocol_runs(name)] == list(range(10))
        assert all(r.options == {} for r in protocol_runs(name))
    with pytest.raises(KeyError, match='no multi-split protocol'):
        protocol_runs('market1501')
    seen = set()
    for r in runs:  # every run builds, and is a different evaluation
        ds = build_dataset('viper', root, split_id=r.split_id, **r.options)
        seen.add((tuple(it.path for it in ds.query), tuple(it.path for it in ds.gallery)))
    assert len(seen) > 10


def test_aggregate_runs_mean_and_std_of_rank_and_map(root):
    rng = np.random.default_rng(0)
    results = []
    for r in protocol_runs('grid'):
        ds = grid(root, split_id=r.split_id)
        results.append(evaluate_features(rng.random((len(ds.query), 4), np.float32),
                                         rng.random((len(ds.gallery), 4), np.float32),
                                         [it.pid for it in ds.query], [it.pid for it in ds.gallery],
                                         [it.camid for it in ds.query], [it.camid for it in ds.gallery], max_rank=20))
    agg = aggregate_runs(results)
    r1 = np.array([res['cmc'][0] for res in results])
    assert agg['num_runs'] == 10 and np.isclose(agg['rank1']['mean'], r1.mean()) and np.isclose(agg['rank1']['std'],
                                                                                                r1.std())
    assert np.isclose(agg['mAP']['mean'], np.mean([res['mAP'] for res in results]))
    assert agg['rank1']['mean'] <= agg['rank5']['mean'] <= agg['rank10']['mean'] <= 1
    # the dicts train.py writes give the same numbers
    flat = [dict(rank1=res['cmc'][0], rank5=res['cmc'][4], rank10=res['cmc'][9], mAP=res['mAP']) for res in results]
    assert aggregate_runs(flat) == agg
    two = aggregate_runs([dict(rank1=0.2, rank5=0.5, rank10=0.6, mAP=0.1), dict(rank1=0.4, rank5=0.5, rank10=0.8,
                                                                              mAP=0.3)])
    assert np.isclose(two['rank1']['mean'], 0.3) and np.isclose(two['rank1']['std'], 0.1)
    assert two['rank5']['std'] == 0
    assert format_aggregate(two).startswith('Rank-1 30.0 ± 10.0') and '(2 runs)' in format_aggregate(two)
    with pytest.raises(ValueError, match="run 1: result has no 'mAP'"):
        aggregate_runs([flat[0], {'cmc': results[0]['cmc']}])
    with pytest.raises(ValueError, match='Rank-10 needs max_rank >= 10'):
        aggregate_runs([{'cmc': np.ones(5), 'mAP': 1.0}])
    with pytest.raises(ValueError, match='at least one'):
        aggregate_runs([])


# ------------------------------------------------------------------------------------------------- generator

def test_synthetic_small_layouts_are_reproducible(root, tmp_path):
    again = make_synthetic_viper(tmp_path, num_ids=N)
    a = sorted((root / 'viper' / 'VIPeR' / 'cam_b').iterdir())
    b = sorted((again / 'VIPeR' / 'cam_b').iterdir())
    assert [p.name for p in a] == [p.name for p in b] and a[2].read_bytes() == b[2].read_bytes()
    assert all(re.fullmatch(r'\d{3}_(0|45|90|135|180)\.bmp', p.name) for p in a)
    with Image.open(a[0]) as im:
        assert im.format == 'BMP' and im.size == (48, 128)
    other = make_synthetic_viper(tmp_path / 'seed1', num_ids=N, seed=1)
    assert sorted(p.name for p in (other / 'VIPeR' / 'cam_b').iterdir()) != [p.name for p in b]
    with pytest.raises(FileExistsError):
        make_synthetic_viper(tmp_path, num_ids=N)
    with pytest.raises(ValueError, match='num_ids'):
        make_synthetic_cuhk01(tmp_path / 'x', num_ids=1)
    grid_names = [p.name for p in (root / 'grid' / 'underground_reid' / 'gallery').iterdir()]
    assert all(re.fullmatch(r'\d{4}_[1-8]_\d{5}\.jpeg', n) for n in grid_names)
    assert sum(n.startswith('0000_') for n in grid_names) == DISTRACTORS
    campus = sorted((root / 'cuhk01' / 'campus').iterdir())
    assert [p.name for p in campus[:5]] == ['0001001.png', '0001002.png', '0001003.png', '0001004.png', '0002001.png']
    assert read_image(str(campus[0])).size == (60, 160)
