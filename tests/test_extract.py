"""`python -m osnet_zoo.extract`: features + paths of a folder, resumable, checked against the extractor."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import osnet_zoo
from osnet_zoo.extract import find_images, load_features, main
from conftest import run_module


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """8 crops of different sizes in a folder with a sub-folder, a non-image file, and a checkpoint."""
    root = tmp_path_factory.mktemp('extract')
    images = root / 'crops'
    (images / 'cam2').mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        folder = images / 'cam2' if i % 3 == 0 else images
        pixels = rng.integers(0, 256, (60 + 7 * i, 30 + 3 * i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f'p{i:02d}.{"png" if i % 2 else "jpg"}')
    (images / 'notes.txt').write_text('not an image')
    torch.manual_seed(0)
    model = osnet_zoo.osnet_x0_25(num_classes=0).eval()
    from safetensors.torch import save_file
    save_file(model.state_dict(), str(root / 'osnet_x0_25.safetensors'))
    return root


def test_interrupted_run_resumes_to_the_uninterrupted_result(data, monkeypatch, capsys):
    common = ['--model', 'osnet_x0_25', '--checkpoint', data / 'osnet_x0_25.safetensors', '--device', 'cpu',
              '--batch-size', '2', '--shard-size', '3', 'crops']
    monkeypatch.chdir(data)
    assert main([*map(str, common), '--output', 'full.safetensors']) == 0  # uninterrupted, in this process
    assert 'Wrote full.safetensors: 8 x 512' in capsys.readouterr().out

    # stop after one shard, twice: the second run must add the next shard, not redo the first
    for expected_shards in (1, 2):
        part = run_module('osnet_zoo.extract', *common, '--output', 'resumed.safetensors', '--max-shards', '1',
                          cwd=data)
        assert part.returncode == 3, part.stderr
        assert 'rerun the same command' in part.stdout
        shards = sorted((data / 'resumed.safetensors.parts').glob('shard_*.safetensors'))
        assert len(shards) == expected_shards
    assert not (data / 'resumed.safetensors').exists()
    # a writer killed mid-shard leaves only a temp file, which the resumed run ignores
    (data / 'resumed.safetensors.parts' / '.shard_000002.safetensors.tmp99999').write_bytes(b'partial')
    done = run_module('osnet_zoo.extract', *common, '--output', 'resumed.safetensors', cwd=data)
    assert done.returncode == 0, done.stderr
    assert not (data / 'resumed.safetensors.parts').exists()

    feats_full, paths_full, meta = load_features(data / 'full.safetensors')
    feats_resumed, paths_resumed, _ = load_features(data / 'resumed.safetensors')
    # paths as found from the working directory: sorted, sub-folders included, the .txt file left out
    assert paths_resumed == paths_full == [os.path.relpath(p, data) for p in find_images([str(data / 'crops')])]
    assert len(paths_full) == 8 and paths_full[0] == os.path.join('crops', 'cam2', 'p00.jpg')
    assert torch.allclose(feats_resumed, feats_full, atol=1e-6)
    assert meta['model'] == 'osnet_x0_25' and meta['normalized'] is True
    assert meta['preprocessing']['input_size'] == [3, 256, 128]

    # the rows are the extractor's features of those files, in that order
    extractor = osnet_zoo.FeatureExtractor('osnet_x0_25', checkpoint_path=data / 'osnet_x0_25.safetensors',
                                           device='cpu')
    expected = extractor([data / p for p in paths_full])
    assert torch.allclose(feats_full, expected, atol=1e-5)

    # a complete output is not recomputed
    assert main([*map(str, common), '--output', 'full.safetensors']) == 0
    assert 'already exists' in capsys.readouterr().out


def test_glob_bad_images_and_mismatched_resume(data, tmp_path, capsys):
    ckpt = str(data / 'osnet_x0_25.safetensors')
    pattern = str(data / 'crops' / '**' / '*.png')
    out = tmp_path / 'png.safetensors'
    assert main(['--model', 'osnet_x0_25', '--checkpoint', ckpt, '--device', 'cpu', pattern, '--output', str(out)]) == 0
    feats, paths, _ = load_features(out)
    assert feats.shape == (4, 512) and all(p.endswith('.png') for p in paths)

    bad_dir = tmp_path / 'with_bad'
    bad_dir.mkdir()
    for p in sorted((data / 'crops').rglob('*.jpg'))[:3]:
        (bad_dir / p.name).write_bytes(p.read_bytes())
    (bad_dir / 'p99_truncated.jpg').write_bytes((data / 'crops' / 'p02.jpg').read_bytes()[:100])
    args = ['--model', 'osnet_x0_25', '--checkpoint', ckpt, '--device', 'cpu', '--shard-size', '2', str(bad_dir)]
    out_bad = tmp_path / 'bad.safetensors'
    # without --skip-bad: an error naming the file; the shard before it is kept for the rerun
    assert main([*args, '--output', str(out_bad)]) == 2
    assert 'p99_truncated.jpg' in capsys.readouterr().err
    assert len(list((tmp_path / 'bad.safetensors.parts').glob('shard_*'))) == 1
    # a rerun that differs only in --skip-bad keeps the finished shard
    assert main([*args, '--skip-bad', '--output', str(out_bad)]) == 0
    assert 'Reusing 1 finished shard' in capsys.readouterr().out
    # other settings: refused, naming the folder
    (tmp_path / 'bad.safetensors.parts').mkdir()
    (tmp_path / 'bad.safetensors.parts' / 'run.json').write_text('{"key": "other", "model": "osnet_x1_0"}')
    assert main([*args, '--output', str(out_bad), '--overwrite']) == 2
    assert 'partial run' in capsys.readouterr().err
    out_skip = tmp_path / 'skip.safetensors'
    assert main([*args, '--skip-bad', '--output', str(out_skip)]) == 0
    feats, paths, meta = load_features(out_skip)
    assert feats.shape == (3, 512) and len(paths) == 3
    assert [Path(p).name for p in meta['skipped']] == ['p99_truncated.jpg']

    assert main(['--model', 'osnet_x0_25', str(tmp_path / 'nowhere'), '--output', str(tmp_path / 'x.safetensors')]) == 2
    assert 'nowhere' in capsys.readouterr().err


def test_help_explains_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['--help'])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert 'usage: python -m osnet_zoo.extract' in out and 'IMAGES_DIR_OR_GLOB' in out and 'resume' in out
