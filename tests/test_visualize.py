"""`python -m osnet_zoo.visualize`: the activation-map and gate-cluster figures, and the ranked grid's labels."""
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file

import osnet_zoo  # noqa: F401
from osnet_zoo.data import build_dataset, build_test_transform, make_synthetic_reid, normalize_batch, read_image
from osnet_zoo.metrics.plots import (
    GREEN, GREY, LINE_HEIGHT, RED, TITLE_HEIGHT, TITLE_SIZE, colour_bar, label_font, ranked_cell_label,
    ranked_legend, ranked_results_grid, title_band, title_band_lines,
)
from osnet_zoo.inference import build_embedding_model
from osnet_zoo.inference.figures import (
    MIN_FIGURE_WIDTH, STRIP_BAR_WIDTH, activation_maps, capture_gates, closest_to_centres, collect_items, compute_activation_maps,
    kmeans, overlay_activation, run_actmap, run_gates,
)
from osnet_zoo.visualize import get_args_parser, main

from conftest import child_env, run_module

SIZE = (128, 64)
CPU = torch.device('cpu')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('visualize')
    make_synthetic_reid(tmp / 'data' / 'synthetic_reid', num_train_ids=2, num_test_ids=4, num_cameras=3,
                        cameras_per_id=(2, 2), images_per_camera=(1, 2), num_distractors=2, num_junk=0)
    return tmp


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return build_embedding_model('osnet_x0_25', pretrained=False)


# ------------------------------------------------------------------------------------------- arithmetic

def test_activation_maps_against_a_hand_computation():
    feats = torch.tensor([[[[1., -2.], [0., 3.]],
                           [[-1., 2.], [0., 1.]]]])  # (1, 2 channels, 2, 2)
    # |.| summed over channels: [[2, 4], [0, 4]], L2 norm sqrt(4 + 16 + 0 + 16) = 6
    expected = torch.tensor([[[2 / 6, 4 / 6], [0., 4 / 6]]])
    assert torch.allclose(activation_maps(feats), expected)
    # each image on its own; an all-zero map stays zero (no division by zero)
    batch = torch.cat([feats * 5, torch.zeros_like(feats)])
    out = activation_maps(batch)
    assert torch.allclose(out[0], expected[0]) and torch.equal(out[1], torch.zeros(2, 2))
    with pytest.raises(ValueError, match='B, C, H, W'):
        activation_maps(torch.zeros(2, 3, 4))


def test_overlay_is_red_where_the_activation_is_high_and_blue_where_low():
    image = np.full((64, 32, 3), 128, np.uint8)
    amap = np.zeros((4, 2), np.float32)
    amap[0, 0] = 1.0  # hot top-left cell
    out = overlay_activation(image, amap, alpha=0.6)
    assert out.shape == image.shape and out.dtype == np.uint8
    hot, cold = out[2, 2].astype(int), out[60, 30].astype(int)
    assert hot[0] > hot[2] + 50  # red dominates where the map is high (jet)
    assert cold[2] > cold[0] + 50  # blue where it is low
    assert np.array_equal(overlay_activation(image, amap, alpha=0.0), image)
    with pytest.raises(ValueError, match='alpha'):
        overlay_activation(image, amap, alpha=1.5)


def test_kmeans_finds_separated_blobs_and_is_seeded():
    g = torch.Generator().manual_seed(3)
    means = torch.tensor([[0., 0., 0.], [10., 0., 0.], [0., 10., 5.]])
    truth = torch.arange(3).repeat_interleave(20)
    x = means[truth] + 0.3 * torch.randn(60, 3, generator=g)
    centres, labels = kmeans(x, 3, seed=0)
    # the same partition as the truth, up to renaming: each true blob maps to one cluster, all different
    mapping = {int(t): set(labels[truth == t].tolist()) for t in range(3)}
    assert all(len(v) == 1 for v in mapping.values()) and len(set.union(*mapping.values())) == 3
    for t, (c,) in mapping.items():
        assert torch.allclose(centres[c].float(), x[truth == t].mean(0), atol=1e-5)
    again = kmeans(x, 3, seed=0)
    assert torch.equal(again[1], labels) and torch.equal(again[0], centres)
    with pytest.raises(ValueError, match='cannot make 5 clusters of 4'):
        kmeans(torch.zeros(4, 2), 5)
    # fewer distinct points than clusters still gives k non-empty clusters
    _, dup = kmeans(torch.tensor([[0., 0.], [0., 0.], [1., 1.]]), 3)
    assert sorted(dup.tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match='non-finite'):
        kmeans(torch.tensor([[0., float('nan')], [1., 1.]]), 2)


