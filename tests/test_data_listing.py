"""Your own data: a CSV listing, the folder layout, register_dataset and the ``osnet_zoo.datasets`` entry points.

The images are generated here (small PNG and JPEG crops in tmp), not taken from the synthetic set. Training
runs are real ``python -m osnet_zoo.train`` subprocesses (tiny settings, as tests/test_train.py), and the
evaluation of the trained run a real ``python -m osnet_zoo.evaluate``, whose figures must equal train's.
"""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np
import pytest
from PIL import Image

from osnet_zoo import cli
from osnet_zoo.data import ListingError, build_dataset, read_folder, read_listing, register_dataset
from osnet_zoo.data.__main__ import main as data_main
from osnet_zoo.data.datasets import DATASETS, dataset_file_tag
from conftest import child_env, run_module

TINY = ['--model', 'osnet_x0_25', '--height', '64', '--width', '32', '--batch-size', '16', '--lr', '0.003',
        '--eval-freq', '0', '--workers', '0', '--device', 'cpu', '--epochs', '1']
SPLIT_OF = {0: 'query'}  # image 0 of a test person is its query, the others its gallery


def person_image(rng: np.random.Generator, person: int) -> Image.Image:
    """A 64x32 crop: a person's own top and bottom colours under heavy noise (so the figures are not all 100%)."""
    top, bottom = np.random.default_rng(person).integers(0, 256, (2, 3))
    img = np.concatenate([np.broadcast_to(top, (32, 32, 3)), np.broadcast_to(bottom, (32, 32, 3))])
    return Image.fromarray(np.clip(img + rng.normal(0, 70, img.shape), 0, 255).astype(np.uint8))


def make_people(folder: Path, train: int = 8, test: int = 6, per_person: int = 4) -> List[Dict[str, str]]:
    """Images of ``train`` + ``test`` people under ``folder/img`` (PNG and JPEG); returns their listing rows
    (paths relative to ``folder``). Test people: image 0 is the query (camera 0), the others gallery images of
    cameras 1, 2, 0 (the last is left out by the protocol: same person, same camera)."""
    rng = np.random.default_rng(0)
    (folder / 'img').mkdir(parents=True, exist_ok=True)
    rows = []
    for person in range(train + test):
        for k in range(per_person):
            name = f'img/p{person:02d}_{k}.{"png" if k % 2 else "jpg"}'
            person_image(rng, person).save(folder / name)
            split = 'train' if person < train else SPLIT_OF.get(k, 'gallery')
            rows.append(dict(path=name, pid=f'person-{person}', camid=str(k % 3), split=split))
    return rows


