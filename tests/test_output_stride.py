"""The output-stride ceiling of ``benchmarks/output_stride.py`` (used in docs/fcn-vs-unet.md):
exact on masks a stride-s prediction can represent, lossy on thin structures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from output_stride import IGNORE, stride_ceiling


@pytest.mark.parametrize("stride", [1, 2, 4, 8])
def test_stripes_on_the_stride_grid_are_kept_and_corners_rounded(stride: int) -> None:
    """Along one axis each pixel is nearer its own cell centre than any other, so stripes
    aligned to the grid survive exactly; at a block corner bilinear interpolation rounds."""
    torch.manual_seed(0)
    stripes = torch.randint(0, 3, (1, 7)).repeat_interleave(stride, 1).expand(5 * stride, -1)
    assert torch.equal(stride_ceiling(stripes, stride, 3), stripes)
    corner = torch.zeros(4 * stride, 4 * stride, dtype=torch.long)
    corner[: 2 * stride, : 2 * stride] = 1  # one class-1 quadrant meeting three class-0 ones
    changed = int((stride_ceiling(corner, stride, 2) != corner).sum())
    assert changed == 0 if stride <= 2 else changed > 0


def test_a_one_pixel_line_disappears_at_stride_8_but_not_1() -> None:
    mask = torch.zeros(64, 64, dtype=torch.long)
    mask[:, 30] = 1  # a membrane one pixel wide
    assert torch.equal(stride_ceiling(mask, 1, 2), mask)
    assert int((stride_ceiling(mask, 8, 2) == 1).sum()) == 0


def test_ignored_pixels_vote_for_no_class() -> None:
    mask = torch.zeros(8, 8, dtype=torch.long)
    mask[:, 4:] = 1
    mask[:, :3] = IGNORE  # the left cell is mostly ignored: class 0 keeps only one column
    out = stride_ceiling(mask, 8, 2)
    assert out.shape == mask.shape
    assert int(out.unique().numel()) == 1 and int(out[0, 0]) == 1  # 4 class-1 pixels beat 1
