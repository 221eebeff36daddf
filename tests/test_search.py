"""Search (issue 33, part 2): the exact index ranks as evaluate's distance matrix does, the approximate ones
by option, the gallery memory-mapped; `python -m osnet_zoo.search` on files, a folder, a CSV listing and an
extract features file, with its JSON / CSV checked against the features computed directly; bad inputs, one
line each."""
import csv
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import osnet_zoo
from osnet_zoo import cli
from osnet_zoo.extract import ENDING as EXTRACT_ENDING, main as extract_main
from osnet_zoo.inference import FeatureExtractor, load_features, map_features
from osnet_zoo.inference.search import IndexOptions, build_index, search_gallery
from osnet_zoo.metrics import pairwise_distance
from osnet_zoo.models.folder import write_model_folder
from osnet_zoo.search import main as search_main

from conftest import REPO, run_module, run_python

pytest.importorskip('faiss', reason='faiss (the search extra) is part of the test extra')


def dense_ranking(q, g, k):
    """evaluate's answer: the cosine distance matrix, each row sorted (ties by gallery order)."""
    d = pairwise_distance(q, g, 'cosine').numpy()
    order = np.argsort(d, axis=1, kind='stable')[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


@pytest.fixture(scope='module')
def features():
    rng = np.random.default_rng(0)
    # unnormalised rows of varied length: the index normalises them as the cosine distance does
    g = rng.standard_normal((500, 48)).astype(np.float32) * rng.uniform(0.2, 5, (500, 1)).astype(np.float32)
    q = rng.standard_normal((25, 48)).astype(np.float32) * 3
    return q, g


@pytest.mark.parametrize('engine', ['numpy', 'faiss'])
def test_exact_index_equals_the_dense_ranking_of_evaluate(features, engine):
    q, g = features
    order, dist = dense_ranking(q, g, 10)
    # chunks of 37 rows: the best k of each query are carried across chunk boundaries
    result = search_gallery(q, g, 10, IndexOptions(engine=engine, chunk_rows=37), log=lambda line: None)
    assert np.array_equal(result.indices, order)
    np.testing.assert_allclose(result.distances, dist, atol=1e-5)
    assert result.index.startswith(f'exact ({engine}')


def test_approximate_indexes_reach_the_exact_answer_with_enough_search(features):
    q, g = features
    order, _ = dense_ranking(q, g, 10)
    ivf = build_index(g, IndexOptions(kind='ivf', nlist=8, nprobe=8), log=lambda line: None)
    assert np.array_equal(np.sort(ivf.search(q, 10).indices, 1), np.sort(order, 1))  # every list probed: exact
    # the knob is read at each search
    ivf.options = IndexOptions(kind='ivf', nlist=8, nprobe=1)
    partial = ivf.search(q, 10)
    assert 'nprobe 1' in partial.index and np.all(np.diff(partial.distances, axis=1) >= 0)
    tiny = build_index(g[:40], IndexOptions(kind='ivf', nlist=8, nprobe=1), log=lambda line: None).search(q, 30)
    short = int((tiny.indices < 0).any(axis=1).sum())  # one list of 40 rows holds fewer than 30 of them
    assert short and tiny.notes == [f'{tiny.index} found fewer than 30 matches for {short} of 25 queries '
                                    '(raise --nprobe)']
    assert np.all(np.isinf(tiny.distances[tiny.indices < 0]))
    defaults = build_index(g, IndexOptions(kind='ivf'), log=lambda line: None)  # sqrt(500) lists, 1/8 searched
    assert defaults.describe() == 'ivf (faiss IndexIVFFlat, nlist 22, nprobe 2)'
    hnsw = search_gallery(q, g, 10, IndexOptions(kind='hnsw', hnsw_m=16, ef_search=400), log=lambda line: None)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hnsw.indices, order)])
    assert recall >= 0.95 and 'efSearch 400' in hnsw.index