def write_csv(path: Path, rows: Sequence[Dict[str, str]], columns: Sequence[str] = ('path', 'pid', 'camid', 'split')):
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, columns, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope='module')
def listing(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp('own') / 'shop'
    return write_csv(folder / 'listing.csv', make_people(folder))


def train_line(stdout: str, target: str) -> Dict[str, float]:
    """train's final line for ``target``: 'TARGET: Rank-1 12.3%  mAP 45.6%  (chance ...)'."""
    m = re.search(re.escape(target) + r': Rank-1 ([\d.]+)%  mAP ([\d.]+)%', stdout)
    assert m, stdout[-2000:]
    return dict(rank1=float(m.group(1)), mAP=float(m.group(2)))


def evaluate_line(stdout: str) -> Dict[str, float]:
    """evaluate's summary line: 'NAME  R1 12.34  R5 ... mAP 45.67  mINP ... (V/N queries)'."""
    m = re.search(r'R1 +([\d.]+) .*mAP +([\d.]+) .*\((\d+)/(\d+) queries\)', stdout)
    assert m, stdout[-2000:]
    return dict(rank1=float(m.group(1)), mAP=float(m.group(2)), valid=int(m.group(3)), queries=int(m.group(4)))


def train_then_evaluate(dataset: str, out: Path, cwd: Path, eval_cwd: Path,
                        name_target: bool = True) -> Dict[str, Dict]:
    """Train one epoch on ``dataset`` (a path as the user types it, from ``cwd``), then evaluate the run from
    ``eval_cwd`` on the target the run recorded (given as ``--dataset``, or left for evaluate to take from the
    run when not ``name_target``); returns both results and printed lines."""
    r = run_module('osnet_zoo.train', '--sources', dataset, '--targets', dataset, '--output', out, *TINY, cwd=cwd)
    assert r.returncode == 0, r.stderr[-3000:]
    run = json.loads((out / 'run.json').read_text())['settings']
    target = run['targets'][0]
    assert Path(target).is_absolute() and run['sources'] == [target]  # resumable and evaluable from anywhere
    trained = json.loads((out / 'results.json').read_text())['targets'][target]
    e = run_module('osnet_zoo.evaluate', '--checkpoint', out, *(['--dataset', target] if name_target else []),
                   '--workers', '0', '--device', 'cpu', '--output', out.parent / 'eval', cwd=eval_cwd)
    assert e.returncode == 0, e.stderr[-3000:]
    if not name_target:
        assert f'--dataset from the training run {out / "config.json"}: {target}' in e.stdout, e.stdout[-2000:]
    evaluated = json.loads((out.parent / 'eval' / 'results.json').read_text())['targets'][target]
    assert (out.parent / 'eval' / f'ranked_{dataset_file_tag(target)}.png').is_file()
    return dict(trained=trained, evaluated=evaluated, train_line=train_line(r.stdout, target),
                evaluate_line=evaluate_line(e.stdout))


def assert_same_figures(res: Dict[str, Dict]) -> None:
    trained, evaluated = res['trained'], res['evaluated']
    for k in ('rank1', 'mAP', 'mINP', 'num_query', 'num_valid_queries', 'num_gallery'):
        assert evaluated[k] == pytest.approx(trained[k], abs=1e-6), (k, trained, evaluated)
    for k in ('rank1', 'mAP'):  # what each command printed: train to 0.1, evaluate to 0.01 percent
        assert res['train_line'][k] == pytest.approx(round(res['evaluate_line'][k], 1), abs=0.051)
        assert res['train_line'][k] == pytest.approx(100 * trained[k], abs=0.051)


def test_csv_listing_trains_and_evaluate_prints_what_train_printed(listing, tmp_path):
    res = train_then_evaluate(os.path.relpath(listing, tmp_path), tmp_path / 'run', cwd=tmp_path,
                              eval_cwd=listing.parent)
    assert_same_figures(res)
    # six queries, each with gallery images of its person from other cameras; not a trivial 100%
    assert res['evaluate_line']['valid'] == res['evaluate_line']['queries'] == 6
    assert res['trained']['num_gallery'] == 18 and 0 < res['trained']['mAP'] < 1
    # the same listing by another relative path, from another folder, is the same run (recorded absolute)
    again = run_module('osnet_zoo.train', '--sources', 'listing.csv', '--targets', 'listing.csv', '--output',
                       tmp_path / 'run', *TINY, cwd=listing.parent)
    assert again.returncode == 0 and f'The run in {tmp_path / "run"} is already finished' in again.stdout, \
        again.stderr[-2000:]


def test_folder_layout_without_cameras_trains_and_evaluates_the_same(tmp_path):
    rows = make_people(tmp_path / 'flat', train=8, test=5)
    root = tmp_path / 'people'
    for row in rows:  # one camera: ROOT/<split>/<person>/<image>, no camera anywhere
        dest = root / row['split'] / row['pid'] / Path(row['path']).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / 'flat' / row['path']).rename(dest)
    ds = read_folder(root)
    assert {it.camid for it in ds.query} == {0} and {it.camid for it in ds.gallery} == {1}
    # evaluate without --dataset: the run's own target, the folder, recorded as an absolute path
    res = train_then_evaluate('people', tmp_path / 'run', cwd=tmp_path, eval_cwd=tmp_path / 'run', name_target=False)
    assert_same_figures(res)
    # every gallery image of the query's person counts: no query left out, 5 x 3 gallery images
    assert res['evaluate_line']['valid'] == res['evaluate_line']['queries'] == 5
    assert res['evaluated']['num_gallery'] == 15