@pytest.mark.parametrize('case', ['identical', 'few distinct', 'saturated with outliers', 'random duplicates'])
def test_kmeans_never_leaves_a_cluster_empty(case):
    """What a trained model's gates can look like: sigmoids at exactly 1.0, so many images share one gate vector
    (the main job's osnet_x0_25, seed 1, one thread, 256x128: 62 distinct vectors among 142 query images; how
    many depends on the run, docs/visualize.md). Lloyd's algorithm with a plain restart emptied clusters there
    (IndexError in `gates`); every cluster must keep a point."""
    g = torch.Generator().manual_seed(0)
    x = {
        'identical': torch.ones(20, 8),
        'few distinct': torch.eye(3).repeat_interleave(torch.tensor([10, 1, 1]), 0),
        'saturated with outliers': torch.cat([torch.ones(40, 16), torch.rand(3, 16, generator=g) * 100]),
        'random duplicates': torch.rand(6, 4, generator=g)[torch.randint(6, (50,), generator=g)],
    }[case]
    for k in (1, 2, 5, 6):
        for seed in range(4):
            centres, labels = kmeans(x, k, seed=seed)
            sizes = torch.bincount(labels, minlength=k)
            assert len(sizes) == k and sizes.min() >= 1, (k, seed, sizes.tolist())
            # the centres are their members' means
            for c in range(k):
                assert torch.allclose(centres[c], x[labels == c].double().mean(0))
    # all points identical: k clusters of identical points, all at that point
    if case == 'identical':
        centres, labels = kmeans(x, 6)
        assert torch.equal(centres, torch.ones(6, 8, dtype=torch.float64)) and labels.unique().numel() == 6


def test_closest_to_centres_orders_members_by_distance():
    x = torch.tensor([[0.], [3.], [1.], [-2.], [10.], [12.], [11.5]])
    centres = torch.tensor([[0.], [11.]])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    near = closest_to_centres(x, centres, labels, per_cluster=3)
    assert [i for i, _ in near[0]] == [0, 2, 3]  # distances 0, 1, 2 (3 is cut)
    assert [d for _, d in near[0]] == [0.0, 1.0, 2.0]
    assert [i for i, _ in near[1]] == [6, 4, 5]  # 0.5, 1, 1: tie kept in index order


# ---------------------------------------------------------------------------------------------- models

def test_capture_gates_reads_the_last_block_without_changing_the_model(model):
    x = torch.randn(3, 3, *SIZE)
    block = model.conv4[-1]
    # reference: the gate's own arithmetic on what each stream hands it
    stream_outputs = []
    handle = block.gate.register_forward_hook(lambda m, inp, out: stream_outputs.append(inp[0].detach()))
    with torch.inference_mode():
        plain = model(x)
    handle.remove()
    gate = block.gate
    with torch.inference_mode():
        expected = torch.cat([torch.sigmoid(gate.fc2(torch.relu(gate.fc1(s.mean((2, 3), keepdim=True))))).flatten(1)
                              for s in stream_outputs], 1)
    gates = capture_gates(model, x)
    mid = block.conv1.conv.out_channels
    assert gates.shape == (3, 4 * mid) and len(stream_outputs) == 4
    assert torch.allclose(gates, expected, atol=1e-6) and gates.min() > 0 and gates.max() < 1
    assert not gate.fc2._forward_hooks  # hooks removed
    with torch.inference_mode():
        assert torch.equal(model(x), plain)
    t1 = build_embedding_model('osnet_x0_25', pretrained=False, model_args={'num_streams': 1})
    assert capture_gates(t1, x).shape == (3, mid)
    with pytest.raises(ValueError, match='no omni-scale blocks'):
        capture_gates(torch.nn.Conv2d(3, 3, 1), x)


