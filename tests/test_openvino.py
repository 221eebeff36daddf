"""OpenVINO: `export --format openvino` (an IR folder checked against PyTorch), FeatureExtractor / extract / evaluate
with backend 'openvino', the cached IR, the measured choice of backend='auto' on the CPU, and the errors (openvino
not installed, a broken IR folder). boxmot's own OpenVINO backend reading our export: tests/test_boxmot_openvino.py.
"""
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

import osnet_zoo
from osnet_zoo import FeatureExtractor
from osnet_zoo.data import synthetic_reid
from osnet_zoo.inference import load_features, select_backend
from osnet_zoo.inference.backend_choice import backend_choice_dir
from osnet_zoo.inference.export import export_model
from osnet_zoo.inference.openvino_cache import cached_openvino_model
from osnet_zoo.inference.openvino_runtime import OpenVinoMissingError, OpenVinoModel
from osnet_zoo.integrations.boxmot import BoxmotAppearanceModel
from osnet_zoo.models.embedding import Embedder
from conftest import REPO, run_module, run_python
from test_extractor import trained_looking

SIZE = (3, 64, 32)  # small crops: every export and timing here stays short
FOLDER = 'osnet_x0_25_openvino_model'


@pytest.fixture(scope='module')
def net():
    torch.manual_seed(0)
    model = trained_looking(osnet_zoo.osnet_x0_25(num_classes=0))
    model.pretrained_cfg = {**model.pretrained_cfg, 'input_size': SIZE}
    return model.eval()


@pytest.fixture(scope='module')
def exported(net, tmp_path_factory):
    """(the IR folder written by export_model into a parent folder, its contract)."""
    out = tmp_path_factory.mktemp('openvino_export')
    contract = export_model(net, out, fmt='openvino')
    return out / FOLDER, contract


@pytest.fixture(scope='module')
def crops():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (int(h), int(h * 0.45), 3), dtype=np.uint8) for h in (50, 90, 160, 300, 64)]


def test_export_round_trip_matches_pytorch(net, exported):
    folder, contract = exported
    stem = FOLDER[:-len('_openvino_model')]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ['manifest.json', f'{stem}.xml', f'{stem}.bin', f'{stem}.xml.json', f'{stem}.xml.metadata.json'])
    check = contract['check']
    assert check['passed'] and check['runtime'].startswith('openvino 20') and check['batch_sizes'] == [1, 3]
    assert check['max_abs_diff'] <= check['allowed_abs_diff'] == 1e-4 * max(1.0, check['max_abs_reference'])
    assert contract['format'] == 'openvino' and contract['file'] == FOLDER
    assert contract['input']['shape'] == ['batch', *SIZE] and contract['output']['shape'] == ['batch', 512]
    metadata = json.loads((folder / f'{stem}.xml.metadata.json').read_text())
    assert json.loads((folder / 'manifest.json').read_text()) == metadata  # boxmot given the folder reads this
    assert metadata['format'] == 'openvino' and metadata['input_size'] == [64, 32]
    assert (metadata['model_name'], metadata['model_kwargs']) == ('osnet_x0_25', {'img_size': [64, 32]})
    # the IR, run again here on other batch sizes (dynamic batch), torch and numpy in
    runtime = OpenVinoModel(folder, threads=1)
    assert (runtime.fixed_batch, runtime.input_size, runtime.num_features) == (None, SIZE, 512)
    reference = Embedder(net, normalize=False).eval()
    for n in (1, 5):
        x = torch.randn(n, *SIZE, generator=torch.Generator().manual_seed(n))
        with torch.inference_mode():
            expected = reference(x)
        allowed = 1e-4 * max(1.0, expected.abs().max().item())  # the export's tolerance
        assert expected.abs().max() > 0.01 and (runtime(x) - expected).abs().max() < allowed
        assert np.abs(runtime.run(x.numpy()) - expected.numpy()).max() < allowed
    # the .xml or the .bin name the same IR
    assert OpenVinoModel(folder / f'{stem}.bin', threads=1).path == runtime.path == folder / f'{stem}.xml'


