"""Shift-and-stitch vs filter rarefaction (FCN §3.2): same dense output, f**2 passes vs one."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from fcnseg.models.dense import ShiftAndStitch, rarefy, shift_and_stitch

TOL = {"rtol": 1e-12, "atol": 1e-12}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threading only adds overhead (it dominated runtime on 2-CPU CI)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _seeded(net: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.5)
            nn.init.normal_(m.bias, std=0.5)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias)
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return net.double().eval()


def _valid_net() -> nn.Sequential:
    """Unpadded net: output stride 4, receptive field 10."""
    return _seeded(
        nn.Sequential(
            nn.Conv2d(3, 4, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 5, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(5, 3, 1),
        )
    )


def _x(h: int, w: int, n: int = 2, c: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("size", [(37, 41), (40, 40), (13, 22), (38, 39)])
def test_shift_and_stitch_equals_rarefy_stride4(size: tuple[int, int]) -> None:
    net = _valid_net()
    x = _x(*size)
    with torch.no_grad():
        stitched = ShiftAndStitch(net, 4)(x)
        rarefied = rarefy(net)(x)
    # Defined region of an unpadded net with receptive field k = 10: H - k + 1 by W - k + 1.
    assert stitched.shape == rarefied.shape == (2, 3, size[0] - 9, size[1] - 9)
    assert_close(stitched, rarefied, **TOL)


def test_shift_and_stitch_matches_window_bruteforce() -> None:
    net, k = _valid_net(), 10
    x = _x(23, 26)
    with torch.no_grad():
        dense = shift_and_stitch(net, x, 4)
        assert dense.shape[-2:] == (23 - k + 1, 26 - k + 1)
        for i, j in [(0, 0), (1, 2), (5, 7), (13, 16), (3, 16), (13, 0)]:
            window = net(x[..., i : i + k, j : j + k])
            assert window.shape[-2:] == (1, 1)
            assert_close(dense[..., i, j], window[..., 0, 0], **TOL)


def test_shift_and_stitch_is_dense() -> None:
    net, f = _valid_net(), 4
    x = _x(37, 41)
    with torch.no_grad():
        coarse = net(x)
        dense = ShiftAndStitch(net, f)(x)
    (h, w), (hd, wd) = coarse.shape[-2:], dense.shape[-2:]
    assert (h, w) == (7, 8)
    assert f * (h - 1) < hd <= f * h + f - 1 and f * (w - 1) < wd <= f * w + f - 1
    # Shift (0, 0) reproduces the coarse output on the coarse grid ...
    assert_close(dense[..., ::f, ::f], coarse[..., : -(-hd // f), : -(-wd // f)], **TOL)
    # ... and the other phases are new values, not a nearest-neighbour upsampling.
    rows = dense[..., 1::f, ::f].shape[-2]
    assert not torch.allclose(dense[..., 1::f, ::f], dense[..., ::f, ::f][..., :rows, :])


@pytest.mark.parametrize(
    "down",
    [
        lambda: nn.MaxPool2d(2),
        lambda: nn.AvgPool2d(2),
        lambda: nn.MaxPool2d(3, stride=2),
        lambda: nn.Conv2d(4, 4, 3, stride=2),
    ],
    ids=["maxpool2", "avgpool2", "maxpool3s2", "conv3s2"],
)
@pytest.mark.parametrize("size", [(17, 19), (20, 21)])
def test_shift_and_stitch_factor2_single_stride(down, size: tuple[int, int]) -> None:
    net = _seeded(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), down(), nn.Conv2d(4, 2, 3), nn.Tanh())
    )
    x = _x(*size)
    with torch.no_grad():
        stitched = shift_and_stitch(net, x, 2)
        rarefied = rarefy(net)(x)
        coarse = net(x)
    assert stitched.shape == rarefied.shape
    assert stitched.shape[-2] >= 2 * coarse.shape[-2] - 1
    assert_close(stitched, rarefied, **TOL)


def test_shift_and_stitch_compound_strides_2_and_3() -> None:
    net = _seeded(
        nn.Sequential(
            nn.Conv2d(3, 4, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 4, 3),
            nn.ReLU(),
            nn.MaxPool2d(3),
            nn.Conv2d(4, 2, 2),
        )
    )
    r = rarefy(net)
    assert r[3].dilation == (2, 2) and r[5].dilation == (2, 2) and r[6].dilation == (6, 6)
    assert r[5].stride == (1, 1) and net[5].stride == 3  # original left untouched
    x = _x(41, 36, n=1)
    with torch.no_grad():
        assert_close(shift_and_stitch(net, x, 6), r(x), **TOL)


def test_shift_and_stitch_rarefy_at_single_stride() -> None:
    net = _valid_net()
    x = _x(37, 41)
    with torch.no_grad():
        # Removing only the second pool's stride == stitching the net after the first pool.
        at_second = rarefy(net, at=5)(x)
        stitched_tail = nn.Sequential(net[:3], ShiftAndStitch(net[3:], 2))(x)
        assert at_second.shape == stitched_tail.shape
        assert_close(at_second, stitched_tail, **TOL)
        assert at_second.shape[-2] >= 2 * net(x).shape[-2] - 1  # output stride 2, not 4
        # Removing only the first pool's stride == the fully dense output on a stride-2 grid.
        at_first = rarefy(net, at=2)(x)
        dense = shift_and_stitch(net, x, 4)[..., ::2, ::2]
        h, w = (min(a, b) for a, b in zip(at_first.shape[-2:], dense.shape[-2:], strict=True))
        assert (h, w) == tuple(at_first.shape[-2:])
        assert_close(at_first[..., :h, :w], dense[..., :h, :w], **TOL)
    r = rarefy(net, at=2)
    assert r[2].stride == (1, 1) and r[5].stride == (2, 2)
    assert r[3].dilation == r[5].dilation == r[6].dilation == (2, 2)
    assert rarefy(net, at=-2)[5].stride == (1, 1)  # negative index = net[5]


def _padded_net() -> nn.Sequential:
    return _seeded(
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(4, 2, 3, padding=1),
        )
    )


@pytest.mark.parametrize("size", [(40, 40), (37, 41)])
def test_shift_and_stitch_rarefy_padded_nets(size: tuple[int, int]) -> None:
    net = _padded_net()
    r = rarefy(net)
    assert r[4].padding == (2, 2) and r[4].dilation == (2, 2)
    assert r[7].padding == (4, 4) and r[7].dilation == (4, 4)
    x = _x(*size)
    with torch.no_grad():
        coarse, dense = net(x), r(x)
        # Padding scaled with the dilation: the coarse grid of the dense output is exact.
        assert_close(dense[..., ::4, ::4], coarse, **TOL)
        # Shift-and-stitch re-pads each shifted input, so it agrees only in the interior.
        stitched = shift_and_stitch(net, x, 4)
        m = 12  # padding reaches rows r < 9 (rarefied) and coarse rows y < 3 (stitched)
        h, w = (min(a, b) for a, b in zip(dense.shape[-2:], stitched.shape[-2:], strict=True))
        assert h - 2 * m > 0 and w - 2 * m > 0
        assert_close(dense[..., m : h - m, m : w - m], stitched[..., m : h - m, m : w - m], **TOL)
        assert not torch.allclose(dense[..., :h, :w], stitched[..., :h, :w])


def test_shift_and_stitch_rarefy_nested_sequential() -> None:
    net = _valid_net()
    nested = nn.Sequential(net[:3], nn.Sequential(net[3], net[4], net[5]), net[6])
    x = _x(29, 30)
    with torch.no_grad():
        assert_close(rarefy(nested)(x), shift_and_stitch(net, x, 4), **TOL)


@pytest.mark.parametrize(
    "layer", [nn.Upsample(scale_factor=2), nn.Flatten(), nn.AdaptiveAvgPool2d(1), nn.Linear(4, 4)]
)
def test_shift_and_stitch_rarefy_rejects_unsupported(layer: nn.Module) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), layer)
    with pytest.raises(ValueError, match=rf"net\[1\] \({type(layer).__name__}\)"):
        rarefy(net)


def test_shift_and_stitch_rarefy_errors() -> None:
    # AvgPool2d after a removed stride would need dilation, which PyTorch's lacks.
    net = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(3, 3, 3), nn.AvgPool2d(2))
    with pytest.raises(ValueError, match=r"net\[2\].*AvgPool2d"):
        rarefy(net)
    assert rarefy(net, at=2)[2].stride == (1, 1)  # fine when nothing before it is removed
    with pytest.raises(ValueError, match=r"net\[1\].*not a strided"):
        rarefy(net, at=1)  # stride-1 conv: nothing to remove
    with pytest.raises(ValueError, match="out of range"):
        rarefy(net, at=3)
    with pytest.raises(ValueError, match="Sequential"):
        rarefy(nn.Conv2d(3, 3, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="factor"):
        ShiftAndStitch(net, 0)


def test_shift_and_stitch_module_and_gradients() -> None:
    net = _valid_net()
    sas = ShiftAndStitch(net, 4)
    assert "factor=4" in repr(sas)
    assert {id(p) for p in sas.parameters()} == {id(p) for p in net.parameters()}
    sas(_x(20, 21)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