def test_model_errors_and_collect_items_errors(data, tmp_path):
    image = str(data / 'data' / 'synthetic_reid' / 'query')
    with pytest.raises(ValueError, match="unknown model 'resnet50': the visualisations read OSNet's blocks"):
        main(['actmap', '--model', 'resnet50', '--no-pretrained', '--device', 'cpu', image])
    with pytest.raises(FileNotFoundError, match='nothing.pth'):
        main(['actmap', '--model', 'osnet_x0_25', '--checkpoint', str(tmp_path / 'nothing.pth'), '--device', 'cpu',
              image])
    with pytest.raises(ValueError, match='num_streams'):  # pretrained weights of another architecture
        main(['actmap', '--model', 'osnet_x0_25', '--model-args', 'num_streams=1', '--device', 'cpu', image])
    with pytest.raises(FileNotFoundError, match='missing.jpg'):
        collect_items([str(tmp_path / 'missing.jpg')])
    with pytest.raises(ValueError, match='not both'):
        collect_items([str(tmp_path)], dataset='synthetic')
    with pytest.raises(FileNotFoundError, match='Expected layout'):
        collect_items(dataset='market1501', root=str(tmp_path))
    query = build_dataset('synthetic', data / 'data').query
    picked = collect_items(dataset='synthetic', root=str(data / 'data'), split='query', max_images=3)
    assert len(picked) == 3 and picked[0] == query[0] and picked[-1] == query[-1]
    folder = collect_items([str(data / 'data' / 'synthetic_reid' / 'query')])
    assert sorted(it.path for it in folder) == sorted(it.path for it in query) and folder[0].pid == -1


# --------------------------------------------------------------------------------------------- figures

def test_actmap_writes_overlays_that_follow_the_activation(data, model, tmp_path):
    items = build_dataset('synthetic', data / 'data').query[:5]
    t1 = build_embedding_model('osnet_x0_25', pretrained=False, model_args={'num_streams': 1})
    res = run_actmap(items, {'osnet': model, 'T=1': t1}, tmp_path, CPU, batch_size=2, workers=0, size=SIZE,
                     grid_images=4)
    assert len(res['maps']) == 5
    h, w = SIZE
    with Image.open(res['maps'][0]) as im:
        # image | osnet | T=1 | colour bar, 4 px gaps
        assert im.format == 'PNG' and im.size == (3 * w + STRIP_BAR_WIDTH + 3 * 4, h)
        strip = np.asarray(im.convert('RGB')).astype(int)
    assert np.array_equal(strip[:, -STRIP_BAR_WIDTH:], colour_bar(h, STRIP_BAR_WIDTH, vertical=True))
    assert strip[0, -1, 0] > 100 > strip[0, -1, 2] and strip[-1, -1, 2] > 100 > strip[-1, -1, 0]  # red top, blue bottom
    with Image.open(res['grid']) as im:
        grid = np.asarray(im.convert('RGB')).astype(int)
    # a title band, the colour scale (a jet bar), then three rows (image + 2 models) of 4 columns
    header = title_band(grid.shape[1], res['caption']['title'], res['caption']['lines']).height
    scale_height = 16 + LINE_HEIGHT + 4
    assert grid.shape[0] == header + scale_height + 4 + 3 * (h + 4) and grid.shape[1] > 4 * w
    bar = min(300, grid.shape[1] - 16)  # (narrower in a narrow figure)
    assert np.array_equal(grid[header + 2:header + 14, 6:6 + bar], colour_bar(bar, 12))
    assert (grid[:header, :200].max(-1) < 100).sum() > 100  # the title's dark text
    picture, overlay = strip[:, :w], strip[:, w + 4:2 * w + 4]
    resized = build_test_transform(*SIZE, normalize=False)(read_image(items[0].path)).permute(1, 2, 0).numpy()
    assert np.array_equal(picture, resized)  # the first panel is the image itself, as the model saw it
    # the overlay's red excess follows this model's activation map: high where it is high, low where low
    images = torch.from_numpy(np.ascontiguousarray(picture.astype(np.uint8).transpose(2, 0, 1)))[None]
    amap = compute_activation_maps(model, images, CPU)[0]
    up = torch.nn.functional.interpolate(amap[None, None], size=SIZE, mode='bilinear')[0, 0].numpy()
    redness = overlay[..., 0] - overlay[..., 2]
    hot, cold = up >= np.quantile(up, 0.95), up <= np.quantile(up, 0.05)
    assert redness[hot].mean() > redness[cold].mean() + 60
    assert np.abs(overlay - picture).mean() > 20  # the overlay changes the picture


