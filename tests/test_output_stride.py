"""The output-stride construction of ``benchmarks/output_stride.py`` (used in docs/fcn-vs-unet.md):
exact on masks a stride-s prediction can represent, lossy on thin structures; and what a
stride-8 output with a ×8 bilinear upsampler can still draw (a 1-px line next to a knot)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

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


def test_a_one_pixel_line_next_to_a_knot_can_be_drawn_at_stride_8() -> None:
    """The loss above is that of cell-average scores, not of every score map: the ×8
    bilinear upsampler puts coarse cell i exactly at output coordinate 8i + 3.5 (its knot), and
    scores peaking there, with unequal neighbours, give a line one pixel wide at 8i + 3."""
    coarse = torch.full((8,), -20.0)
    coarse[2], coarse[3] = -10.0, 1.0  # membrane-minus-cell score per coarse column
    scores = torch.stack([torch.zeros(8, 8), coarse.expand(8, 8)])[None]  # classes: cell, membrane
    fine = F.interpolate(scores, scale_factor=8, mode="bilinear", align_corners=False)[0]
    line = torch.zeros(64, 64, dtype=torch.long)
    line[:, 27] = 1  # 27 = 8·3 + 3, next to the knot of coarse column 3
    assert torch.equal(fine.argmax(0), line)


def test_one_pixel_runs_at_stride_8_lie_only_next_to_a_knot() -> None:
    """Between knots the upsampled score is linear, so where it is positive is an interval
    reaching a knot: a positive run one pixel wide can only sit at 8i + 3 or 8i + 4. Checked
    over random coarse scores of widely varying scales (it happens there, 143 times)."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.randn(4000, 1, 1, 6, generator=g) * torch.exp(
        2 * torch.randn(4000, 1, 1, 6, generator=g)
    )
    fine = F.interpolate(coarse, scale_factor=8, mode="bilinear", align_corners=False)[:, 0, 0] > 0
    offsets = []
    for row in fine.tolist():
        starts = [j for j in range(len(row)) if row[j] and (j == 0 or not row[j - 1])]
        offsets += [j % 8 for j in starts if j + 1 == len(row) or not row[j + 1]]
    assert len(offsets) > 100 and set(offsets) == {3, 4}
