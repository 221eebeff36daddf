"""Dataset readers on real on-disk layouts (written by the tests), image reading, transforms, sampling."""
import collections
import random

import numpy as np
import pytest
import torch
from PIL import Image

from osnet_zoo.data import (
    DatasetLayoutError, ImageDataset, ImageReadError, RandomIdentitySampler, RandomPatch, ReIDDataset, ReIDItem,
    build_dataset, build_test_transform, build_train_transform, cuhk03, dukemtmcreid, market1501, msmt17,
    normalize_batch, read_image, read_image_tensor, sample_seed, seeded_rng, verify_images,
)


def _jpg(path, colour=(120, 60, 30), size=(64, 128), mode='RGB'):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode == 'RGB' else colour[0]).save(path)
    return path


def _market_tree(base, train=(), query=(), gallery=()):
    for split, names in (('bounding_box_train', train), ('query', query), ('bounding_box_test', gallery)):
        (base / split).mkdir(parents=True, exist_ok=True)
        for n in names:
            _jpg(base / split / n)
    (base / 'bounding_box_test' / 'Thumbs.db').write_bytes(b'not an image')  # real Market1501 has these
    return base


MARKET = dict(train=['0002_c1s1_000451_03.jpg', '0002_c2s1_000551_01.jpg', '0007_c3s3_077419_03.jpg'],
              query=['0001_c1s1_001051_00.jpg', '0003_c6s2_000151_00.jpg'],
              gallery=['0001_c2s1_000301_01.jpg', '0000_c1s1_000151_01.jpg', '-1_c1s1_000401_03.jpg',
                       '0003_c5s1_000101_02.jpg'])


@pytest.mark.parametrize('layout', ['Market-1501-v15.09.15', 'market1501/Market-1501-v15.09.15', 'market1501', ''])
def test_market1501_layouts(tmp_path, layout):
    _market_tree(tmp_path / layout if layout else tmp_path, **MARKET)
    ds = market1501(tmp_path)
    assert sorted(it.pid for it in ds.train) == [0, 0, 1]  # relabelled 0..N-1
    assert ds.num_train_pids == 2 and ds.num_train_cams == 3
    g = {(it.pid, it.camid) for it in ds.gallery}
    assert g == {(1, 1), (0, 0), (3, 4)}  # pid 0 kept (distractor), pid -1 dropped, camid = C - 1
    assert {(it.pid, it.camid) for it in ds.query} == {(1, 0), (3, 5)}
    assert all(it.dsetid == 0 and it.path.endswith('.jpg') for it in ds.train + ds.query + ds.gallery)


def test_missing_and_incomplete_roots_show_the_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match='does not exist') as e:
        market1501(tmp_path / 'nowhere')
    assert 'bounding_box_train/' in str(e.value)
    base = tmp_path / 'Market-1501-v15.09.15'
    _market_tree(base, **MARKET)
    for f in (base / 'query').iterdir():
        f.unlink()
    (base / 'query').rmdir()
    with pytest.raises(DatasetLayoutError, match='missing query') as e:
        market1501(tmp_path)
    assert 'Expected layout' in str(e.value)


def test_bad_file_name_and_camera_are_named(tmp_path):
    base = _market_tree(tmp_path, **MARKET)
    _jpg(base / 'query' / 'holiday.jpg')
    with pytest.raises(DatasetLayoutError, match='holiday.jpg'):
        market1501(tmp_path)
    (base / 'query' / 'holiday.jpg').unlink()
    _jpg(base / 'query' / '0004_c9s1_000001_00.jpg')
    with pytest.raises(DatasetLayoutError, match='camera 9 outside 1..6'):
        market1501(tmp_path)


def test_dukemtmcreid(tmp_path):
    _market_tree(tmp_path / 'DukeMTMC-reID', train=['0001_c2_f0046182.jpg', '0004_c8_f0000001.jpg'],
                 query=['0005_c2_f0046985.jpg'], gallery=['0005_c1_f0044158.jpg', '0000_c3_f0000002.jpg'])
    ds = dukemtmcreid(tmp_path)
    assert [(it.pid, it.camid) for it in ds.train] == [(0, 1), (1, 7)]
    assert [(it.pid, it.camid) for it in ds.query] == [(5, 1)]