def test_fixed_batch_export_runs_any_batch_in_chunks(net, tmp_path):
    folder = tmp_path / 'fixed_openvino_model'
    contract = export_model(net, folder, fmt='openvino', dynamic_batch=False, batch_size=2)
    assert contract['input']['shape'] == [2, *SIZE] and contract['check']['batch_sizes'] == [2]
    runtime = OpenVinoModel(folder, threads=1)
    x = torch.randn(5, *SIZE, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        expected = Embedder(net, normalize=False).eval()(x)
    assert runtime.fixed_batch == 2 and (runtime(x) - expected).abs().max() < 1e-4 * max(1.0, expected.abs().max())


def test_export_cli_and_its_refusals(tmp_path):
    run = run_module('osnet_zoo.export', '--model', 'osnet_x0_25', '--no-pretrained', '--format', 'openvino',
                     '--output', tmp_path / 'mine_openvino_model', cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f'Wrote {tmp_path / "mine_openvino_model"} (openvino, osnet_x0_25' in run.stdout
    assert 'Check vs PyTorch (openvino ' in run.stdout and ': PASSED' in run.stdout
    assert (tmp_path / 'mine_openvino_model' / 'mine.xml').is_file()
    for args, message in [(['--precision', 'fp16'], '--format openvino writes an fp32 IR'),
                          (['--output', tmp_path / 'model.xml'], 'an OpenVINO export is a folder named'),
                          (['--opset', '3'], '--opset 3 is not supported')]:
        bad = run_module('osnet_zoo.export', '--model', 'osnet_x0_25', '--no-pretrained', '--format', 'openvino',
                         *args, cwd=tmp_path)
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and len(lines) == 1 and message in lines[0], bad.stderr[-2000:]


# Two compiled models released in the order they were made, then a Python signal handler: before the shared Core,
# each model had a Core of its own, OpenVINO's CPU plugin left the main thread on a freed alternate signal stack,
# and the alarm killed the process with SIGSEGV (rc -11, nothing printed).
RELEASED_IN_ORDER = """
import gc, signal, sys, time
import numpy as np
from osnet_zoo.inference.openvino_runtime import OpenVinoModel
first, second = OpenVinoModel(sys.argv[1]), OpenVinoModel(sys.argv[1])
batch = np.zeros((1, *first.input_size), np.float32)
first.run(batch), second.run(batch)
del first; gc.collect()
del second; gc.collect()
signal.signal(signal.SIGALRM, lambda *_: print('alarm handled', flush=True))
signal.setitimer(signal.ITIMER_REAL, 0.05)
time.sleep(1)
print('still running')
"""


def test_models_released_in_any_order_leave_signal_handling_intact(exported):
    proc = run_python('-X', 'faulthandler', '-c', RELEASED_IN_ORDER, exported[0], timeout=300)
    assert proc.returncode == 0, f'exited {proc.returncode}: {proc.stdout[-500:]}{proc.stderr[-1500:]}'
    assert proc.stdout.split() == ['alarm', 'handled', 'still', 'running']


def test_feature_extractor_openvino_equals_torch_and_reuses_the_cached_ir(net, crops):
    eager = FeatureExtractor(net, device='cpu', batch_size=2, backend='torch')
    first = FeatureExtractor(net, device='cpu', batch_size=2, backend='openvino', threads=1)
    assert first.backend == 'openvino' and isinstance(first.model, OpenVinoModel) and 'openvino' in repr(first)
    got, ref = first(crops, normalize=False), eager(crops, normalize=False)
    assert ref.abs().max() > 0.01 and (got - ref).abs().max() < 1e-4 * max(1.0, ref.abs().max())
    assert nn.functional.cosine_similarity(got, ref).min() >= 0.99999
    again = FeatureExtractor(net, device='cpu', batch_size=2, backend='openvino', threads=1)
    assert again.model.cache_hit and again.model.path == first.model.path and torch.equal(again(crops), first(crops))
    # boxmot's trackers get OpenVINO through this package's appearance model (and so its one Core), as they get
    # the other backends: the same features as torch
    frame = np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 60, 200], [100, 30, 190, 230]], dtype=float)
    models = {b: BoxmotAppearanceModel(net, device='cpu', backend=b) for b in ('openvino', 'torch')}
    assert models['openvino'].extractor.backend == 'openvino'
    on_ov, on_torch = (models[b].get_features(boxes, frame) for b in ('openvino', 'torch'))
    assert (on_ov * on_torch).sum(axis=1).min() >= 0.9999


