"""alignment: output pixel (y, x) is computed from a receptive field centred on input (y, x).

With every weight positive and symmetric (constant filters), max pooling replaced by average
pooling (same windows, no ties) and ReLUs inactive on positive signals, the network is linear and
translation invariant away from the borders. The gradient of output pixel (y, x) with respect to
the input is then a non-negative "effective receptive field"; bilinear upsampling mixes the
fields of neighbouring coarse cells with weights that reproduce positions exactly, so the
field's centroid is (y, x) iff every crop and upsampling step is aligned. Misalignment by one
pixel anywhere moves the centroid (checked as a negative control).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcnseg.models import FCN, build_backbone

DTYPE = torch.float32
TOL = 1e-3  # px; float32 sums over ~250k pixels. A misalignment is >= 1 px.


def _avg_pools(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.MaxPool2d):
            avg = nn.AvgPool2d(
                child.kernel_size, child.stride, child.padding, ceil_mode=child.ceil_mode
            )
            setattr(module, name, avg)
        else:
            _avg_pools(child)


@torch.no_grad()
def _positive(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):  # ConvTranspose2d is not a Conv2d: stays bilinear
            m.weight.fill_(1.0 / m.weight[0].numel())
            if m.bias is not None:
                m.bias.zero_()


def probe(backbone: str, skips: int, mode: str, **kw: float) -> FCN:
    """An FCN with the real geometry, turned into a linear positive probe."""
    model = FCN(build_backbone(backbone, mode=mode, **kw), 1, skips=skips, mode=mode)
    _avg_pools(model)
    _positive(model)
    return model.to(DTYPE).eval()


def centroids(model: FCN, size: tuple[int, int], pixels: list[tuple[int, int]]) -> torch.Tensor:
    """Centroid (y, x) of |∂ out[y, x] / ∂ input| for each pixel, one backward for all."""
    x = torch.ones(len(pixels), 3, *size, dtype=DTYPE, requires_grad=True)
    out = model(x)
    assert out.shape[-2:] == size
    sel = torch.stack([out[b, 0, y, xx] for b, (y, xx) in enumerate(pixels)])
    (grad,) = torch.autograd.grad(sel.sum(), x)
    g = grad.abs().sum(1).double()  # N×H×W
    ys = torch.arange(size[0], dtype=torch.float64)[:, None]
    xs = torch.arange(size[1], dtype=torch.float64)[None, :]
    mass = g.sum((1, 2))
    return torch.stack([(g * ys).sum((1, 2)) / mass, (g * xs).sum((1, 2)) / mass], 1)


def interior_pixels(model: FCN, size: tuple[int, int]) -> list[tuple[int, int]]:
    """Pixels whose whole effective field lies inside the image, at several grid phases."""
    reach = int(model.backbone.grids()[model.backbone.out].rf) // 2 + 32
    h, w = size
    assert h - 2 * reach > 8, "input too small for an interior pixel"
    cy, cx = h // 2, w // 2
    candidates = [(cy, cx), (cy - 7, cx + 5), (cy + 3, cx - 12), (cy + 11, cx + 1)]
    return [(y, x) for y, x in candidates if reach <= y < h - reach and reach <= x < w - reach]


@pytest.mark.parametrize("mode", ["exact", "caffe"])
@pytest.mark.parametrize("skips", [0, 1, 2], ids=["32s", "16s", "8s"])
@pytest.mark.parametrize("size", [(500, 500), (487, 513)])
def test_alignment_vgg16(mode: str, skips: int, size: tuple[int, int]) -> None:
    """VGG16 geometry (channels scaled down: alignment does not depend on width), odd and even
    sizes, both layouts: the field of output (y, x) is centred on (y, x) to 1e-3 px."""
    model = probe("vgg16", skips, mode, width=1 / 64)
    pixels = interior_pixels(model, size)
    assert len(pixels) >= 2
    got = centroids(model, size, pixels)
    expected = torch.tensor(pixels, dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=0, atol=TOL)


@pytest.mark.parametrize("backbone", ["alexnet", "resnet18"])
@pytest.mark.parametrize("skips", [0, 2], ids=["32s", "8s"])
def test_alignment_other_backbones(backbone: str, skips: int) -> None:
    """Grids of strided odd-kernel convolutions (ResNet) and AlexNet's even 6×6 fc6 align too:
    the kernel parity and crops are chosen from the geometry."""
    size = (541, 529)
    model = probe(backbone, skips, "exact")
    pixels = interior_pixels(model, size)[:2]
    got = centroids(model, size, pixels)
    torch.testing.assert_close(got, torch.tensor(pixels, dtype=torch.float64), rtol=0, atol=TOL)


def test_alignment_detects_a_one_pixel_error() -> None:
    """Negative control: shifting the final crop by one pixel moves the centroid by one."""
    model = probe("vgg16", 2, "exact", width=1 / 64)
    size = (500, 500)
    pixels = interior_pixels(model, size)[:1]
    model.out_offset += 1
    got = centroids(model, size, pixels)
    expected = torch.tensor(pixels, dtype=torch.float64)
    torch.testing.assert_close(got - expected, torch.ones_like(got), rtol=0, atol=TOL)


def test_alignment_output_size_always_equals_input() -> None:
    """Exact and caffe mode keep H×W for every size 1…64 (all crops derived, none hard-coded)."""
    for mode in ("exact", "caffe"):
        model = FCN(build_backbone("vgg16", mode=mode, width=1 / 64), 2, skips=2, mode=mode)
        with torch.no_grad():
            for n in range(1, 65):
                assert model(torch.zeros(1, 3, n, 65 - n)).shape[-2:] == (n, 65 - n), (mode, n)