@pytest.mark.parametrize('version,dirs', [('MSMT17_V1', ('train', 'test')),
                                          ('MSMT17_V2', ('mask_train_v2', 'mask_test_v2'))])
def test_msmt17(tmp_path, version, dirs):
    base = tmp_path / 'msmt17' / version
    lists = {
        'list_train.txt': [(dirs[0], '0000/0000_000_01_0303morning_0015_0.jpg', 0),
                           (dirs[0], '0001/0001_001_07_0303noon_0100_1.jpg', 1)],
        'list_val.txt': [(dirs[0], '0001/0001_002_15_0303noon_0101_0.jpg', 1)],
        'list_query.txt': [(dirs[1], '0000/0000_000_03_0303morning_0008_0.jpg', 0)],
        'list_gallery.txt': [(dirs[1], '0000/0000_001_12_0303morning_0009_0.jpg', 0),
                             (dirs[1], '0002/0002_000_03_0303morning_0010_0.jpg', 2)],
    }
    for name, rows in lists.items():
        for d, rel, _ in rows:
            _jpg(base / d / rel)
        (base / name).write_text(''.join(f'{rel} {pid}\n' for _, rel, pid in rows))
    ds = msmt17(tmp_path)
    assert [(it.pid, it.camid) for it in ds.train] == [(0, 0), (1, 6)]  # camera = 3rd name field - 1
    assert [(it.pid, it.camid) for it in ds.gallery] == [(0, 11), (2, 2)]
    both = ds.combineall()
    assert len(both.train) == 3 + 3  # train + val, then query/gallery identities 0 and 2 as new labels
    assert sorted({it.pid for it in both.train}) == [0, 1, 2, 3]
    (base / 'list_query.txt').write_text('0000/missing_000_03_x.jpg 0\n')
    with pytest.raises(DatasetLayoutError, match='missing_000_03_x.jpg'):
        msmt17(tmp_path, version=version)


def _write_cuhk03(root, with_labeled=True):
    """A miniature cuhk-03.mat (MATLAB v7.3 = HDF5 with object references) and new-protocol config .mat files."""
    h5py = pytest.importorskip('h5py', reason='optional package h5py not installed: the CUHK03 tests are skipped')
    scipy_io = pytest.importorskip('scipy.io',
                                   reason='optional package scipy not installed: the CUHK03 tests are skipped')
    base = root / 'cuhk03'
    (base / 'cuhk03_release').mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {}  # file name -> HxWx3 array
    with h5py.File(base / 'cuhk03_release' / 'cuhk-03.mat', 'w') as f:
        refs_group = f.create_group('#refs#')
        for kind in ('detected', 'labeled'):
            pairs = f.create_dataset(kind, (1, 2), dtype=h5py.ref_dtype)
            for pair in range(2):
                num_ids = 3
                cells = refs_group.create_dataset(f'{kind}{pair}', (10, num_ids), dtype=h5py.ref_dtype)
                for pid in range(num_ids):
                    for img_no in range(10):
                        name = f'{kind}_{pair}_{pid}_{img_no}'
                        if img_no in (4, 9) and pid == 1:  # an identity with empty cells
                            empty = refs_group.create_dataset(name, data=np.zeros(2, np.uint64))
                            empty.attrs['MATLAB_empty'] = 1
                            cells[img_no, pid] = empty.ref
                            continue
                        h, w = 20 + img_no, 10 + pid
                        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
                        ds = refs_group.create_dataset(name, data=img.transpose(2, 1, 0))  # MATLAB column-major
                        cells[img_no, pid] = ds.ref
                        view = 1 if img_no < 5 else 2
                        images[(kind, f'{pair + 1}_{pid + 1:03d}_{view}_{img_no + 1:02d}.png')] = img
                pairs[0, pair] = cells.ref
    for kind in ('detected', 'labeled') if with_labeled else ('detected',):
        names = sorted(n for k, n in images if k == kind)
        labels = [int(n.split('_')[0]) * 100 + int(n.split('_')[1]) for n in names]  # ids unique across pairs
        train = [i + 1 for i, n in enumerate(names) if n.startswith('1_')]
        test = [i for i, n in enumerate(names) if n.startswith('2_')]
        query = [i + 1 for i in test if names[i].split('_')[2] == '1' and names[i].endswith(('_01.png', '_02.png'))]
        gallery = [i + 1 for i in test if i + 1 not in query]
        filelist = np.empty((len(names), 1), dtype=object)
        for i, n in enumerate(names):
            filelist[i, 0] = n
        scipy_io.savemat(str(base / f'cuhk03_new_protocol_config_{kind}.mat'), {
            'filelist': filelist, 'labels': np.array(labels, float)[:, None],
            'camId': np.array([int(n.split('_')[2]) for n in names], float)[:, None],
            'train_idx': np.array(train, float)[:, None], 'query_idx': np.array(query, float)[:, None],
            'gallery_idx': np.array(gallery, float)[:, None]})
    return base, images


