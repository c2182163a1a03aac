"""staged: FCN-32s → FCN-16s → FCN-8s, each new skip starting at exactly zero (§4.2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from fcnseg.models import FCN, build_backbone, fcn16s, fcn32s

SIZE = (224, 256)
BORDER = 40  # rows/cols near the image border see the upsamplers' zero extension


def _model(skips: int) -> FCN:
    return FCN(build_backbone("vgg16", width=1 / 16), 3, skips=skips).eval()


@torch.no_grad()
def _trained(model: FCN) -> FCN:
    """Stand-in for training: every parameter, incl. score layers, random but fixed."""
    torch.manual_seed(1)
    for p in model.parameters():
        if p.requires_grad:
            p.normal_(0, 0.05)
    return model


def _bands(n: int, stride: int, offset: float) -> torch.Tensor:
    """Positions within stride/4 of a coarse-cell centre (offset + stride·i)."""
    pos = torch.arange(n, dtype=torch.float64)
    phase = torch.remainder(pos - offset, stride)
    dist = torch.minimum(phase, stride - phase)
    return dist < stride / 4


@torch.no_grad()
def test_staged_16s_from_32s_skip_contributes_zero(tmp_path: Path) -> None:
    """FCN-16s initialised from a trained FCN-32s: fuse_pool4 equals the upsampled coarse
    score exactly, and score_fr is the 32s's. The final outputs then differ only where the
    2×-then-16× upsampling cuts the corner of the 32× interpolation: within ±8 px of a stride-32
    cell centre (and at the borders) — identical everywhere else."""
    m32 = _trained(_model(0))
    m16 = _model(1)
    copied = m16.init_from(m32)
    assert "score_fr.weight" in copied and not any("score_pool4" in k for k in copied)
    x = torch.randn(1, 3, *SIZE)
    s32, s16 = m32.forward_scores(x), m16.forward_scores(x)
    torch.testing.assert_close(s16["score_fr"], s32["score_fr"], rtol=0, atol=0)
    torch.testing.assert_close(s16["fuse_pool4"], s16["upscore2"], rtol=0, atol=0)
    assert s16["upscore2"].abs().max() > 0

    diff = (s16["out"] - s32["out"]).abs().amax(1)[0]  # H×W
    centre = float(m32.score_grid.offset)  # 15.5: stride-32 cell centres at 15.5 + 32 i
    band = _bands(SIZE[0], 32, centre)[:, None] | _bands(SIZE[1], 32, centre)[None, :]
    inner = torch.zeros_like(band)
    inner[BORDER:-BORDER, BORDER:-BORDER] = True
    assert diff[inner & ~band].max() < 1e-5, "outside the bands the outputs must agree"
    assert diff[inner & band].max() > 1e-3, "inside the bands the interpolations differ"

    # The same through the public builder and a weights file.
    path = tmp_path / "fcn32s.safetensors"
    r32 = _trained(fcn32s(backbone="resnet18", num_classes=3)).eval()
    save_file(r32.state_dict(), str(path))
    r16 = fcn16s(backbone="resnet18", num_classes=3, init_from=path).eval()
    s = r16.forward_scores(torch.randn(1, 3, 97, 101))
    torch.testing.assert_close(s["fuse_pool4"], s["upscore2"], rtol=0, atol=0)


@torch.no_grad()
def test_staged_8s_from_16s_skip_contributes_zero() -> None:
    """FCN-8s from a trained FCN-16s: fuse_pool3 equals the upsampled fuse_pool4 exactly and
    fuse_pool4 is the 16s's; outputs differ only within ±4 px of stride-16 centres."""
    m16 = _trained(_model(1))
    m8 = _model(2)
    m8.init_from(m16)
    x = torch.randn(1, 3, *SIZE)
    s16, s8 = m16.forward_scores(x), m8.forward_scores(x)
    torch.testing.assert_close(s8["fuse_pool4"], s16["fuse_pool4"], rtol=0, atol=0)
    torch.testing.assert_close(s8["fuse_pool3"], s8["upscore_pool4"], rtol=0, atol=0)
    diff = (s8["out"] - s16["out"]).abs().amax(1)[0]
    centre = float(m16.score_grid.offset)  # 7.5
    band = _bands(SIZE[0], 16, centre)[:, None] | _bands(SIZE[1], 16, centre)[None, :]
    inner = torch.zeros_like(band)
    inner[BORDER:-BORDER, BORDER:-BORDER] = True
    assert diff[inner & ~band].max() < 1e-5
    assert diff[inner & band].max() > 1e-3


def test_staged_training_moves_the_skip_off_zero() -> None:
    """The zero-initialised skip is not stuck: one SGD step makes it contribute."""
    m16 = _model(1).train()
    m16.init_from(_trained(_model(0)))
    opt = torch.optim.SGD([p for p in m16.parameters() if p.requires_grad], lr=1e-2)
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    nn.functional.cross_entropy(m16(x), y).backward()
    opt.step()
    m16.eval()
    with torch.no_grad():
        s = m16.forward_scores(x)
    assert (s["fuse_pool4"] - s["upscore2"]).abs().max() > 0


def test_staged_init_from_rejects_another_backbone() -> None:
    with pytest.raises(ValueError, match="backbone"):
        _model(1).init_from(FCN(build_backbone("resnet18"), 3))
