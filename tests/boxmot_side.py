"""boxmot's side of tests/test_boxmot.py, run in a child process of the test's own interpreter; it imports no
osnet_zoo (RESULT.json records that), so boxmot sees only the files.

    python tests/boxmot_side.py REQUEST.json RESULT.json

For each file of the request it loads the file through boxmot's own ``ReID`` class (the backend boxmot picks
by suffix, its metadata and checkpoint readers), runs the given crops (RGB uint8, already at the model's input
size) through it, then runs BotSort, StrongSort and DeepOcSort with ``reid_weights`` = the file on the given
frames (BGR uint8) and detections (unless the entry says ``"trackers": false``). The files under
``"refused"`` are only loaded, and the error boxmot raises is recorded. Features go to .npy files beside RESULT.json; the rest into RESULT.json.
"""
import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

TRACKERS = ('BotSort', 'StrongSort', 'DeepOcSort')


def _load_report(backend):
    report = getattr(getattr(backend, 'model', None), 'checkpoint_load_report', None)
    if report is None:
        return None
    return {'matched': len(report.matched_keys), 'missing': list(report.missing_keys),
            'unexpected': list(report.unexpected_keys), 'mismatched': list(report.mismatched_keys),
            'classifier_loaded': 'classifier.weight' in report.matched_keys, 'numel_coverage': report.numel_coverage}


def _run_trackers(path: Path, frames: np.ndarray, detections: np.ndarray, out: Path, stem: str) -> dict:
    import boxmot

    results = {}
    for name in TRACKERS:
        tracker = getattr(boxmot, name)(reid_weights=path, device='cpu', half=False)
        per_frame = []
        for frame, dets in zip(frames, detections):
            tracks = tracker.update(dets.astype(np.float32), frame)
            # rows: x1, y1, x2, y2, id, conf, cls, det_index
            per_frame.append({'ids': [int(i) for i in tracks[:, 4]], 'boxes': tracks[:, :4].round(2).tolist()})
        backend = tracker._get_live_reid_model()  # the backend the tracker built from reid_weights
        features = backend.get_features(detections[-1][:, :4], frames[-1])
        np.save(out / f'{stem}.{name}.npy', np.asarray(features, dtype=np.float32))
        results[name] = {'frames': per_frame, 'backend': type(backend).__name__,
                         'backend_weights': str(backend.weights), 'input_shape': list(backend.input_shape),
                         'embedding_width': tracker.last_emb_size}
    return results


def main(request_path: str, result_path: str) -> None:
    import boxmot
    import onnxruntime
    from boxmot.reid.core import ReID

    request = json.loads(Path(request_path).read_text())
    out = Path(result_path).parent
    result = {'boxmot': boxmot.__version__, 'onnxruntime_before': version('onnxruntime'), 'files': {}}
    for entry in request['files']:
        path = Path(entry['path'])
        stem = path.name
        reid = ReID(weights=path, device='cpu', half=False)
        crops = np.load(entry['crops'])  # (N, H, W, 3) RGB
        features = reid([np.ascontiguousarray(c[..., ::-1]) for c in crops])  # boxmot takes BGR crops
        np.save(out / f'{stem}.reid.npy', np.asarray(features, dtype=np.float32))
        scene = np.load(entry['frames'])
        result['files'][stem] = {
            'format': reid.format.id, 'backend': type(reid.model).__name__,
            'model_name': reid.model.model_name, 'input_shape': list(reid.model.input_shape),
            'load_report': _load_report(reid.model),
            'trackers': _run_trackers(path, scene['frames'], scene['detections'], out, stem)
            if entry.get('trackers', True) else None,
        }
    result['refused'] = {}
    for path in request.get('refused', []):
        try:
            ReID(weights=Path(path), device='cpu', half=False)
            result['refused'][Path(path).name] = None
        except Exception as e:  # what boxmot says about a file it does not take
            result['refused'][Path(path).name] = f'{type(e).__name__}: {e}'
    result['onnxruntime_after'] = version('onnxruntime')
    result['onnxruntime_imported'] = onnxruntime.__version__
    result['osnet_zoo_imported'] = any(name.split('.')[0] == 'osnet_zoo' for name in sys.modules)
    Path(result_path).write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
    main(*sys.argv[1:])