def test_cuhk03_new_protocol_from_mat_files(tmp_path):
    base, images = _write_cuhk03(tmp_path)
    ds = cuhk03(tmp_path)
    assert ds.name == 'cuhk03_detected'
    assert len(ds.train) == 3 * 10 - 2 and ds.num_train_pids == 3  # pair 1; two empty cells skipped
    assert {it.camid for it in ds.query + ds.gallery} == {0, 1}  # the view
    assert {it.pid for it in ds.query} <= {it.pid for it in ds.gallery}
    some = ds.gallery[0]
    name = some.path.rsplit('/', 1)[1]
    np.testing.assert_array_equal(np.asarray(Image.open(some.path)), images[('detected', name)])  # exact pixels
    labeled = build_dataset('cuhk03_labeled', tmp_path)
    assert labeled.name == 'cuhk03_labeled' and '/images_labeled/' in labeled.train[0].path
    # resumable extraction: a lost image and no completion marker -> extracted again on the next use
    (base / 'images_detected' / '.complete').unlink()
    lost = base / 'images_detected' / name
    lost.unlink()
    cuhk03(tmp_path)
    assert lost.exists() and (base / 'images_detected' / '.complete').exists()


def test_cuhk03_missing_config_shows_layout(tmp_path):
    _write_cuhk03(tmp_path, with_labeled=False)
    with pytest.raises(DatasetLayoutError, match='cuhk03_new_protocol_config_labeled.mat'):
        cuhk03(tmp_path, labeled=True)


def test_combineall_and_multi_source(tmp_path):
    _market_tree(tmp_path / 'Market-1501-v15.09.15', **MARKET)
    _market_tree(tmp_path / 'DukeMTMC-reID', train=['0001_c2_f0046182.jpg', '0004_c8_f0000001.jpg'],
                 query=['0005_c2_f0046985.jpg'], gallery=['0005_c1_f0044158.jpg'])
    market = market1501(tmp_path)
    allm = market.combineall()
    # query/gallery ids 1 and 3 join after training ids 0, 1; distractor 0 stays out
    assert sorted({it.pid for it in allm.train}) == [0, 1, 2, 3]
    assert len(allm.train) == 3 + 2 + 2
    both = build_dataset(['market1501', 'dukemtmcreid'], tmp_path)
    assert [it.dsetid for it in both.train] == [0, 0, 0, 1, 1]
    assert [it.pid for it in both.train] == [0, 0, 1, 2, 3]  # Duke's ids follow Market's
    assert len({it.camid for it in both.train}) == 5  # cameras kept apart per source
    assert both.query == market.query
    with pytest.raises(KeyError, match='unknown dataset'):
        build_dataset('ilidsvid', tmp_path)


