"""Coordinate geometry (stride, offset, receptive field, output size) against hand computation,
the reference's crop values, real forward passes and autograd."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from fractions import Fraction

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from fcnseg.models import FCN, Backbone, build_backbone
from fcnseg.models import geometry as G
from fcnseg.models.geometry import Grid

H = Fraction(1, 2)


@functools.cache
def _backbone(name: str, mode: str = "exact") -> Backbone:
    """Built once per module (eval mode); VGG16 channel-scaled by 1/32 (same geometry)."""
    kwargs = {"width": 1 / 32} if name == "vgg16" else {}
    return build_backbone(name, mode=mode, **kwargs).eval()


@pytest.fixture(scope="module", autouse=True)
def _free_cached_backbones() -> Iterator[None]:
    yield
    _backbone.cache_clear()


def _vgg(mode: str = "exact") -> Backbone:
    return _backbone("vgg16", mode)


# --------------------------------------------------------------------------------------------
# Unit tests of the primitives, against values computed by hand.
# --------------------------------------------------------------------------------------------


def test_conv_same_padding_keeps_offset() -> None:
    """A 3×3 conv with padding 1 keeps stride and offset and widens the rf by 2 strides."""
    assert G.conv(Grid(), 3, padding=1) == Grid(1, 0, 3)
    g = Grid(Fraction(4), Fraction(3, 2), Fraction(16))
    assert G.conv(g, 3, padding=1) == Grid(4, Fraction(3, 2), 16 + 2 * 4)
    # Dilation 2: span 4, padding 2 keeps the offset too.
    assert G.conv(g, 3, padding=2, dilation=2) == Grid(4, Fraction(3, 2), 16 + 4 * 4)


def test_conv_unpadded_and_strided() -> None:
    """Unpadded kernels shift the offset by half their span; strides multiply."""
    # 2×2 pool, stride 2: centre of cells 0 and 1 → 0.5.
    assert G.conv(Grid(), 2, stride=2) == Grid(2, H, 2)
    # On a stride-4 grid at offset 1.5 a 2×2 pool adds stride/2 = 2.
    assert G.conv(Grid(4, Fraction(3, 2), 16), 2, 2) == Grid(8, Fraction(7, 2), 20)
    # AlexNet conv1: 11×11 stride 4 pad 2 → offset 5 − 2 = 3, rf 11.
    assert G.conv(Grid(), 11, 4, 2) == Grid(4, 3, 11)
    # Caffe's conv1_1 pad 100: offset 1 − 100 = −99.
    assert G.conv(Grid(), 3, 1, 100) == Grid(1, -99, 3)
    # An even kernel shifts by (k − 1)/2 − p = −1/2 cell: 6×6 pad 3 at stride 32 moves 31 → 15.
    assert G.conv(Grid(32, 31, 195), 6, 1, 3) == Grid(32, 15, 195 + 5 * 32)


@pytest.mark.parametrize("factor", [2, 4, 8, 16, 32])
def test_deconv_even_kernel_undoes_half_pixel_grid(factor: int) -> None:
    """ConvTranspose k=2f, s=f, p=ceil((f−1)/2) maps the half-pixel grid of an f×f pooling
    (offset (f−1)/2) back onto the pixel grid: stride 1, offset 0, alignment 0."""
    pooled = G.conv(Grid(), factor, factor)
    assert pooled == Grid(factor, Fraction(factor - 1, 2), factor)
    up = G.deconv(pooled, 2 * factor, factor, -(-(factor - 1) // 2))
    assert up.stride == 1
    assert up.offset == 0
    assert up.rf == pooled.rf
    assert G.alignment(up, Grid()) == 0


def test_deconv_hand_values() -> None:
    """Reference layouts: upscore (64, 32, 0) on Caffe's fc7 grid sits at −19 → crop 19;
    an odd 3×3 stride-2 pad-1 kernel keeps an integer grid at offset 0."""
    fc7 = Grid(Fraction(32), Fraction(25, 2), Fraction(404))
    up = G.deconv(fc7, 64, 32)
    # 12.5 + (0 − 31.5) = −19
    assert up == Grid(1, -19, 404)
    assert G.alignment(up, Grid()) == 19
    assert G.deconv(Grid(2, 0, 7), 3, 2, 1) == Grid(1, 0, 7)
    assert G.deconv(Grid(16, 0, 99), 3, 2) == Grid(8, -8, 99)


def test_alignment() -> None:
    """alignment = (target.offset − source.offset) / stride, exact fractions; strides must match."""
    assert G.alignment(Grid(8, -5, 1), Grid(8, 35, 1)) == 5
    assert G.alignment(Grid(1, -27, 1), Grid()) == 27
    assert G.alignment(Grid(2, 0, 1), Grid(2, 1, 1)) == H
    with pytest.raises(ValueError, match="stride"):
        G.alignment(Grid(2, 0, 1), Grid(4, 0, 1))


def test_trace_residual_block_follows_main_path() -> None:
    """A stride-2 BasicBlock traces through its two 3×3 convs; the 1×1 shortcut is ignored."""
    down = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
    block = BasicBlock(8, 16, stride=2, downsample=down)
    # conv 3×3 s2 p1: stride 2, offset 0, rf 3; conv 3×3 p1 at stride 2: rf 3 + 2·2 = 7.
    assert G.trace(block) == Grid(2, 0, 7)
    assert G.output_size(block, 9) == 5


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "output_padding"),
    [(4, 2, 1, 0), (3, 2, 1, 1), (16, 8, 4, 0), (64, 32, 0, 0), (15, 8, 4, 3), (5, 1, 2, 0)],
)
def test_output_size_transposed(
    kernel: int, stride: int, padding: int, output_padding: int
) -> None:
    """output_size of a ConvTranspose2d equals the size torch produces."""
    layer = nn.ConvTranspose2d(
        1, 1, kernel, stride=stride, padding=padding, output_padding=output_padding
    )
    for n in range(1, 12):
        with torch.no_grad():
            real = layer(torch.zeros(1, 1, n, n)).shape[-1]
        assert G.output_size(layer, n) == real, n


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize(("kernel", "stride", "padding"), [(2, 2, 0), (3, 2, 0), (3, 2, 1)])
def test_output_size_pooling(kernel: int, stride: int, padding: int, ceil_mode: bool) -> None:
    """output_size of a MaxPool2d (floor and ceil mode) equals torch's, ≤ 0 when torch fails."""
    pool = nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    for n in range(1, 40):
        expected = G.output_size(pool, n)
        try:
            real = pool(torch.zeros(1, 1, n, n)).shape[-1]
        except RuntimeError:
            assert expected <= 0, n
            continue
        assert expected == real, n