def test_without_faiss_the_exact_search_runs_in_numpy_and_the_approximate_one_names_the_extra(features, monkeypatch):
    q, g = features
    monkeypatch.setitem(sys.modules, 'faiss', None)  # as if faiss were not installed: its import fails
    notices = []
    result = search_gallery(q, g, 5, log=notices.append)
    assert np.array_equal(result.indices, dense_ranking(q, g, 5)[0])
    assert len(notices) == 1 and 'faiss is not installed' in notices[0] and 'osnet-zoo[search]' in notices[0]
    with pytest.raises(ImportError, match=r'--index ivf needs faiss.*pip install "osnet-zoo\[search\]"'):
        build_index(g, IndexOptions(kind='ivf'))


def test_topk_above_the_gallery_size_lists_the_whole_gallery(features):
    q, g = features
    result = search_gallery(q[:3], g[:4], 10, log=lambda line: None)
    assert result.indices.shape == (3, 4) and all(sorted(row) == [0, 1, 2, 3] for row in result.indices)
    assert result.notes == ["--topk 10 is more than the gallery's 4 images: every query lists all 4"]


def test_bad_index_options_are_one_line_each(features):
    q, g = features
    with pytest.raises(ValueError, match='--nprobe must be a whole number >= 1, got 0'):
        IndexOptions(kind='ivf', nprobe=0)
    with pytest.raises(ValueError, match="--index 'flat': expected one of exact, ivf, hnsw"):
        IndexOptions(kind='flat')
    with pytest.raises(ValueError, match='--index hnsw is a faiss index; --engine numpy has only the exact search'):
        IndexOptions(kind='hnsw', engine='numpy')
    with pytest.raises(ValueError, match='the queries have 47-d features, the gallery 48-d'):
        search_gallery(q[:, :47], g, 3, log=lambda line: None)


# ----------------------------------------------------------------------------------------------- the command

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """3 people: 3 query and 9 gallery crops of different sizes (a sub-folder too), a training run at 64x32,
    a CSV listing of them, and the gallery's extract features file."""
    root = tmp_path_factory.mktemp('search')
    rng = np.random.default_rng(1)
    base = [rng.integers(0, 256, (64, 32, 3)) for _ in range(3)]  # each person's look, plus noise per image
    rows = ['path,pid,camid,split']
    for split, count, cam in (('query', 3, 0), ('gallery', 9, 1)):
        for i in range(count):
            folder = root / split / ('more' if split == 'gallery' and i % 4 == 3 else '')
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.clip(base[i % 3] + rng.normal(0, 40, (64, 32, 3)), 0, 255).astype(np.uint8)
            image = folder / f'{split}{i:02d}.{"png" if i % 2 else "jpg"}'
            Image.fromarray(pixels).resize((32 + 4 * i, 64 + 8 * i)).save(image)
            rows.append(f'{image.relative_to(root)},person{i % 3},{cam},{split}')
    (root / 'listing.csv').write_text('\n'.join(rows) + '\n')
    torch.manual_seed(0)
    write_model_folder(osnet_zoo.osnet_x0_25(num_classes=0).state_dict(), 'osnet_x0_25', 'test',
                       root / 'run' / 'final', input_size=(64, 32))
    (root / 'empty').mkdir()
    argv = ['--checkpoint', root / 'run', '--device', 'cpu', root / 'gallery', '--output', root / 'gallery.safetensors']
    assert cli.run(lambda: extract_main(list(map(str, argv))), **EXTRACT_ENDING) == 0
    return root


def search(*argv) -> int:
    """The exit status of the command in this process, ended by ``cli.run`` as ``__main__`` ends it."""
    return cli.run(lambda: search_main(list(map(str, argv))))


def common(data, out):
    return ['--checkpoint', data / 'run', '--device', 'cpu', '--batch-size', 4, '--output', out]


