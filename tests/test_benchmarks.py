"""The benchmark scripts still run and write well-formed results (tiny settings; no timing is asserted —
figures live in benchmarks/RESULTS.md). Each runs as a real subprocess from the checkout, as documented."""
import json

from conftest import REPO, run_python


def _bench(script, *args):
    return run_python(REPO / 'benchmarks' / script, *args, cwd=REPO, check=True)


def test_bench_loader(tmp_path):
    out = tmp_path / 'loader.json'
    _bench('bench_loader.py', '--workers', 1, '--epochs', 2, '--batch-size', 8, '--size', 64, 32,
           '--num-train-ids', 6, '--per-worker', '--eval', '--root', tmp_path / 'data', '--json', out)
    res = json.loads(out.read_text())
    assert len(res['variants']) == 6 and all(min(v['epoch_rates']) > 0 for v in res['variants'].values())
    assert res['ratio_later_epochs'] > 0 and res['eval_ratio'] > 0
    assert set(res['main_process_us_per_sample']) == {'baseline', 'ours', 'ours_unseeded'}


def test_bench_inference(tmp_path):
    out = tmp_path / 'inference.json'
    _bench('bench_inference.py', '--models', 'osnet_x0_25', '--batch-sizes', '1,3',
           '--variants', 'eager,ours_fold,ours,ours_auto,onnxruntime', '--threads', 1, '--rounds', 1, '--iters', 1,
           '--warmup', 1, '--json', out)
    rows = json.loads(out.read_text())['rows']
    assert len(rows) == 10 and all(r['status'] == 'ok' for r in rows), rows
    assert all(r['max_rel_err'] < 1e-4 for r in rows)  # every path computes the plain model's features


def test_bench_extractor(tmp_path):
    out = tmp_path / 'extractor.json'
    _bench('bench_extractor.py', '--models', 'osnet_x0_25', '--crops', '1,3', '--rounds', 1, '--iters', 1,
           '--threads', 1, '--variants', 'baseline,extractor,onnxruntime,default', '--json', out)
    rows = json.loads(out.read_text())['rows']
    assert [(r['crops'], r['variant']) for r in rows] == [(n, v) for n in (1, 3)
                                                          for v in ('baseline', 'extractor', 'onnxruntime', 'default')]
    assert all(r['min_cosine_vs_first'] > 0.999 and r['frame_ms_median'] > 0 for r in rows)
    default = [r for r in rows if r['variant'] == 'default']
    assert all(r['backend'] in ('onnxruntime', 'openvino') and r['min_cosine_vs_eager'] >= 0.99999 for r in default)
    assert all(r['ratio_to_fastest'] >= 1.0 for r in rows if r['variant'] != 'baseline')


def test_bench_train(tmp_path):
    _bench('bench_train.py', '--device', 'cpu', '--model', 'osnet_x0_25', '--batch-size', 2, '--steps', 1,
           '--warmup', 1, '--variants', 'eager_fp32', 'cl_fp32', '--out', tmp_path)
    rows = json.loads(next(tmp_path.glob('*.json')).read_text())['rows']
    assert [r['variant'] for r in rows] == ['eager_fp32', 'cl_fp32'] and all(r['img_per_s'] > 0 for r in rows)


def test_bench_eval(tmp_path):
    out = tmp_path / 'eval.json'
    _bench('bench_eval.py', '--scale', 0.002, '--json', out)
    res = json.loads(out.read_text())
    assert res['rank_identical'] is True  # ours and the argsort baseline give the same CMC / mAP
    assert res['ours_rank']['metrics'] == res['baseline_rank']['metrics']


def test_bench_nas_memory(tmp_path):
    out = tmp_path / 'nas_memory.json'
    _bench('bench_nas_memory.py', '--batch-size', 4, '--width', 0.25, '--height', 64, '--img-width', 32,
           '--classes', 5, '--json', out)
    res = json.loads(out.read_text())
    assert [(r['model'], r['batch']) for r in res['rows']] == [
        (m, 4) for m in ('osnet', 'supernet_all', 'supernet_sampled')]
    params = {r['model']: r['params'] for r in res['rows']}
    assert params['supernet_all'] == params['supernet_sampled'] > 2 * params['osnet']  # four blocks per position
    assert all(r['step_peak_mib'] > 0 for r in res['rows']) and res['summary']['4']['osnet']['ratio_vs_osnet'] == 1


def test_bench_weights_download(tmp_path):
    out = tmp_path / 'weights.json'
    _bench('bench_weights_download.py', '--rounds', 1, '--model', 'osnet_x0_25', '--json', out)
    res = json.loads(out.read_text())
    assert set(res) == {'osnet_x0_25.msmt17_combineall', 'osnet_x0_25.market1501'}
    assert all(r['first_s'] > 0 and r['cached_s'] > 0 and r['baseline_s'] > 0 for r in res.values())


def test_resize_boxmot(tmp_path):
    import timm
    from osnet_zoo.train.final import save_model_folder

    run = tmp_path / 'run'
    save_model_folder(timm.create_model('osnet_x0_25', num_classes=0), 'osnet_x0_25', run / 'final', (128, 64),
                      (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    out = tmp_path / 'resize.json'
    _bench('resize_boxmot.py', run, '--root', tmp_path / 'data', '--scales', 1, 2, '--num-test-ids', 4,
           '--num-train-ids', 2, '--output', out)
    rows = json.loads(out.read_text())
    assert [r['render'] for r in rows] == ['128x64', '256x128']
    assert rows[0]['antialias'] == rows[0]['cv2']  # renders at the 128x64 input: nothing is resized
    # an untrained model on 4 identities may rank no true match first (Rank-1 0); every query has a match (mAP > 0)
    assert all(0 <= r[k]['rank1'] <= 1 and 0 < r[k]['mAP'] <= 1 for r in rows for k in ('antialias', 'cv2'))
    assert all(r.get('cv2_vs_opencv_min_cosine', 1.0) > 0.9999 for r in rows)  # with OpenCV installed


def test_bench_main_job_range(tmp_path):
    out = tmp_path / 'range.json'
    _bench('bench_main_job_range.py', '--seeds', 1, 2, '--threads', 1, '--work', tmp_path / 'work', '--json', out,
           '--', '--epochs', 1, '--max-steps-per-epoch', 1, '--height', 32, '--width', 16)
    res = json.loads(out.read_text())
    assert [(r['seed'], r['threads']) for r in res['rows']] == [(1, 1), (2, 1)]
    rank1 = sorted(r['rank1'] for r in res['rows'])
    assert res['all']['rank1'] == dict(min=rank1[0], median=sum(rank1) / 2, max=rank1[1])
    assert res['per_threads']['1']['runs'] == 2 and 0 < res['chance_rank1'] < 100
    # a finished run is read back, not trained again
    stamp = (tmp_path / 'work' / 'runs' / 'seed1_threads1' / 'results.json').stat().st_mtime_ns
    _bench('bench_main_job_range.py', '--seeds', 1, '--threads', 1, '--work', tmp_path / 'work', '--',
           '--epochs', 1, '--max-steps-per-epoch', 1, '--height', 32, '--width', 16)
    assert (tmp_path / 'work' / 'runs' / 'seed1_threads1' / 'results.json').stat().st_mtime_ns == stamp
