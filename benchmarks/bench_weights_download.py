"""First load (download, verify, convert to the cache) vs cached load of pretrained weights, against a local server.

The stand-in server of the tests (tests/weights_server.py, a real HTTP server on 127.0.0.1) serves a random
reference-layout checkpoint as the authors' Hub file of ``osnet_x1_0`` (its default tag, msmt17_combineall) and
as the Drive file of ``osnet_x1_0.market1501`` (trusted on first use); a test manifest records the file's
digest. Interleaved rounds, each with fresh caches: ``timm.create_model(tag, pretrained=True, num_classes=0)``
first (download + checks + conversion), then again (cached: model.safetensors only), and the baseline
``pretrained=False``. Network time is loopback only: real downloads add the transfer time.

    PYTHONPATH=. python benchmarks/bench_weights_download.py --rounds 3
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'tests'))
sys.path.insert(0, str(REPO))

from weights_server import WeightsServer  # noqa: E402  (the tests' stand-in for the Hub and Drive)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rounds', type=int, default=3, help='interleaved rounds (fresh caches each)')
    parser.add_argument('--model', default='osnet_x1_0', help='architecture (default osnet_x1_0)')
    parser.add_argument('--json', type=Path, default=None, help='also write the figures here')
    return parser


def main() -> int:
    args = get_args_parser().parse_args()
    with WeightsServer() as server, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.update(HF_ENDPOINT=server.url, HF_HUB_DISABLE_XET='1', OSNET_ZOO_GDRIVE_URL=server.gdrive_template)
        os.environ.pop('HF_HUB_OFFLINE', None)
        import timm  # after HF_ENDPOINT: huggingface_hub reads it when imported
        import torch
        import osnet_zoo  # noqa: F401
        from osnet_zoo.files import atomic_torch_save
        from osnet_zoo.weights import file_sha256
        from osnet_zoo.weights.manifest import PACKAGED_MANIFEST, load_manifest, write_manifest

        torch.set_num_threads(1)
        manifest = load_manifest(PACKAGED_MANIFEST)
        default = f'{args.model}.{manifest.default_tags[args.model]}'
        drive = f'{args.model}.market1501'
        model = timm.create_model(args.model, num_classes=4101)
        sd = {k: v for k, v in model.state_dict().items()}  # osnet_zoo layout: loads like the reference one
        files = {}
        for name in (default, drive):
            entry = manifest.entry(name)
            rows = entry.num_classes
            path = tmp / 'ref' / entry.upstream['filename']
            atomic_torch_save({**sd, 'classifier.weight': torch.randn(rows, 512), 'classifier.bias': torch.zeros(rows)},
                              path)
            files[name] = path.read_bytes()
            if entry.upstream_file is not None:
                server.hub(entry.upstream_file.repo_id, entry.upstream_file.revision, entry.upstream_file.filename,
                           files[name])
                manifest = manifest.updated(name, {'upstream.sha256': file_sha256(path),
                                                   'upstream.size': path.stat().st_size})
            else:
                server.drive(entry.upstream['gdrive_id'], files[name])
        write_manifest(manifest, tmp / 'm.json')
        os.environ['OSNET_ZOO_MANIFEST'] = str(tmp / 'm.json')

        times = {(n, k): [] for n in (default, drive) for k in ('first', 'cached', 'baseline')}
        for r in range(args.rounds):
            for name in (default, drive):
                os.environ['OSNET_ZOO_CACHE'] = str(tmp / f'oz{r}{name}')
                os.environ['HF_HUB_CACHE'] = str(tmp / f'hf{r}{name}')
                for kind in ('first', 'cached', 'baseline'):
                    t = time.perf_counter()
                    timm.create_model(name, pretrained=kind != 'baseline', num_classes=0,
                                      cache_dir=tmp / f'hf{r}{name}')
                    times[(name, kind)].append(time.perf_counter() - t)
        result = {}
        for name in (default, drive):
            first, cached, base = (statistics.median(times[(name, k)]) for k in ('first', 'cached', 'baseline'))
            result[name] = dict(first_s=first, cached_s=cached, baseline_s=base, first_over_cached=first / cached,
                                source='hub (pinned, sha256)' if name == default else 'gdrive (first use)',
                                file_bytes=len(files[name]))
            print(f'{name:32s} {result[name]["source"]:22s} first {first * 1000:8.1f} ms  '
                  f'cached {cached * 1000:8.1f} ms  pretrained=False {base * 1000:8.1f} ms  '
                  f'first/cached {first / cached:5.2f}x')
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
