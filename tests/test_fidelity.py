"""Params and mult-adds against the papers (OSNet Table 1 / Table 6, OSNet-AIN) and the reference code."""
import pytest
import timm
import torch

import osnet_zoo
from osnet_zoo.models.complexity import count_mult_adds, count_params

# Parameters without the classifier, as the reference implementation has them.
PARAMS = {
    'osnet_x1_0': 2_169_508, 'osnet_x0_75': 1_285_754, 'osnet_x0_5': 630_034, 'osnet_x0_25': 201_864,
    'osnet_ibn_x1_0': 2_170_532,
    'osnet_ain_x1_0': 2_169_508, 'osnet_ain_x0_75': 1_285_754, 'osnet_ain_x0_5': 630_034,
    'osnet_ain_x0_25': 201_864,
}

# Mult-adds (M) of Table 6 (TPAMI 2021, which prints all 16 cells; the ICCV version's Table 6 has the same
# figures): every width beta in 1.0, 0.75, 0.5, 0.25 at every resolution gamma in 1.0 (256x128), 0.75 (192x96),
# 0.5 (128x64), 0.25 (64x32).
TABLE6 = [
    ('osnet_x1_0', (256, 128), 978.9), ('osnet_x1_0', (192, 96), 550.7),
    ('osnet_x1_0', (128, 64), 244.9), ('osnet_x1_0', (64, 32), 61.5),
    ('osnet_x0_75', (256, 128), 571.8), ('osnet_x0_75', (192, 96), 321.7),
    ('osnet_x0_75', (128, 64), 143.1), ('osnet_x0_75', (64, 32), 35.9),
    ('osnet_x0_5', (256, 128), 272.9), ('osnet_x0_5', (192, 96), 153.6),
    ('osnet_x0_5', (128, 64), 68.3), ('osnet_x0_5', (64, 32), 17.2),
    ('osnet_x0_25', (256, 128), 82.3), ('osnet_x0_25', (192, 96), 46.3),
    ('osnet_x0_25', (128, 64), 20.6), ('osnet_x0_25', (64, 32), 5.2),
]


def test_table6_lists_all_16_cells():
    assert len({(name, size) for name, size, _ in TABLE6}) == 16


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_params_equal_reference(name):
    assert count_params(timm.create_model(name)) == PARAMS[name]


def test_params_round_to_table1():
    rounded = [round(PARAMS[n] / 1e6, 1) for n in ('osnet_x1_0', 'osnet_x0_75', 'osnet_x0_5', 'osnet_x0_25')]
    assert rounded == [2.2, 1.3, 0.6, 0.2]


@pytest.mark.parametrize('name,size,mult_adds', TABLE6)
def test_mult_adds_equal_table6(name, size, mult_adds):
    got = count_mult_adds(timm.create_model(name, num_classes=0), size) / 1e6
    assert round(got, 1) == mult_adds


def test_instance_norm_adds_no_mult_adds():
    # IN placement changes statistics, not cost: AIN and IBN cost what the plain network costs.
    plain = count_mult_adds(timm.create_model('osnet_x0_25'), (128, 64))
    assert count_mult_adds(timm.create_model('osnet_ain_x0_25'), (128, 64)) == plain


@pytest.mark.parametrize('streams', [1, 2, 3, 4])
def test_table5_stream_ablation_buildable(streams):
    model = timm.create_model('osnet_x0_25', num_streams=streams, num_classes=0).eval()
    block = model.conv2[0]
    assert len(block.streams) == streams
    assert [len(s) for s in block.streams] == list(range(1, streams + 1))
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 32)).shape == (2, 512)


def test_fewer_streams_fewer_params_and_gate_reduction():
    counts = [count_params(timm.create_model('osnet_x1_0', num_streams=t)) for t in (1, 2, 3, 4)]
    assert counts == sorted(counts) and len(set(counts)) == 4
    assert counts[-1] == PARAMS['osnet_x1_0']
    wide_gate = timm.create_model('osnet_x1_0', gate_reduction=4)
    assert wide_gate.conv2[0].gate.fc1.out_channels == 64 // 4
    assert count_params(wide_gate) > PARAMS['osnet_x1_0']


def test_variant_structure():
    ain = timm.create_model('osnet_ain_x1_0')
    assert [b.norm for s in (ain.conv2, ain.conv3, ain.conv4) for b in s] == list(osnet_zoo.models.AIN_BLOCK_NORMS)
    assert isinstance(ain.conv1.bn, torch.nn.InstanceNorm2d)
    assert isinstance(ain.conv2[0].conv3.bn, torch.nn.InstanceNorm2d)
    assert isinstance(ain.conv3[0].conv3.bn, torch.nn.BatchNorm2d)
    ibn = timm.create_model('osnet_ibn_x1_0')
    assert isinstance(ibn.conv2[1].norm_out, torch.nn.InstanceNorm2d)
    assert isinstance(ibn.conv3[0].norm_out, torch.nn.Identity)
    plain = timm.create_model('osnet_x1_0')
    assert isinstance(plain.conv1.bn, torch.nn.BatchNorm2d)


def test_in_in_out_block_and_bad_placement():
    model = osnet_zoo.OSNet(channels=(16, 64, 96, 128), block_norms=('in_in_out',) * 6, num_classes=0).eval()
    blk = model.conv3[1]
    assert isinstance(blk.conv3.bn, torch.nn.InstanceNorm2d) and isinstance(blk.norm_out, torch.nn.InstanceNorm2d)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 32)).shape == (2, 512)
    with pytest.raises(ValueError, match='in_middle'):
        osnet_zoo.OSNet(block_norms=('in_middle',) + ('plain',) * 5)
    with pytest.raises(ValueError, match='one entry per block'):
        osnet_zoo.OSNet(block_norms=('plain',) * 5)


def test_user_factories():
    assert count_params(osnet_zoo.osnet_ain()) == PARAMS['osnet_ain_x1_0']
    assert count_params(osnet_zoo.osnet_ibn()) == PARAMS['osnet_ibn_x1_0']
    assert count_params(osnet_zoo.osnet_x0_25()) == PARAMS['osnet_x0_25']
    half_ibn = osnet_zoo.osnet_ibn(width=0.5)
    assert half_ibn.arch['channels'] == (32, 128, 192, 256) and half_ibn.arch['conv1_in']
    with pytest.raises(ValueError, match='No pretrained weights'):
        osnet_zoo.osnet_ibn(width=0.5, pretrained=True)
