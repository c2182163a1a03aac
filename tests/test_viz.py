"""Tests for :mod:`fcnseg.viz`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg import viz

PALETTE = ((0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255))
NAMES = ("background", "red", "green", "blue")


def _mask() -> np.ndarray:
    mask = np.zeros((6, 8), np.int64)
    mask[1:3, 1:4] = 1
    mask[4, :] = 3
    mask[5, 7] = 255
    return mask


def _image(h: int = 6, w: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _open(path: Path) -> Image.Image:
    assert path.is_file() and path.stat().st_size > 0
    img = Image.open(path)
    img.load()
    return img


# --- colorize / overlay -----------------------------------------------------------------


def test_colorize_maps_indices_and_ignore():
    mask = _mask()
    out = viz.colorize(mask, PALETTE, ignore_color=(7, 8, 9))
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3)
    np.testing.assert_array_equal(out[1, 1], (255, 0, 0))
    np.testing.assert_array_equal(out[4, 0], (0, 0, 255))
    np.testing.assert_array_equal(out[0, 0], (0, 0, 0))
    np.testing.assert_array_equal(out[5, 7], (7, 8, 9))
    expected = np.array([*PALETTE, (7, 8, 9)], np.uint8)[np.where(mask == 255, 4, mask)]
    np.testing.assert_array_equal(out, expected)
    # tensors (int64 Mask-like, with a leading singleton dimension) work the same
    np.testing.assert_array_equal(
        viz.colorize(torch.from_numpy(mask)[None], PALETTE, ignore_color=(7, 8, 9)), out
    )


def test_colorize_rejects_labels_outside_palette():
    mask = _mask()
    mask[0, 0] = 4
    with pytest.raises(ValueError, match="outside"):
        viz.colorize(mask, PALETTE)


def test_overlay_alpha_extremes_and_blend():
    image, mask = _image(), _mask()
    np.testing.assert_array_equal(viz.overlay(image, mask, PALETTE, alpha=0.0), image)
    full = viz.overlay(image, mask, PALETTE, alpha=1.0)
    colours = viz.colorize(mask, PALETTE)
    labelled = mask != 255
    np.testing.assert_array_equal(full[labelled], colours[labelled])
    np.testing.assert_array_equal(full[~labelled], image[~labelled])  # ignore keeps the image
    half = viz.overlay(image, mask, PALETTE, alpha=0.5)
    expected = np.round(0.5 * image + 0.5 * colours.astype(np.float64))
    np.testing.assert_array_equal(half[labelled], expected[labelled])
    # a 3×H×W tensor image gives the same result
    chw = torch.from_numpy(image).permute(2, 0, 1)
    np.testing.assert_array_equal(viz.overlay(chw, torch.from_numpy(mask), PALETTE, 0.5), half)
    with pytest.raises(ValueError):
        viz.overlay(image, mask, PALETTE, alpha=1.5)
    with pytest.raises(ValueError):
        viz.overlay(_image(5, 8), mask, PALETTE)


# --- files ------------------------------------------------------------------------------


def test_save_label_png_round_trips_indices(tmp_path: Path):
    mask = _mask()
    path = viz.save_label_png(tmp_path / "nested" / "dir" / "label.png", mask, PALETTE)
    img = _open(path)
    assert img.mode == "P"
    np.testing.assert_array_equal(np.array(img), mask.astype(np.uint8))
    pal = np.array(img.getpalette()[: 256 * 3], np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(pal[: len(PALETTE)], PALETTE)
    np.testing.assert_array_equal(pal[255], (0, 0, 0))
    np.testing.assert_array_equal(np.array(img.convert("RGB")), viz.colorize(mask, PALETTE))


def test_save_overlay_legend_lists_only_present_classes(tmp_path: Path):
    image, mask = _image(48, 64), np.zeros((48, 64), np.int64)
    mask[10:20, 10:30] = 2
    mask[40:, :] = 255
    entries = viz.save_overlay(tmp_path / "a" / "overlay.png", image, mask, PALETTE, NAMES,
                               tint_background=True)  # fmt: skip
    assert entries == [(0, "background"), (2, "green")]
    img = _open(tmp_path / "a" / "overlay.png")
    assert img.height >= 48 and img.width > 64  # legend to the right
    np.testing.assert_array_equal(
        np.array(img.convert("RGB"))[:48, :64], viz.overlay(image, mask, PALETTE)
    )
    # by default the background is left untinted and out of the legend
    assert viz.save_overlay(tmp_path / "b.png", image, mask, PALETTE, NAMES) == [(2, "green")]


def test_save_panels(tmp_path: Path):
    rows = []
    for _ in range(3):
        image = torch.from_numpy(_image(40, 50)).permute(2, 0, 1)
        gt = np.zeros((40, 50), np.int64)
        gt[5:15, 5:20] = 1
        gt[0, :] = 255
        pred = np.zeros((40, 50), np.int64)
        pred[5:15, 5:25] = 3
        rows.append((image, torch.from_numpy(gt), pred))
    entries = viz.save_panels(tmp_path / "p" / "panels.png", rows, PALETTE, NAMES)
    assert entries == [(0, "background"), (1, "red"), (3, "blue")]
    img = _open(tmp_path / "p" / "panels.png")
    assert 3 * 50 < img.width < 3 * 50 + 250
    assert 3 * 40 < img.height < 3 * 40 + 80
    with pytest.raises(ValueError):
        viz.save_panels(tmp_path / "bad.png", [(_image(40, 50), gt, pred[:30])], PALETTE, NAMES)


def test_plot_confusion(tmp_path: Path):
    matrix = np.array([[50, 5, 0], [10, 30, 0], [0, 0, 0]])
    shown = viz.plot_confusion(tmp_path / "c" / "confusion.png", matrix, NAMES[:3])
    np.testing.assert_allclose(shown.sum(axis=1), [1.0, 1.0, 0.0])
    np.testing.assert_allclose(shown[0], [50 / 55, 5 / 55, 0.0])
    img = _open(tmp_path / "c" / "confusion.png")
    assert 300 <= img.width <= 1500 and 300 <= img.height <= 1500
    counts = viz.plot_confusion(tmp_path / "counts.png", matrix, NAMES[:3], normalize=False)
    np.testing.assert_array_equal(counts, matrix)
    with pytest.raises(ValueError):
        viz.plot_confusion(tmp_path / "bad.png", matrix, NAMES)


def test_plot_confusion_many_classes_unannotated(tmp_path: Path):
    rng = np.random.default_rng(0)
    c = 30
    matrix = rng.integers(0, 100, size=(c, c))
    viz.plot_confusion(tmp_path / "big.png", matrix, [f"c{i}" for i in range(c)])
    img = _open(tmp_path / "big.png")
    assert 1000 <= img.width <= 3200


def test_plot_per_class_iou(tmp_path: Path):
    path = viz.plot_per_class_iou(
        tmp_path / "i" / "iou.png",
        {"background": 0.95, "red": 0.5, "green": float("nan"), "blue": None},
        palette=PALETTE,
    )
    img = _open(path)
    assert 400 <= img.width <= 1200 and 100 <= img.height <= 800


def test_plot_curves_skips_missing_keys(tmp_path: Path):
    rows: list[dict] = [
        {"iteration": i, "loss": 2.0 / (i + 1), "lr": 1e-3 * (1 - i / 100)} for i in range(100)
    ]
    rows[5].pop("lr")
    rows[6]["loss"] = float("nan")
    rows.append({"epoch": 3, "loss": 1.0})  # no iteration: skipped
    rows += [
        {"iteration": 50, "mean_iu": 0.4, "pixel_acc": 0.8, "loss": 0.9},
        {"iteration": 100, "mean_iu": 0.6},
    ]
    counts = viz.plot_curves(tmp_path / "curves" / "curves.png", rows)
    assert counts == {"loss": 99, "lr": 99, "val_loss": 1, "mean_iu": 2, "pixel_acc": 1}
    img = _open(tmp_path / "curves" / "curves.png")
    assert 500 <= img.width <= 1200 and 400 <= img.height <= 1000
    # only training rows, or nothing at all, still make a picture
    assert viz.plot_curves(tmp_path / "train.png", rows[:10])["mean_iu"] == 0
    assert viz.plot_curves(tmp_path / "empty.png", [])["loss"] == 0
    _open(tmp_path / "empty.png")


def test_legends_work_with_the_bitmap_fallback_font(tmp_path: Path, monkeypatch):
    from PIL import ImageFont

    monkeypatch.setattr(viz.labels, "_font", lambda size=12: ImageFont.load_default_imagefont())
    image, mask = _image(20, 30), np.ones((20, 30), np.int64)
    assert viz.save_overlay(tmp_path / "o.png", image, mask, PALETTE, NAMES) == [(1, "red")]
    viz.save_panels(tmp_path / "p.png", [(image, mask, mask)], PALETTE, NAMES)
    assert _open(tmp_path / "p.png").width > 90