# --------------------------------------------------------------------------------------------
# Whole backbones: grids, receptive fields, the reference's crops.
# --------------------------------------------------------------------------------------------


def test_vgg16_exact_grids() -> None:
    """VGG16 exact: conv3×3/pad 1 keeps the offset, each 2×2 pool adds half its input stride
    (0 → 0.5 → 1.5 → 3.5 → 7.5 → 15.5); fc6 is 7×7 pad 3 (span/2 = padding), fc7 is 1×1.
    rf: each conv adds 2·stride, each pool 1·stride: 6, 16, 44, 100, 212; fc6 adds 6·32 → 404."""
    grids = _vgg("exact").grids()
    assert grids["pool1"] == Grid(2, H, 6)
    assert grids["pool2"] == Grid(4, Fraction(3, 2), 16)
    assert grids["pool3"] == Grid(8, Fraction(7, 2), 44)
    assert grids["pool4"] == Grid(16, Fraction(15, 2), 100)
    assert grids["pool5"] == Grid(32, Fraction(31, 2), 212)
    assert grids["fc6"] == Grid(32, Fraction(31, 2), 404)
    assert grids["fc7"] == Grid(32, Fraction(31, 2), 404)


def test_vgg16_caffe_grids() -> None:
    """VGG16 caffe: conv1_1 pad 100 → −99; pools add 0.5, 1, 2, 4, 8: pool3 −95.5, pool4 −91.5,
    pool5 −83.5; fc6 7×7 unpadded adds 32·3 = 96 → fc7 offset 12.5. Receptive fields as exact."""
    grids = _vgg("caffe").grids()
    assert grids["pool1"] == Grid(2, Fraction(-197, 2), 6)
    assert grids["pool3"] == Grid(8, Fraction(-191, 2), 44)
    assert grids["pool4"] == Grid(16, Fraction(-183, 2), 100)
    assert grids["pool5"] == Grid(32, Fraction(-167, 2), 212)
    assert grids["fc7"] == Grid(32, Fraction(25, 2), 404)