def test_read_image_converts_and_names_bad_files(tmp_path):
    gray = _jpg(tmp_path / 'g.png', (90,), mode='L')
    rgba = tmp_path / 'a.png'
    Image.new('RGBA', (8, 16), (10, 20, 30, 40)).save(rgba)
    assert read_image(gray).mode == 'RGB' and read_image(rgba).getpixel((0, 0)) == (10, 20, 30)
    good = _jpg(tmp_path / 'good.jpg', size=(64, 128))
    data = good.read_bytes()
    (tmp_path / 'trunc.jpg').write_bytes(data[: len(data) // 2])
    (tmp_path / 'text.jpg').write_text('hello')
    for bad in ('trunc.jpg', 'text.jpg', 'absent.jpg'):
        with pytest.raises(ImageReadError, match=bad):
            read_image(tmp_path / bad)
    bad = verify_images([str(p) for p in (good, tmp_path / 'trunc.jpg', gray, tmp_path / 'text.jpg')])
    assert [b[0].rsplit('/', 1)[1] for b in bad] == ['trunc.jpg', 'text.jpg']
    ds = ImageDataset([ReIDItem(str(tmp_path / 'trunc.jpg'), 1, 0)], build_test_transform())
    with pytest.raises(ImageReadError, match='trunc.jpg'):
        ds[0]


def test_read_image_tensor_gives_read_images_pixels(tmp_path):
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 255, (128, 64, 3), dtype=np.uint8))
    files = {'photo.jpg': photo, 'photo.png': photo, 'gray.png': photo.convert('L'),
             'rgba.png': photo.convert('RGBA'), 'palette.png': photo.convert('P'), 'photo.bmp': photo}
    for name, img in files.items():
        img.save(tmp_path / name)
        x = read_image_tensor(tmp_path / name)
        assert x.dtype == torch.uint8 and x.shape == (3, 128, 64), name
        assert torch.equal(x, torch.from_numpy(np.array(read_image(tmp_path / name))).permute(2, 0, 1)), name
    data = (tmp_path / 'photo.jpg').read_bytes()
    (tmp_path / 'trunc.jpg').write_bytes(data[: len(data) // 2])
    (tmp_path / 'text.jpg').write_text('hello')
    for bad in ('trunc.jpg', 'text.jpg', 'absent.jpg'):
        with pytest.raises(ImageReadError, match=bad):
            read_image_tensor(tmp_path / bad)
    assert ImageDataset([ReIDItem(str(tmp_path / 'photo.jpg'), 1, 0)], as_tensor=True)[0]['image'].dtype == torch.uint8


def test_uint8_pipeline_plus_normalize_batch_equals_the_float_pipeline():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 64, 3), dtype=np.uint8))
    as_float = build_train_transform(256, 128, augmentations=('random_flip', 'random_crop'))
    as_uint8 = build_train_transform(256, 128, augmentations=('random_flip', 'random_crop'), normalize=False)
    for seed in range(4):
        with seeded_rng(seed):
            ref = as_float(img)
        with seeded_rng(seed):
            raw = as_uint8(img)
        assert raw.dtype == torch.uint8
        x = normalize_batch(raw[None])[0]
        assert x.dtype == torch.float32 and (x - ref).abs().amax() < 1e-5
    cl = normalize_batch(raw[None].repeat(2, 1, 1, 1), memory_format=torch.channels_last)
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl[1], x)
    erase = build_train_transform(64, 32, augmentations=('random_erase',), normalize=False)
    white = Image.new('RGB', (32, 64), (255, 255, 255))
    erased = [normalize_batch(erase(white)[None])[0] for _ in range(20)]
    # erased pixels hold the mean colour: about 0 after normalisation (white is above 2)
    assert any(((e.abs() < 0.01).all(0)).any() for e in erased)
    with pytest.raises(TypeError, match='uint8'):
        normalize_batch(x[None])


def test_transforms():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 64, 3), dtype=np.uint8))
    test_t = build_test_transform()
    x = test_t(img)
    assert x.shape == (3, 256, 128) and x.dtype == torch.float32
    assert torch.equal(x, test_t(img))  # deterministic
    assert abs(float(x.mean())) < 1.0
    train_t = build_train_transform(128, 64, augmentations=('random_flip', 'random_crop', 'color_jitter',
                                                            'random_erase', 'random_patch'))
    outs = torch.stack([train_t(img) for _ in range(12)])
    assert outs.shape == (12, 3, 128, 64)
    assert (outs - outs[0]).abs().amax() > 0.1  # random
    with pytest.raises(ValueError, match='unknown augmentations'):
        build_train_transform(augmentations=('mixup',))


