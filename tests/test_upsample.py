"""bilinear: the upsampling layer's geometry and its equivalence to bilinear interpolation."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from fcnseg.models import bilinear_deconv, bilinear_kernel
from fcnseg.models.geometry import Grid, deconv


def test_bilinear_rule_and_output_size_f_times_n() -> None:
    """kernel 2f − f%2, stride f, padding ⌈(f−1)/2⌉ gives exactly f·n outputs, f ≤ 64, n ≤ 40."""
    for f in range(1, 65):
        layer = bilinear_deconv(1, f)
        assert layer.kernel_size == (2 * f - f % 2,) * 2
        assert layer.stride == (f, f)
        assert layer.padding == (math.ceil((f - 1) / 2),) * 2
        # Shapes on the meta device (no compute); a real CPU run for small factors.
        meta = layer.to("meta")
        for n in range(1, 41):
            out = meta(torch.empty(1, 1, n, 1, device="meta"))
            assert out.shape[-2:] == (f * n, f), (f, n)
        if f <= 8:
            cpu = bilinear_deconv(1, f)
            for n in (1, 2, 7):
                assert cpu(torch.zeros(1, 1, n, n + 1)).shape[-2:] == (f * n, f * (n + 1))


@pytest.mark.parametrize("factor", [2, 3, 4, 5, 8, 16, 32])
def test_bilinear_equals_interpolate_half_pixel_away_from_borders(factor: int) -> None:
    """Away from the borders the layer is F.interpolate(bilinear, align_corners=False): output
    j samples input coordinate (j + 0.5)/f − 0.5 (the half-pixel convention)."""
    torch.manual_seed(factor)
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    layer = bilinear_deconv(3, factor).double()
    got = layer(x)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert got.shape == ref.shape
    m = factor  # rows/cols within f of a border see the zero beyond the image
    # (atol: F.interpolate computes 1/f in float32, which shows for odd f at ~1e-8.)
    torch.testing.assert_close(got[..., m:-m, m:-m], ref[..., m:-m, m:-m], rtol=0, atol=1e-6)
    # ... and it really is different at the border (the layer fades to zero there).
    assert not torch.allclose(got[..., 0, :], ref[..., 0, :])


def test_bilinear_is_not_align_corners_true() -> None:
    """A negative control: the other convention is measurably different in the interior."""
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    got = bilinear_deconv(1, 4).double()(x)
    other = F.interpolate(x, size=(24, 24), mode="bilinear", align_corners=True)
    assert (got[..., 4:-4, 4:-4] - other[..., 4:-4, 4:-4]).abs().max() > 1e-3


def test_bilinear_kernel_matches_reference_filter() -> None:
    """The reference's upsample_filt for size 4 is the outer product of [1, 3, 3, 1]/4."""
    k = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(bilinear_kernel(4), torch.outer(k, k))
    k3 = torch.tensor([0.5, 1.0, 0.5])
    torch.testing.assert_close(bilinear_kernel(3), torch.outer(k3, k3))


def test_bilinear_per_channel_no_mixing() -> None:
    """Changing one channel's input changes only that channel's output, even after learning."""
    layer = bilinear_deconv(4, 8, learnable=True)
    with torch.no_grad():
        layer.weight.add_(torch.randn_like(layer.weight))  # as if trained
    x = torch.randn(1, 4, 5, 5)
    y = x.clone()
    y[:, 2] += 1.0
    diff = (layer(x) - layer(y)).abs().amax(dim=(0, 2, 3))
    assert diff[2] > 0 and torch.all(diff[[0, 1, 3]] == 0)


def test_bilinear_learnable_flag() -> None:
    assert not bilinear_deconv(3, 2).weight.requires_grad
    assert bilinear_deconv(3, 2, learnable=True).weight.requires_grad
    assert bilinear_deconv(3, 2).bias is None


@pytest.mark.parametrize("factor", [2, 3, 8, 32])
def test_bilinear_geometry_restores_half_pixel_grid(factor: int) -> None:
    """On a half-pixel grid of stride f (offset (f−1)/2, as after f×f pooling), the rule's layer
    lands exactly on the pixel grid: offset 0, stride 1 — no crop needed."""
    layer = bilinear_deconv(1, factor)
    src = Grid(stride=Fraction(factor), offset=Fraction(factor - 1, 2))
    out = deconv(src, layer.kernel_size[0], layer.stride[0], layer.padding[0])
    assert out.stride == 1 and out.offset == 0