def test_alexnet_grids() -> None:
    """AlexNet: conv1 11/4/2 → offset 3, rf 11; pool 3/2 → 7, 19; conv2 5×5 → rf 51; pool → 15,
    67; conv3-5 → 163; pool5 → offset 31, rf 195; fc6 6×6 pad 3 → offset 15, rf 355."""
    grids = _backbone("alexnet").grids()
    assert grids["pool1"] == Grid(8, 7, 19)
    assert grids["pool2"] == Grid(16, 15, 67)
    assert grids["pool5"] == Grid(32, 31, 195)
    assert grids["fc7"] == Grid(32, 15, 355)


@pytest.mark.parametrize(
    ("skips", "expected"),
    [
        (0, {"score": 19}),
        (1, {"score_pool4c": 5, "score": 27}),
        (2, {"score_pool4c": 5, "score_pool3c": 9, "score": 31}),
    ],
    ids=["fcn32s", "fcn16s", "fcn8s"],
)
def test_caffe_mode_derives_reference_crops(skips: int, expected: dict[str, int]) -> None:
    """Caffe mode derives the reference prototxts' crop offsets (19 / 5, 27 / 5, 9, 31)."""
    model = FCN(_vgg("caffe"), 21, skips=skips, mode="caffe")
    assert model.crops == expected


@pytest.mark.parametrize("skips", [0, 1, 2])
def test_exact_mode_vgg16_crops_are_zero(skips: int) -> None:
    """Exact mode VGG16 needs no crop at all: every upsampler lands on its target grid."""
    model = FCN(_vgg("exact"), 21, skips=skips)
    assert set(model.crops.values()) == {0}
    assert len(model.crops) == skips + 1
    assert model.output_grid.stride == 1
    assert model.output_grid.offset == 0


# --------------------------------------------------------------------------------------------
# trace / trace_layers against autograd; output_size against real forward passes.
# --------------------------------------------------------------------------------------------


def test_trace_layers_last_row_equals_trace() -> None:
    """trace_layers lists every geometric layer of the main path; its last row is trace()."""
    for backbone in (_vgg("exact"), _vgg("caffe"), _backbone("googlenet")):
        rows = G.trace_layers(backbone)
        assert rows[-1][1] == G.trace(backbone)
        assert rows[-1][1] == backbone.grids()[backbone.out]
    rows = G.trace_layers(_vgg("exact"))
    # 13 convs + 5 pools + fc6 + fc7, named by module path.
    assert len(rows) == 20
    assert rows[0] == ("stages.pool1.0", Grid(1, 0, 3))
    assert rows[2] == ("stages.pool1.4", Grid(2, H, 6))
    assert rows[-2][0] == "stages.fc6.0"


def _linearised(backbone: nn.Module, *, thin: bool) -> nn.Module:
    """Copy of ``backbone`` in which a cell's input gradient is nonzero exactly on its receptive
    field: max pools become average pools of the same geometry and every conv averages its
    window with positive weights. ``thin`` (plain conv chains only) also cuts every conv to one
    output channel — all channels are equal anyway — so big inputs stay cheap."""
    net = copy.deepcopy(backbone).eval()
    first = True
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.MaxPool2d):
                pool = nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode)
                setattr(parent, name, pool)
            elif isinstance(child, nn.Conv2d) and thin:
                conv = nn.Conv2d(
                    3 if first else 1,
                    1,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                )
                setattr(parent, name, conv)
                first = False
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
    return net