def test_listing_numbers_people_and_reads_paths(listing, tmp_path):
    ds = read_listing(listing)
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (32, 6, 18) and ds.name == 'listing'
    assert sorted({it.pid for it in ds.train}) == list(range(8))
    assert all(os.path.isabs(it.path) and os.path.isfile(it.path) for it in ds.train + ds.query + ds.gallery)
    # one numbering for query and gallery: a person has one number in both, and no two people share one
    person = {os.path.normpath(listing.parent / r['path']): r['pid'] for r in csv.DictReader(open(listing))}
    pairs = {(person[it.path], it.pid) for it in ds.query + ds.gallery}
    assert len(pairs) == len({p for p, _ in pairs}) == len({n for _, n in pairs}) == 6
    # an absolute path in the listing, extra columns, and the listing found by build_dataset from a path
    extra = [dict(r, path=str(listing.parent / r['path']), note='x') for r in csv.DictReader(open(listing))]
    moved = write_csv(tmp_path / 'elsewhere.csv', extra, ('note', 'split', 'camid', 'pid', 'path'))
    again = build_dataset(str(moved), root='/nonexistent')
    assert [it.path for it in again.gallery] == [it.path for it in ds.gallery]


def test_to_csv_converts_a_folder_with_cameras(tmp_path, capsys):
    make = np.random.default_rng(1)
    files = ['train/ann/c1/a.png', 'train/ann/c2/b.jpg', 'train/bob/x_c3_1.png', 'train/bob/cam4-2.png',
             'query/cy/q_c1.jpg', 'gallery/cy/g_c2.png', 'gallery/cy/c1/g2.png', 'gallery/dee/d_c5.png']
    for f in files:
        (tmp_path / 'f' / f).parent.mkdir(parents=True, exist_ok=True)
        person_image(make, len(f)).save(tmp_path / 'f' / f)
    (tmp_path / 'f' / 'train' / 'ann' / 'notes.txt').write_text('not an image')
    assert data_main(['to-csv', str(tmp_path / 'f'), '--output', str(tmp_path / 'out' / 'f.csv')])['images'] == 8
    printed = capsys.readouterr()
    assert 'wrote' in printed.out
    assert f"1 files that are not images (.jpg, .jpeg, .png, .bmp, .webp, .tif, .tiff, .ppm, .pgm) left out (first: " \
           f"{tmp_path / 'f' / 'train' / 'ann' / 'notes.txt'})" in printed.err
    written = list(csv.DictReader(open(tmp_path / 'out' / 'f.csv')))
    assert {r['path']: r['camid'] for r in written} == {
        '../f/train/ann/c1/a.png': '1', '../f/train/ann/c2/b.jpg': '2', '../f/train/bob/x_c3_1.png': '3',
        '../f/train/bob/cam4-2.png': '4', '../f/query/cy/q_c1.jpg': '1', '../f/gallery/cy/g_c2.png': '2',
        '../f/gallery/cy/c1/g2.png': '1', '../f/gallery/dee/d_c5.png': '5'}
    assert {r['pid'] for r in written} == {'ann', 'bob', 'cy', 'dee'}
    from_csv, from_folder = read_listing(tmp_path / 'out' / 'f.csv'), read_folder(tmp_path / 'f')
    for split in ('train', 'query', 'gallery'):
        assert getattr(from_csv, split) == getattr(from_folder, split)
    # without --output: FOLDER/listing.csv
    data_main(['to-csv', str(tmp_path / 'f')])
    assert (tmp_path / 'f' / 'listing.csv').is_file()


def cli_error(main: Callable, argv: Sequence[str], capsys) -> str:
    """The one line ``cli.run`` prints for a bad input (what every command prints), without 'error: '."""
    capsys.readouterr()
    code = cli.run(lambda: main(list(argv)))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith('error: ')]
    assert code == 1 and len(lines) == 1 and 'Traceback' not in err, err
    return lines[0][len('error: '):]


def edit(rows: List[Dict[str, str]], i: int, **change) -> List[Dict[str, str]]:
    return [dict(r, **change) if j == i else r for j, r in enumerate(rows)]