def read_outputs(out):
    document = json.loads((out / 'results.json').read_text())
    with open(out / 'results.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    return document, rows


def expected(data, query_paths, gallery_paths, k):
    """The answer computed directly: the run's FeatureExtractor, then evaluate's dense distance matrix."""
    extractor = FeatureExtractor(checkpoint_path=data / 'run', device='cpu')
    order, dist = dense_ranking(extractor(list(query_paths)), extractor(list(gallery_paths)), k)
    return [[gallery_paths[j] for j in row] for row in order], dist


def test_folder_gallery_end_to_end_in_a_subprocess(data, tmp_path):
    out = tmp_path / 'out'
    queries = [str(data / 'query' / 'query00.jpg'), str(data / 'query' / 'query01.png')]
    proc = run_module('osnet_zoo.search', '--query', *queries, '--gallery', data / 'gallery', '--topk', 4,
                      *common(data, out), check=True)
    assert 'model from the run record' in proc.stdout and '2 queries x 9 gallery images, top 4' in proc.stdout
    document, rows = read_outputs(out)
    gallery_paths = sorted(str(p) for p in (data / 'gallery').rglob('*') if p.is_file())
    names, dist = expected(data, queries, gallery_paths, 4)
    assert [r['query'] for r in rows] == [q for q in queries for _ in range(4)]
    assert [int(r['rank']) for r in rows] == [1, 2, 3, 4] * 2
    assert [r['gallery'] for r in rows] == [n for row in names for n in row]
    np.testing.assert_allclose([float(r['distance']) for r in rows], dist.ravel(), atol=1e-5)
    assert {r['gallery_pid'] for r in rows} == {''} and {r['gallery_camid'] for r in rows} == {''}  # not known
    assert document['distance'] == 'cosine' and document['topk'] == 4 and document['gallery_size'] == 9
    assert document['model'] == 'osnet_x0_25' and document['index'] == 'exact (faiss IndexFlatIP)'
    assert [m['gallery'] for q in document['queries'] for m in q['matches']] == [r['gallery'] for r in rows]
    assert document['queries'][0]['pid'] is None
    with Image.open(out / 'ranked.png') as im:  # the picture: 2 rows of a query and 4 matches
        assert im.width >= 5 * 64 and im.height >= 2 * 128


def test_csv_listing_query_and_gallery(data, tmp_path):
    out = tmp_path / 'out'
    assert search('--query', data / 'listing.csv', '--gallery', data / 'listing.csv', '--topk', 9,
                  *common(data, out)) == 0
    document, rows = read_outputs(out)
    listing = list(csv.DictReader(open(data / 'listing.csv')))
    gallery = {str(data / r['path']): r for r in listing if r['split'] == 'gallery'}
    assert len(rows) == 3 * 9 and set(gallery) == {r['gallery'] for r in rows}
    # the listing's people are numbered person0 -> 0, ...: the identity and camera of every match
    assert all(r['gallery_pid'] == gallery[r['gallery']]['pid'][-1] and r['gallery_camid'] == '1' for r in rows)
    assert [q['pid'] for q in document['queries']] == [0, 1, 2]
    queries = [str(data / r['path']) for r in listing if r['split'] == 'query']
    names, dist = expected(data, queries, list(gallery), 9)
    assert [r['gallery'] for r in rows] == [n for row in names for n in row]
    np.testing.assert_allclose([float(r['distance']) for r in rows], dist.ravel(), atol=1e-5)


def test_features_file_gallery_is_memory_mapped_and_gives_the_folder_answer(data, tmp_path, capsys):
    feats, paths, _ = map_features(data / 'gallery.safetensors')
    assert isinstance(feats, np.memmap) and feats.shape == (9, 512)
    loaded, loaded_paths, _ = load_features(data / 'gallery.safetensors')
    assert np.array_equal(np.asarray(feats), loaded.numpy()) and paths == loaded_paths
    by_folder, by_file = tmp_path / 'folder', tmp_path / 'file'
    assert search('--query', data / 'query', '--gallery', data / 'gallery', '--topk', 12, *common(data, by_folder)) == 0
    assert search('--query', data / 'query', '--gallery', data / 'gallery.safetensors', '--topk', 12,
                  *common(data, by_file)) == 0
    assert "--topk 12 is more than the gallery's 9 images: every query lists all 9" in capsys.readouterr().out
    _, folder_rows = read_outputs(by_folder)
    _, file_rows = read_outputs(by_file)
    assert len(file_rows) == 3 * 9 and [int(r['rank']) for r in file_rows[:9]] == list(range(1, 10))
    assert [r['gallery'] for r in file_rows] == [r['gallery'] for r in folder_rows]
    np.testing.assert_allclose([float(r['distance']) for r in file_rows],
                               [float(r['distance']) for r in folder_rows], atol=1e-5)


def test_approximate_index_from_the_command_line(data, tmp_path):
    out = tmp_path / 'out'
    assert search('--query', data / 'query', '--gallery', data / 'gallery.safetensors', '--topk', 3,
                  '--index', 'ivf', '--nlist', 2, '--nprobe', 2, '--figure-queries', 0, *common(data, out)) == 0
    document, rows = read_outputs(out)
    assert document['index'] == 'ivf (faiss IndexIVFFlat, nlist 2, nprobe 2)' and len(rows) == 9
    assert not (out / 'ranked.png').exists()


def fake_features(path, dim, model='osnet_x0_25', checkpoint=''):
    """A features file in extract's format, made here (another size or model than the search's)."""
    meta = {'format': 'osnet_zoo.features/1', 'model': model, 'checkpoint': checkpoint, 'precision': 'fp32',
            'normalized': 'true', 'num_images': '2', 'preprocessing': 'null', 'skipped': '[]',
            'paths': json.dumps(['a.jpg', 'b.jpg'])}
    save_file({'features': torch.randn(2, dim)}, str(path), metadata=meta)
    return path


def test_bad_inputs_are_one_line_each(data, tmp_path, capsys):
    q = ['--query', data / 'query']
    (tmp_path / 'broken').mkdir()
    (tmp_path / 'broken' / 'cut.jpg').write_bytes(b'\xff\xd8\xff\xe0 not a whole jpeg')
    cases = [
        (['--query', tmp_path / 'missing.jpg', '--gallery', data / 'gallery'],
         "is neither a folder, an image file nor a glob pattern that matches"),
        ([*q, '--gallery', data / 'empty'], 'No images found under the folder'),
        ([*q, '--gallery', tmp_path / 'nothing'], 'not a folder, a CSV listing (.csv) or an extract features file'),
        ([*q, '--gallery', fake_features(tmp_path / 'small.safetensors', 16)],
         'holds 16-d features, the model osnet_x0_25 makes 512-d ones'),
        ([*q, '--gallery', fake_features(tmp_path / 'other.safetensors', 512, model='osnet_x1_0')],
         'was extracted with --model osnet_x1_0, this search uses osnet_x0_25'),
        ([*q, '--gallery', fake_features(tmp_path / 'pretrained.safetensors', 512)],
         'was extracted with --checkpoint (none: pretrained or random weights), this search uses'),
        ([*q, '--gallery', data / 'listing.csv', '--topk', 0], '--topk must be >= 1, got 0'),
        ([*q, '--gallery', tmp_path / 'broken'], 'cut.jpg'),
        (['--query', data / 'query', data / 'listing.csv', '--gallery', data / 'gallery'],
         'a CSV listing is the only --query when given'),
        ([*q, '--gallery', data / 'gallery', '--index', 'ivf', '--engine', 'numpy'],
         '--index ivf is a faiss index; --engine numpy has only the exact search'),
    ]
    for argv, message in cases:
        assert search(*argv, *common(data, tmp_path / 'out')) == 1
        err = capsys.readouterr().err
        lines = [line for line in err.strip().splitlines() if '%|' not in line]  # a progress bar's start aside
        assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], (argv, err)
        assert 'Traceback' not in err
    (tmp_path / 'not_features.safetensors').write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": 1}       ')
    assert search(*q, '--gallery', tmp_path / 'not_features.safetensors', *common(data, tmp_path / 'out')) == 1
    assert 'is not an osnet_zoo features file' in capsys.readouterr().err


def test_bench_search_runs_and_reports_recall(tmp_path):
    out = tmp_path / 'bench.json'
    run_python(REPO / 'benchmarks' / 'bench_search.py', '--rows', 3000, '--dim', 32, '--queries', 20,
               '--data', 'clustered', '--nlist', 8, '--nprobe', 1, 8, '--json', out, cwd=REPO, check=True)
    runs = json.loads(out.read_text())['results']['clustered']['runs']
    assert runs['exact_numpy']['searches'][0]['recall_at_k'] == 1.0  # numpy and faiss agree on the exact answer
    assert runs['ivf']['searches'][1]['recall_at_k'] == 1.0  # every list probed
    assert all(r['peak_rss_gb'] > 0 and r['build_s'] >= 0 for r in runs.values())