def test_gates_clusters_hold_their_nearest_images(data, model, tmp_path):
    items = build_dataset('synthetic', data / 'data').gallery
    res = run_gates(items, model, tmp_path, CPU, clusters=3, per_cluster=4, batch_size=8, workers=0, size=SIZE)
    saved = json.loads((tmp_path / 'gate_clusters.json').read_text())
    assert saved == json.loads(json.dumps(res))
    assert saved['gate_dim'] == 4 * 32 and saved['num_images'] == len(items)
    sizes = [c['size'] for c in saved['clusters']]
    assert sum(sizes) == len(items) and sizes == sorted(sizes, reverse=True) and min(sizes) > 0
    for c in saved['clusters']:
        members = sorted((im['distance'], im['index']) for im in saved['images'] if im['cluster'] == c['cluster'])
        assert [n['index'] for n in c['nearest']] == [i for _, i in members[:4]]
    # the assignments are k-means of the captured gates: each image is nearest its own cluster's centre
    t = build_test_transform(*SIZE, normalize=False)
    x = normalize_batch(torch.stack([t(read_image(it.path)) for it in items]))
    gates = capture_gates(model, x).double()
    labels = torch.tensor([im['cluster'] for im in saved['images']])
    centres = torch.stack([gates[labels == c].mean(0) for c in range(3)])
    assert torch.equal(torch.cdist(gates, centres).argmin(1), labels)
    assert 1 <= saved['distinct_gate_vectors'] <= len(items)
    with Image.open(tmp_path / 'gate_clusters.png') as im:
        # a title band (title + 2 lines, wrapped), then one row of 128 px thumbnails per cluster, a distance under
        # each
        header = title_band(im.width, saved['caption']['title'], saved['caption']['lines']).height
        assert im.format == 'PNG' and im.height == header + 4 + 3 * (128 + 4 + LINE_HEIGHT)
    with pytest.raises(ValueError, match='cannot make 30 clusters'):
        run_gates(items[:5], model, tmp_path, CPU, clusters=30)


def test_gates_with_saturated_gates(data, tmp_path):
    """Every gate at sigmoid = 1.0 (as a trained model's often are): one distinct gate vector for all images,
    still one picture per cluster and no empty cluster."""
    torch.manual_seed(0)
    saturated = build_embedding_model('osnet_x0_25', pretrained=False)
    with torch.no_grad():
        saturated.conv4[-1].gate.fc2.bias.fill_(60.0)
    items = build_dataset('synthetic', data / 'data').gallery
    res = run_gates(items, saturated, tmp_path, CPU, clusters=4, per_cluster=3, batch_size=8, workers=0, size=SIZE)
    assert res['distinct_gate_vectors'] == 1
    sizes = [c['size'] for c in res['clusters']]
    assert sizes[1:] == [1, 1, 1] and sum(sizes) == len(items)
    assert res['caption']['rows'][1:] == ['cluster 2, 1 image', 'cluster 3, 1 image', 'cluster 4, 1 image']
    assert res['caption']['rows'][0] == f'cluster 1, {sizes[0]} images'
    assert '(128 values per image; 1 distinct vector among the images)' in res['caption']['lines'][0]
    assert all(n['distance'] == 0.0 for c in res['clusters'] for n in c['nearest'])