# name -> (rows of the good listing -> bad rows, columns, what the one line must say); the listing's data rows
# start on line 2, so row i is on line i + 2
BAD_LISTINGS = {
    'missing_column': (lambda rows: rows, ('path', 'pid', 'split'), ['missing column camid']),
    'unknown_split': (lambda rows: edit(rows, 3, split='test'), None, ["line 5: split 'test' is not one of train, "
                                                                       'query, gallery']),
    'camid_not_integer': (lambda rows: edit(rows, 4, camid='front'), None,
                          ["line 6: camid 'front' is not an integer"]),
    'missing_image': (lambda rows: edit(rows, 2, path='img/gone.png'), None,
                      ['line 4: image', 'gone.png does not exist']),
    'not_an_image': (lambda rows: edit(rows, 1, path='notes.jpg'), None,
                     ['line 3:', 'notes.jpg is not an image']),
    'query_without_gallery': (lambda rows: [r for r in rows if (r['pid'], r['split']) != ('person-9', 'gallery')],
                              None, ["query identity 'person-9' has no image in the gallery",
                                     '(1 query identities lack one']),
    'training_identity_with_one_image': (lambda rows: [r for r in rows if not (r['pid'] in ('person-1', 'person-4')
                                                                               and r['path'][-5] != '0')],
                                         None, ['2 of 8 training identities have one image only',
                                                "'person-1' (", 'line 6)', "'person-4' (", 'line 15)']),
    'every_query_own_camera': (lambda rows: [dict(r, camid='0') for r in rows], None,
                               ['every query has gallery images of its person from its own camera only']),
}


@pytest.mark.parametrize('case', sorted(BAD_LISTINGS))
def test_bad_listing_is_one_line_naming_file_and_row(case, listing, tmp_path, capsys):
    change, columns, says = BAD_LISTINGS[case]
    rows = list(csv.DictReader(open(listing)))
    folder = tmp_path / 'bad'
    (folder / 'img').mkdir(parents=True)
    for r in rows:
        (folder / r['path']).symlink_to(listing.parent / r['path'])
    (folder / 'notes.jpg').write_text('not pixels')
    bad = write_csv(folder / 'bad.csv', change(rows), columns or ('path', 'pid', 'camid', 'split'))
    with pytest.raises(ListingError) as raised:
        read_listing(bad)
    assert str(bad) in str(raised.value) and '\n' not in str(raised.value)
    line = cli_error(data_main, ['stats', '--dataset', str(bad)], capsys)
    for part in says:
        assert part in line, line


def test_queries_left_out_are_counted(listing, tmp_path, capsys):
    rows = list(csv.DictReader(open(listing)))
    # person-8's gallery images all in its query's camera 0: the protocol leaves that query out, and says so
    rows = [dict(r, camid='0') if r['pid'] == 'person-8' else r for r in rows]
    ds = read_listing(write_csv(listing.parent / 'own_camera.csv', rows))
    assert len(ds.query) == 6
    assert '1 of 6 queries have gallery images of their person from their own camera only' in capsys.readouterr().err


def test_folder_layout_errors(tmp_path, capsys):
    root = tmp_path / 'mixed'
    for f in ('train/ann/a_c1.png', 'train/ann/b.png', 'query/bob/q.png', 'gallery/bob/g.png'):
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        person_image(np.random.default_rng(0), 1).save(root / f)
    line = cli_error(data_main, ['to-csv', str(root)], capsys)
    assert str(root / 'train/ann/b.png') in line and 'no camera' in line and '1 of 4 images' in line
    (root / 'query' / 'loose.png').write_bytes((root / 'query' / 'bob' / 'q.png').read_bytes())
    assert 'has no person' in cli_error(data_main, ['to-csv', str(root)], capsys)
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert 'no train/, query/ or gallery/ folder' in cli_error(data_main, ['to-csv', str(empty)], capsys)
    assert 'no such CSV listing or folder' in cli_error(
        data_main, ['stats', '--dataset', str(tmp_path / 'absent.csv')], capsys)


