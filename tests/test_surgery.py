"""convolutionalize: a fully connected layer is a convolution over its input window (§3.1)."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch import nn
from torchvision import models

from fcnseg.models import build_backbone, convolutionalize
from fcnseg.models.geometry import Grid
from fcnseg.weights import BackboneWeights


def test_convolutionalize_matches_linear_on_its_window_and_slides() -> None:
    """On a C×H×W input the conv's single output is the linear layer's; on a larger input each
    output is the linear layer applied to the corresponding window (stride 1)."""
    torch.manual_seed(0)
    linear = nn.Linear(3 * 4 * 5, 7)
    conv = convolutionalize(linear, (3, 4, 5))
    assert conv.kernel_size == (4, 5) and conv.out_channels == 7
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(conv(x).flatten(1), linear(x.flatten(1)))
    big = torch.randn(1, 3, 9, 11)
    out = conv(big)
    assert out.shape == (1, 7, 6, 7)
    for i in range(6):
        for j in range(7):
            window = big[:, :, i : i + 4, j : j + 5].flatten(1)
            torch.testing.assert_close(out[:, :, i, j], linear(window))


def test_convolutionalize_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match="25088"):
        convolutionalize(nn.Linear(25088, 8), (512, 6, 6))


def test_convolutionalize_vgg16_fc6_fc7_shapes() -> None:
    fc6 = convolutionalize(nn.Linear(25088, 64), (512, 7, 7))
    fc7 = convolutionalize(nn.Linear(4096, 32), (4096, 1, 1))
    assert fc6.weight.shape == (64, 512, 7, 7)
    assert fc7.weight.shape == (32, 4096, 1, 1)


@pytest.fixture(scope="module")
def vgg16_pair() -> tuple[nn.Module, nn.Module]:
    """torchvision VGG16 (random weights) and the FCN backbone built from its state dict."""
    torch.manual_seed(0)
    classifier = models.vgg16(weights=None).eval()
    weights = BackboneWeights(
        state_dict=classifier.state_dict(), preprocess={}, source="torchvision vgg16 (random)"
    )
    backbone = build_backbone("vgg16", mode="exact", weights=weights).eval()
    return classifier, backbone


def _fc7(classifier: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The classifier's fc7 activation (after ReLU) on 224×224 crops."""
    f = torch.flatten(classifier.avgpool(classifier.features(x)), 1)
    return classifier.classifier[:5](f)


@torch.no_grad()
def test_convolutionalize_vgg16_fc7_equals_classifier(vgg16_pair) -> None:
    """On a 224×224 image, the classifier's fc7 equals the FCN's fc7 at the location whose
    window is the whole image (exact mode zero-pads fc6 by 3, so that is the centre of 7×7)."""
    classifier, backbone = vgg16_pair
    x = torch.randn(1, 3, 224, 224)
    expected = _fc7(classifier, x)
    fc7 = backbone(x)["fc7"]
    grid: Grid = backbone.grids()["fc7"]
    centre = int(
        (Fraction(223, 2) - grid.offset) / grid.stride
    )  # the location centred on the image centre
    assert fc7.shape[-2:] == (7, 7) and centre == 3
    torch.testing.assert_close(fc7[0, :, centre, centre], expected[0], rtol=1e-4, atol=1e-5)
    # Locations whose fc6 window reaches into the zero padding differ from it.
    assert not torch.allclose(fc7[0, :, 0, 0], expected[0], rtol=1e-3, atol=1e-3)


@torch.no_grad()
def test_convolutionalize_vgg16_slides_the_classifier_at_stride_32(vgg16_pair) -> None:
    """On 288×352, every fully-inside fc7 location equals the classifier's fc6/fc7 applied to
    the 224×224 window at stride 32 that the geometry assigns to it.

    The fc layers see that window through its 7×7 block of pool5 features. (Feeding the cropped
    window through the whole classifier differs slightly at the window's border: VGG's padded
    3×3 convolutions see zeros there instead of the neighbouring pixels — the boundary effect
    the paper sets aside; the test measures it too.)"""
    classifier, backbone = vgg16_pair
    x = torch.randn(1, 3, 288, 352)
    features = backbone(x)
    fc7, pool5 = features["fc7"][0], features["pool5"][0]
    grid = backbone.grids()["fc7"]
    rows, cols = (288 - 224) // 32 + 1, (352 - 224) // 32 + 1
    blocks, crops, where = [], [], []
    for r in range(rows):
        for c in range(cols):
            top, left = 32 * r, 32 * c
            # The fc7 location centred on this window's centre (111.5 px from its corner).
            i = (top + Fraction(223, 2) - grid.offset) / grid.stride
            j = (left + Fraction(223, 2) - grid.offset) / grid.stride
            assert i.denominator == 1 and j.denominator == 1
            blocks.append(pool5[:, r : r + 7, c : c + 7].flatten())
            crops.append(x[0, :, top : top + 224, left : left + 224])
            where.append((int(i), int(j)))
    assert len(where) == 15
    expected = classifier.classifier[:5](torch.stack(blocks))
    for k, (i, j) in enumerate(where):
        torch.testing.assert_close(fc7[:, i, j], expected[k], rtol=1e-4, atol=1e-5)
    # Whole-classifier on the cropped windows: equal up to the conv boundary effect only.
    on_crops = _fc7(classifier, torch.stack(crops))
    got = torch.stack([fc7[:, i, j] for i, j in where])
    rel = (got - on_crops).norm() / on_crops.norm()
    assert 0 < rel < 0.5, f"relative difference {rel:.3f}"