def test_gates_uses_the_whole_split_by_default():
    parser = get_args_parser()
    assert parser.parse_args(['gates', '--model', 'osnet_x0_25']).max_images is None
    assert parser.parse_args(['actmap', '--model', 'osnet_x0_25']).max_images == 32
    assert parser.parse_args(['gates', '--model', 'osnet_x0_25', '--max-images', '5']).max_images == 5


# ----------------------------------------------------------------------------------------------- the CLI

def test_cli_end_to_end_and_errors(data, tmp_path):
    torch.manual_seed(1)
    ckpt, ckpt_t1 = tmp_path / 'osnet.safetensors', tmp_path / 't1.safetensors'
    for path, kwargs in ((ckpt, {}), (ckpt_t1, {'num_streams': 1})):
        net = timm.create_model('osnet_x0_25', num_classes=5, **kwargs)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    common = ['--root', str(data / 'data'), '--height', str(SIZE[0]), '--width', str(SIZE[1]), '--workers', '0',
              '--device', 'cpu']
    proc = run_module('osnet_zoo.visualize', 'actmap', '--model', 'osnet_x0_25', '--checkpoint', ckpt, '--compare',
                      'osnet_x0_25', '--compare-checkpoint', ckpt_t1, '--compare-args', 'num_streams=1', '--max-images',
                      '3', '--output', tmp_path / 'act', *common, cwd=tmp_path, env=child_env(HF_HUB_OFFLINE='1'))
    assert proc.returncode == 0, proc.stderr
    maps = sorted((tmp_path / 'act' / 'maps').glob('*.png'))
    assert len(maps) == 3 and (tmp_path / 'act' / 'actmaps.png').is_file() and 'wrote' in proc.stdout
    with Image.open(maps[0]) as im:
        assert im.size == (3 * SIZE[1] + STRIP_BAR_WIDTH + 3 * 4, SIZE[0])
    # gates in this process (a subprocess costs seconds of imports): the same parser and main
    result = main(['gates', '--model', 'osnet_x0_25', '--checkpoint', str(ckpt), '--dataset', 'synthetic',
                   '--split', 'gallery', '--clusters', '2', '--per-cluster', '3', '--output', str(tmp_path / 'g'),
                   *common])
    saved = json.loads((tmp_path / 'g' / 'gate_clusters.json').read_text())
    assert saved == json.loads(json.dumps(result)) and (tmp_path / 'g' / 'gate_clusters.png').is_file()
    assert saved['num_clusters'] == 2 and all(len(c['nearest']) == min(3, c['size']) for c in saved['clusters'])
    assert sum(c['size'] for c in saved['clusters']) == saved['num_images'] > 3

    # an error: one line (the multi-line layout message folded), non-zero exit, naming the thing
    proc = run_module('osnet_zoo.visualize', 'gates', '--model', 'osnet_x0_25', '--no-pretrained', '--dataset',
                      'market1501', '--output', tmp_path / 'x', *common, cwd=tmp_path,
                      env=child_env(HF_HUB_OFFLINE='1'))
    assert proc.returncode != 0 and proc.stderr.startswith('error: ') and 'Expected layout' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and 'Traceback' not in proc.stderr


def test_cli_help_and_argument_errors(capsys):
    for argv in (['--help'], ['actmap', '--help'], ['gates', '--help']):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    text = capsys.readouterr().out
    assert 'examples:' in text and 'num_streams=1' in text and '--compare' in text and '--clusters' in text
    with pytest.raises(ValueError, match='KEY=VALUE'):
        main(['actmap', '--model', 'osnet_x0_25', '--no-pretrained', '--model-args', 'num_streams', __file__])


# --------------------------------------------------------------------------------------- the ranked grid