def people_folder(root: Path, images: Dict[str, Sequence[str]]) -> Path:
    """``root/<person>/<file>`` for each person's files (a ``c<N>/`` part or token gives the camera)."""
    rng = np.random.default_rng(2)
    for i, (person, files) in enumerate(sorted(images.items())):
        for f in files:
            (root / person / f).parent.mkdir(parents=True, exist_ok=True)
            person_image(rng, i).save(root / person / f)
    return root


def test_to_csv_splits_a_folder_of_people_by_person_with_a_query_per_camera(tmp_path, capsys):
    people = {f'p{i:02d}': ['c1/a.png', 'c1/b.png', 'c2/c.png', 'c2/d.png', 'c3/e.png'] for i in range(8)}
    people.update(one_camera=['c1/x.png', 'c1/y.png'], single=['c2/z.png'], one_each=['c1/u.png', 'c2/v.png'])
    root = people_folder(tmp_path / 'tracks', people)
    result = data_main(['to-csv', str(root), '--test-fraction', '0.5', '--seed', '3'])
    printed = capsys.readouterr()
    split = result['people']
    assert split['left_out'] == ['single'] and '1 people with one image left out' in printed.err
    assert 'single' in printed.err and 'split 10 people by --seed 3: 5 to train, 5 to test' in printed.out
    assert sorted(split['train'] + split['test']) == sorted(set(people) - {'single'})
    assert 'one_camera' not in split['test']  # one camera: no query could find it elsewhere
    rows = list(csv.DictReader(open(root / 'listing.csv')))
    assert {r['pid'] for r in rows if r['split'] == 'train'} == set(split['train'])
    for person in split['test']:
        mine = [r for r in rows if r['pid'] == person]
        queries = [r for r in mine if r['split'] == 'query']
        # a query from each camera that keeps a gallery image: p*, cameras 1 and 2 (camera 3 has one image);
        # one_each (one image per camera): a single query
        if person == 'one_each':
            assert len(queries) == 1
        else:
            assert sorted(r['camid'] for r in queries) == ['1', '2']
        for q in queries:  # each query has gallery images of its person from another camera
            assert any(r['split'] == 'gallery' and r['camid'] != q['camid'] for r in mine)
    # the same seed writes the same listing; another seed draws other people
    first = (root / 'listing.csv').read_bytes()
    data_main(['to-csv', str(root), '--seed', '3', '--test-fraction', '0.5'])
    assert (root / 'listing.csv').read_bytes() == first
    assert data_main(['to-csv', str(root), '--seed', '4', '--test-fraction', '0.5',
                      '--output', str(tmp_path / 'other.csv')])['people']['test'] != split['test']
    assert len(read_listing(root / 'listing.csv').query) == len([r for r in rows if r['split'] == 'query'])