@pytest.mark.parametrize(
    ("name", "mode", "size", "stages"),
    [
        ("vgg16", "exact", 416, 7),
        ("vgg16", "caffe", 416, 7),
        ("alexnet", "exact", 416, 5),
        ("resnet18", "exact", 224, 4),  # layer4's rf (435) would need a far larger input
    ],
)
def test_trace_matches_autograd_receptive_field(
    name: str, mode: str, size: int, stages: int
) -> None:
    """For an interior cell ``i`` of every stage, the input pixels that reach it (nonzero input
    gradient) are exactly ``offset + stride·i ± (rf − 1)/2`` as traced: autograd confirms the
    traced offsets (incl. half pixels, pad 100, AlexNet's even fc6) and receptive fields."""
    backbone = _backbone(name, mode)
    grids = backbone.grids()
    net = _linearised(backbone, thin=name != "resnet18")
    x = torch.rand(1, 3, size, size, requires_grad=True)
    features, h = {}, x
    for stage in list(net.stages)[:stages]:
        h = features[stage] = net.stages[stage](h)
    for stage, out in features.items():
        grid = grids[stage]
        half = (grid.rf - 1) / 2
        cells = range(out.shape[-1])
        interior = [i for i in cells if 0 <= grid.centre(i) - half <= grid.centre(i) + half < size]
        assert interior, f"{stage}: no interior cell at size {size}"
        i = interior[len(interior) // 2]
        (grad,) = torch.autograd.grad(out[0, :, i, i].sum(), x, retain_graph=True)
        rows = grad.abs().sum(dim=(0, 1, 3)).nonzero().flatten()
        cols = grad.abs().sum(dim=(0, 1, 2)).nonzero().flatten()
        lo, hi = grid.centre(i) - half, grid.centre(i) + half
        assert (rows.min().item(), rows.max().item()) == (lo, hi), (stage, grid)
        assert (cols.min().item(), cols.max().item()) == (lo, hi), (stage, grid)
        assert len(rows) == grid.rf


def test_receptive_field_hand_values() -> None:
    """Receptive fields: VGG16 pool5 212, fc6 (7×7) 404; AlexNet pool5 195."""
    vgg = _vgg("exact")
    assert G.trace(nn.Sequential(*list(vgg.stages.values())[:5])).rf == 212
    assert G.trace(nn.Sequential(*list(vgg.stages.values())[:6])).rf == 404
    alex = _backbone("alexnet")
    assert G.trace(nn.Sequential(*list(alex.stages.values())[:3])).rf == 195


# Every size up to 70 where a forward pass is cheap, else every residue mod 32 (all these nets
# have stride 32), plus larger odd / prime sizes.
PRIMES = [97, 101, 127, 131, 211, 257]
BACKBONE_SIZES = {
    ("vgg16", "exact"): [*range(1, 71), *PRIMES, 224, 500, 503],
    ("vgg16", "caffe"): [*range(1, 71), *PRIMES, 224],
    ("alexnet", "exact"): [*range(1, 71), *PRIMES, 224],
    ("googlenet", "exact"): [*range(1, 34), 47, 64, 67, 97, 131],
    ("resnet18", "exact"): [*range(1, 34), 47, 64, 67, 97, 131],
    ("mobilenet_v3_large", "exact"): [*range(1, 34), 47, 67, 97],
    ("resnet50", "exact"): [1, 2, 3, 16, 31, 32, 33, 63, 97],
}


@pytest.mark.parametrize(("name", "mode"), list(BACKBONE_SIZES))
def test_output_size_matches_forward(name: str, mode: str) -> None:
    """output_size(stage, n) equals the real spatial size of every stage's output, run stage by
    stage on (1, 3, n, n + 5) inputs (both axes, different residues); where torch refuses the
    input, output_size reports ≤ 0 and n < min_input_size."""
    backbone = _backbone(name, mode)
    min_size = G.min_input_size(backbone)
    failures = 0
    with torch.no_grad():
        for n in BACKBONE_SIZES[name, mode]:
            x = torch.zeros(1, 3, n, n + 5)
            h, w = n, n + 5
            for stage_name, stage in backbone.stages.items():
                h, w = G.output_size(stage, h), G.output_size(stage, w)
                try:
                    x = stage(x)
                except RuntimeError:
                    assert min(h, w) <= 0, (n, stage_name, h, w)
                    assert G.output_size(backbone, n) <= 0
                    assert n < min_size
                    failures += 1
                    break
                assert tuple(x.shape[-2:]) == (h, w), (n, stage_name)
            else:
                assert (G.output_size(backbone, n), G.output_size(backbone, n + 5)) == (h, w)
                assert n >= min_size
    if name in ("alexnet", "googlenet"):
        # These need a minimum input (AlexNet 35, GoogLeNet 15) so the failing path is exercised.
        assert failures == min_size - 1
        assert min_size == {"alexnet": 35, "googlenet": 15}[name]
    else:
        assert min_size == 1
        assert failures == 0