def test_a_damaged_cached_ir_is_exported_again(net, tmp_path, caplog):
    first = cached_openvino_model(net, threads=1, cache=tmp_path)
    weights = first.path.with_suffix('.bin')
    torn = weights.read_bytes()[:1000]
    weights.unlink()  # a new, torn file (OpenVINO maps the old one's weights in `first`: not rewritten in place)
    weights.write_bytes(torn)
    again = cached_openvino_model(net, threads=1, cache=tmp_path)
    assert not again.cache_hit and again.path == first.path
    assert any('is damaged' in r.getMessage() and first.path.parent.name in r.getMessage() for r in caplog.records)
    x = torch.randn(2, *SIZE, generator=torch.Generator().manual_seed(2))
    assert torch.equal(again(x), first(x))
    assert cached_openvino_model(net, threads=1, cache=tmp_path).cache_hit


def test_extract_and_evaluate_with_backend_openvino(net, tmp_path, crops):
    from PIL import Image

    (tmp_path / 'crops').mkdir()
    for i, crop in enumerate(crops):
        Image.fromarray(crop).save(tmp_path / 'crops' / f'c{i}.png')
    save_file(net.state_dict(), str(tmp_path / 'osnet_x0_25.safetensors'))
    common = ['--model', 'osnet_x0_25', '--checkpoint', tmp_path / 'osnet_x0_25.safetensors', '--device', 'cpu']
    outputs = {}
    for backend in ('openvino', 'torch'):
        run = run_module('osnet_zoo.extract', 'crops', *common, '--backend', backend, '--output', f'{backend}.st',
                         cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        outputs[backend] = load_features(tmp_path / f'{backend}.st')[0]
    assert torch.allclose(outputs['openvino'], outputs['torch'], atol=1e-5)
    synthetic_reid(tmp_path / 'data', num_train_ids=2, num_test_ids=6, num_cameras=2, cameras_per_id=(2, 2),
                   images_per_camera=(1, 2), num_distractors=2, num_junk=1)
    results = {}
    for backend in ('openvino', 'torch'):
        run = run_module('osnet_zoo.evaluate', *common, '--dataset', 'synthetic', '--root', tmp_path / 'data',
                         '--output', tmp_path / backend, '--height', '64', '--width', '32', '--workers', '0',
                         '--backend', backend, cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        assert f'device cpu, {backend}' in run.stdout
        results[backend] = json.loads((tmp_path / backend / 'results.json').read_text())['targets']['synthetic']
    assert results['openvino']['cmc'] == pytest.approx(results['torch']['cmc'])
    assert results['openvino']['mAP'] == pytest.approx(results['torch']['mAP'], abs=1e-6)


def test_auto_measures_once_and_keeps_the_choice(net, tmp_path, monkeypatch):
    """backend='auto' on the CPU times onnxruntime and OpenVINO on this machine once (a real timing), records it
    under a key of the machine, model, threads and batch, and later extractors follow the record."""
    monkeypatch.setenv('OSNET_ZOO_CACHE', str(tmp_path / 'cache'))
    first = FeatureExtractor(net, device='cpu', batch_size=4, threads=1)
    records = sorted(backend_choice_dir().glob('*.json'))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    times = record['ms_per_crop']
    assert set(times) == {'onnxruntime', 'openvino'} and min(times.values()) > 0
    assert first.backend == record['backend'] == min(times, key=times.get)
    assert 'timed fastest here at batch 4' in first.plan.reason and str(records[0]) in first.plan.reason
    assert record['key']['threads'] == 1 and record['key']['batch'] == 4 and record['key']['input_size'] == list(SIZE)
    # the next extractor reads the record (no new timing): an edited record decides
    other = 'onnxruntime' if record['backend'] == 'openvino' else 'openvino'
    records[0].write_text(json.dumps({**record, 'backend': other}))
    second = FeatureExtractor(net, device='cpu', batch_size=4, threads=1)
    assert second.backend == other and sorted(backend_choice_dir().glob('*.json')) == records
    assert json.loads(records[0].read_text())['measured'] == record['measured']
    # another thread count is another measurement
    FeatureExtractor(net, device='cpu', batch_size=4, threads=2)
    assert len(list(backend_choice_dir().glob('*.json'))) == 2
    # and either runtime gives the eager features
    eager = FeatureExtractor(net, device='cpu', batch_size=4, backend='torch')
    x = [np.full((64, 32, 3), 40 * i, np.uint8) for i in range(3)]
    assert (first(x) - eager(x)).abs().max() < 1e-5 and (second(x) - eager(x)).abs().max() < 1e-5  # normalised


def test_without_openvino(monkeypatch, caplog, net, tmp_path):
    monkeypatch.setitem(sys.modules, 'openvino', None)  # as if not installed: importlib finds no openvino
    with pytest.raises(ValueError, match=r'openvino package, which is not installed: pip install "osnet-zoo\[open'):
        select_backend('openvino')
    with pytest.raises(OpenVinoMissingError, match=r'--format openvino needs the openvino package'):
        export_model(net, tmp_path, fmt='openvino')
    # auto: today's choice, without a word
    plan = select_backend('auto')
    assert (plan.backend, plan.candidates) == ('onnxruntime', ()) and not caplog.records
    # the session's cache is shared: other tests of this worker may have recorded choices; none may be added here
    def choices():
        return set(backend_choice_dir().glob('*.json')) if backend_choice_dir().exists() else set()
    recorded = choices()
    extractor = FeatureExtractor(net, device='cpu', batch_size=2, threads=1)
    assert extractor.backend == 'onnxruntime' and not caplog.records
    assert choices() == recorded
    # the command line: one line naming the extra
    code = ("import runpy, sys; sys.modules['openvino'] = None; sys.argv = ['export', '--model', 'osnet_x0_25', "
            "'--no-pretrained', '--format', 'openvino']; runpy.run_module('osnet_zoo.export', run_name='__main__')")
    run = run_python('-c', code, cwd=tmp_path)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and 'osnet-zoo[openvino]' in lines[0], run.stderr[-2000:]


def test_a_broken_ir_folder_is_one_clear_error(exported, tmp_path):
    folder, _ = exported
    xml = next(folder.glob('*.xml'))
    empty = tmp_path / 'empty_openvino_model'
    empty.mkdir()
    with pytest.raises(ValueError, match=r'empty_openvino_model: holds 0 \.xml files \(none\); expected an OpenVINO'):
        OpenVinoModel(empty)
    no_weights = tmp_path / 'no_weights_openvino_model'
    no_weights.mkdir()
    (no_weights / 'm.xml').write_bytes(xml.read_bytes())
    with pytest.raises(ValueError, match=r'no_weights_openvino_model: m\.bin missing; expected an OpenVINO IR'):
        OpenVinoModel(no_weights)
    torn = tmp_path / 'torn_openvino_model'
    torn.mkdir()
    (torn / 'm.xml').write_bytes(xml.read_bytes()[:5000])
    (torn / 'm.bin').write_bytes(xml.with_suffix('.bin').read_bytes())
    with pytest.raises(ValueError, match=r'm\.xml: OpenVINO cannot load this IR \(') as error:
        OpenVinoModel(torn)
    assert '\n' not in str(error.value)
    with pytest.raises(ValueError, match='not found or not an IR'):
        OpenVinoModel(tmp_path / 'missing.onnx')


def test_bench_deploy_runs_and_writes_its_table(tmp_path):
    """benchmarks/bench_deploy.py (tiny settings; no timing asserted: figures live in benchmarks/RESULTS.md)."""
    out = tmp_path / 'deploy.json'
    run_python(REPO / 'benchmarks' / 'bench_deploy.py', '--models', 'osnet_x0_25', '--batch-sizes', '1,3',
               '--height', 64, '--width', 32, '--rounds', 1, '--iters', 1, '--warmup', 1, '--threads', 1,
               '--json', out, cwd=REPO, check=True)
    result = json.loads(out.read_text())
    rows = result['rows']
    engines = ('onnxruntime_fp32', 'openvino_fp32', 'auto', 'int8_onnx', 'int8_openvino')
    assert [(r['batch'], r['engine']) for r in rows] == [(b, e) for b in (1, 3) for e in engines]
    assert result['baseline'] == 'onnxruntime_fp32'
    assert all(r['ms_per_crop'] > 0 and r['ratio_to_fastest'] >= 1.0 for r in rows)
    # fp32 engines equal PyTorch; the INT8 ones (calibrated on synthetic crops) only approximate it
    assert all(r['min_cosine_vs_torch'] > (0.9 if r['engine'].startswith('int8') else 0.9999) for r in rows)
    assert {r['runtime'] for r in rows if r['engine'].startswith('int8')} == {'QuantizedModel'}
    assert {r['runtime'] for r in rows if r['engine'] == 'openvino_fp32'} == {'OpenVinoModel'}
    assert {r['runtime'] for r in rows if r['engine'] == 'auto'} <= {'OpenVinoModel', 'OnnxRuntimeModel'}