def test_a_folder_of_people_without_cameras_splits_trains_and_evaluates(tmp_path):
    rows = make_people(tmp_path / 'flat', train=8, test=6)
    root = tmp_path / 'people'
    for row in rows:  # ROOT/<person>/<image>: no split, no camera
        dest = root / row['pid'] / Path(row['path']).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / 'flat' / row['path']).rename(dest)
    made = run_module('osnet_zoo.data', 'to-csv', 'people', '--output', 'people.csv', cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    assert 'split 14 people by --seed 0: 7 to train, 7 to test (7 queries, 21 gallery images)' in made.stdout
    listed = list(csv.DictReader(open(tmp_path / 'people.csv')))
    assert {r['camid'] for r in listed if r['split'] == 'query'} == {'0'}  # the folder layout's default cameras
    assert {r['camid'] for r in listed if r['split'] == 'gallery'} == {'1'}
    res = train_then_evaluate('people.csv', tmp_path / 'run', cwd=tmp_path, eval_cwd=tmp_path / 'run',
                              name_target=False)
    assert_same_figures(res)
    assert res['evaluate_line']['valid'] == res['evaluate_line']['queries'] == 7


def test_splitting_a_folder_of_people_refuses_what_it_cannot_split(tmp_path, capsys):
    root = people_folder(tmp_path / 'few', {'a': ['1.png', '2.png'], 'b': ['3.png']})
    line = cli_error(data_main, ['to-csv', str(root)], capsys)
    assert str(root) in line and '1 people with two or more images' in line and 'too few' in line
    many = people_folder(tmp_path / 'many', {f'p{i}': ['1.png', '2.png'] for i in range(4)})
    assert 'between 0 and 1' in cli_error(data_main, ['to-csv', str(many), '--test-fraction', '1.5'], capsys)
    presplit = people_folder(tmp_path / 'presplit', {'train/a': ['1.png', '2.png']})
    assert 'split already' in cli_error(data_main, ['to-csv', str(presplit), '--test-fraction', '0.3'], capsys)
    # a command given the unsplit folder as a dataset says how to split it
    line = cli_error(data_main, ['stats', '--dataset', str(many)], capsys)
    assert 'no train/, query/ or gallery/ folder' in line and 'holds 4 folders, one per person?' in line
    assert f'python -m osnet_zoo.data to-csv {many}' in line


def test_register_dataset(listing):
    def shop(root, **options):
        return read_listing(listing)

    register_dataset('shop_test', shop)
    try:
        assert len(build_dataset('shop_test', '/unused').gallery) == 18
        with pytest.raises(ValueError, match='already registered'):
            register_dataset('shop_test', shop)
        with pytest.raises(KeyError, match=r"unknown dataset; available: .*shop_test"):
            build_dataset('shp_test', '/unused')
    finally:
        DATASETS.pop('shop_test')
    with pytest.raises(ValueError, match='built-in'):
        register_dataset('market1501', shop)
    with pytest.raises(ValueError, match='not a dataset name'):
        register_dataset('my/data.csv', shop)


READER = '''\
from pathlib import Path
from osnet_zoo.data import read_listing


def shop(root, **options):
    """The shop's people: the listing under ROOT/shop/."""
    return read_listing(Path(root) / 'shop' / 'listing.csv')


def not_a_dataset(root, **options):
    return [root]
'''

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "osnet-zoo-shop-reader"
version = "0.1"

[tool.setuptools]
py-modules = ["shop_reader"]

[project.entry-points."osnet_zoo.datasets"]
shopfloor = "shop_reader:shop"
wrongtype = "shop_reader:not_a_dataset"
broken = "shop_reader:missing"
'''


def test_entry_point_reader_of_an_installed_package(listing, tmp_path):
    package = tmp_path / 'pkg'
    package.mkdir()
    (package / 'shop_reader.py').write_text(READER)
    (package / 'pyproject.toml').write_text(PYPROJECT)
    site = tmp_path / 'site'
    pip = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation', '--no-index',
                          '--quiet', '--target', str(site), str(package)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    assert list(site.glob('osnet_zoo_shop_reader-0.1.dist-info/entry_points.txt'))
    env = child_env()
    env['PYTHONPATH'] += os.pathsep + str(site)
    root = listing.parent.parent  # ROOT/shop/listing.csv
    r = run_module('osnet_zoo.train', '--sources', 'shopfloor', '--targets', 'shopfloor', '--root', root,
                   '--output', tmp_path / 'run', *TINY, '--max-steps-per-epoch', '1', env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'listing\n  train          8 ids       32 images' in r.stdout
    assert json.loads((tmp_path / 'run' / 'results.json').read_text())['targets']['shopfloor']['num_query'] == 6
    # an unknown name lists the entry points' names beside the built-in ones
    bad = run_module('osnet_zoo.data', 'stats', '--dataset', 'shopflor', '--root', root, env=env)
    assert bad.returncode == 1 and 'Traceback' not in bad.stderr
    assert re.search(r"error: --dataset 'shopflor': unknown dataset; available: .*market1501.*shopfloor", bad.stderr)
    # a reader that does not load, or returns no ReIDDataset: one line naming the entry point
    for name, says in (('broken', "dataset 'broken': cannot load its reader shop_reader:missing (entry point of "
                                  'group osnet_zoo.datasets)'),
                       ('wrongtype', "dataset 'wrongtype': its reader shop_reader:not_a_dataset returned list")):
        bad = run_module('osnet_zoo.data', 'stats', '--dataset', name, '--root', root, env=env)
        assert bad.returncode == 1 and 'Traceback' not in bad.stderr and says in bad.stderr, bad.stderr[-1000:]