def test_ranked_cell_label():
    assert ranked_cell_label(None, 12, 0) == ['query', 'ID 12', 'cam 1']
    # the rank and the distance apart (the font's space is 2 px: '#1 64.023' read as '#164.023')
    assert ranked_cell_label(3, 7, 5, 0.12345) == ['#3  d=0.123', 'ID 7', 'cam 6']
    assert ranked_cell_label(1, 7, 1, 64.0234) == ['#1  d=64.02', 'ID 7', 'cam 2']
    assert ranked_cell_label(10, 7, 1, 1234.6) == ['#10  d=1235', 'ID 7', 'cam 2']
    assert ranked_cell_label(4, 7, 1) == ['#4', 'ID 7', 'cam 2']
    # the longest of them fits the 64 px cell uncut
    draw = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    assert draw.textlength(ranked_cell_label(10, 7, 1, 64.0234)[0], font=label_font()) <= 64 + 1


def test_title_band_wraps_instead_of_cutting():
    """A title or line wider than its band wraps onto more lines (the actmap title was cut with '…')."""
    title = 'Activation maps (conv5) of osnet_x1_0 vs osnet_x1_0_t1, input 256x128'
    line = ('Colour: the sum of |feature| over channels at each position, upsampled and scaled to 0..1 per image '
            '(jet colour map, blended over the image).')
    titles, lines = title_band_lines(MIN_FIGURE_WIDTH, title, [line])
    assert len(titles) >= 2 and len(lines) >= 2  # too wide for one line each at this width
    assert ' '.join(titles) == title and ' '.join(lines) == line  # every word drawn, nothing cut
    draw = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    assert all(draw.textlength(t, font=label_font(TITLE_SIZE)) <= MIN_FIGURE_WIDTH - 12 for t in titles)
    assert all(draw.textlength(t, font=label_font()) <= MIN_FIGURE_WIDTH - 12 for t in lines)
    band = title_band(MIN_FIGURE_WIDTH, title, [line])
    assert band.height == 6 + len(titles) * TITLE_HEIGHT + len(lines) * LINE_HEIGHT + 3  # room for every line
    assert title_band_lines(2000, title, [line]) == ([title], [line])  # room enough: one line each


def test_ranked_grid_draws_a_label_band(data, tmp_path):
    ds = build_dataset('synthetic', data / 'data')
    dist = np.random.default_rng(0).random((2, len(ds.gallery)))
    kw = dict(query_dist=dist, query_indices=[0, 1], query_items=ds.query, gallery_items=ds.gallery, topk=4)
    plain = ranked_results_grid(path=tmp_path / 'plain.png', labels=False, **kw)
    labelled = ranked_results_grid(path=tmp_path / 'labelled.png', title='Ranked: test', distance='cosine distance',
                                   **kw)
    with Image.open(plain) as a, Image.open(labelled) as b:
        # the legend of the labelled grid has lines more (how to read a label, wrapped to the grid's width)
        extra = (ranked_legend(a.width, 'Ranked: test', 'cosine distance').height
                 - ranked_legend(a.width, 'Ranked: test', 'cosine distance', labels=False).height)
        assert extra >= LINE_HEIGHT and b.width == a.width
        assert b.height == a.height + 2 * (3 * LINE_HEIGHT + 2) + extra
        px = np.asarray(b.convert('RGB'))
    legend = ranked_legend(px.shape[1], 'Ranked: test', 'cosine distance')
    assert np.array_equal(px[:legend.height], np.asarray(legend))  # the legend on top
    top = legend.height
    band = px[top + 6 + 128 + 2:top + 6 + 128 + 2 + 3 * LINE_HEIGHT]  # below the first row of pictures
    assert (band.max(-1) < 100).sum() > 50  # dark text drawn on the white band


def test_ranked_legend_shows_the_frame_colours():
    legend = np.asarray(ranked_legend(700, 'title', 'squared euclidean distance'))
    swatch_row = legend[6 + 18 + 5]  # the middle of the swatch line, under the title
    for colour in (GREY, GREEN, RED):  # each frame colour has its square
        assert (swatch_row == colour).all(-1).sum() >= 8, colour
    assert (legend[6 + 18 + 12:].max(-1) < 100).sum() > 200  # and the explanation lines are written