def test_random_patch_pastes_a_patch_from_an_earlier_image():
    random.seed(0)  # RandomPatch draws from Python's random, as torchvision's v2 transforms do per sample
    patch = RandomPatch(p=1.0, min_pool_size=1, p_rotate=0.0, p_flip=0.0, area=(0.1, 0.2))
    red = torch.zeros(3, 32, 16, dtype=torch.uint8)
    red[0] = 255
    blue = torch.zeros(3, 32, 16, dtype=torch.uint8)
    blue[2] = 255
    for _ in range(30):
        patch(red)  # fills the pool with red patches
    outs = [patch(blue) for _ in range(5)]  # each call pools one blue patch too, then pastes a pooled one
    red_pixels = [int(((o[0] == 255) & (o[2] == 0)).sum()) for o in outs]
    assert all(r < 32 * 16 for r in red_pixels) and sum(r > 0 for r in red_pixels) >= 4


def test_random_patch_from_donor_images_is_a_function_of_the_seed(tmp_path):
    red = _jpg(tmp_path / 'red.png', colour=(255, 0, 0), size=(16, 32))
    patch = RandomPatch(p=1.0, p_rotate=0.0, p_flip=0.0, area=(0.1, 0.2), donors=[red])
    blue = torch.zeros(3, 32, 16, dtype=torch.uint8)
    blue[2] = 255
    outs = []
    for seed in range(6):
        with seeded_rng(seed):
            outs.append(patch(blue))
    red_pixels = [int(((o[0] == 255) & (o[2] == 0)).sum()) for o in outs]
    assert all(0 < r < 0.3 * 32 * 16 for r in red_pixels)  # pasted from the donor, from the first call on
    assert not patch.pool  # stateless: nothing is pooled
    with seeded_rng(3):
        again = patch(blue)
    assert torch.equal(again, outs[3]) and not torch.equal(outs[3], outs[4])
    with seeded_rng(3):
        as_float = patch(blue.float() / 255)  # an image already in float gets the donor's pixels in [0, 1]
    assert torch.allclose(as_float, outs[3].float() / 255)
    with pytest.raises(ValueError, match='donors is empty'):
        RandomPatch(donors=[])


def test_seeded_rng_leaves_the_outer_streams_alone():
    torch.manual_seed(0)
    random.seed(0)
    expected = (torch.rand(3), random.random())
    torch.manual_seed(0)
    random.seed(0)
    with seeded_rng(sample_seed(1, 2, 3)):
        inner = (torch.rand(3), random.random())
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    with seeded_rng(sample_seed(1, 2, 3)):
        assert torch.equal(torch.rand(3), inner[0]) and random.random() == inner[1]
    seeds = {sample_seed(s, e, p) for s in range(3) for e in range(3) for p in range(50)}
    assert len(seeds) == 450 and all(0 <= x < 2 ** 63 for x in seeds)


def test_identity_sampler_p_by_k():
    items = [ReIDItem(f'{i}.jpg', pid, 0) for i, pid in enumerate([0] * 9 + [1] * 2 + [2] * 5 + [3] * 4 + [4] * 7)]
    sampler = RandomIdentitySampler(items, batch_size=8, num_instances=4, seed=1)
    idx = list(sampler)
    assert len(idx) % 8 == 0 and len(idx) >= 16
    for b in range(0, len(idx), 8):
        counts = collections.Counter(items[i].pid for i in idx[b:b + 8])
        assert len(counts) == 2 and set(counts.values()) == {4}
    assert idx != list(sampler)  # a new epoch reshuffles
    with pytest.raises(ValueError, match='multiple of num_instances'):
        RandomIdentitySampler(items, batch_size=6, num_instances=4)


def test_image_dataset_items(tmp_path):
    p = _jpg(tmp_path / '0001_c1s1_000001_00.jpg')
    sample = ImageDataset([ReIDItem(str(p), 3, 1, 2)], build_test_transform(64, 32))[0]
    assert sample['image'].shape == (3, 64, 32)
    assert (sample['pid'], sample['camid'], sample['dsetid'], sample['index']) == (3, 1, 2, 0)
    batch = next(iter(torch.utils.data.DataLoader(ImageDataset([ReIDItem(str(p), 3, 1)] * 2,
                                                               build_test_transform(64, 32)), batch_size=2)))
    assert batch['image'].shape == (2, 3, 64, 32) and batch['pid'].tolist() == [3, 3]
    assert isinstance(ReIDDataset('x', [], [], []).summary(), str)
