"""Overlays leave the background and ignored pixels untinted and scale their legend with the
image; ``fcnseg predict --panels/--masks`` writes image | (ground truth |) prediction."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg import viz
from fcnseg.cli import main

PALETTE = [[0, 0, 0], [255, 0, 0], [0, 200, 0]]
NAMES = ["Background", "horse", "rider"]


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_all_background_overlay_is_the_photo(tmp_path: Path) -> None:
    """An all-background prediction (and ignored pixels) leaves the photo unchanged, pixel for
    pixel, with no legend; tinting everything on request darkens it (negative control)."""
    image = _image(30, 40)
    mask = np.zeros((30, 40), np.int64)
    mask[:3] = 255
    entries = viz.save_overlay(tmp_path / "o.png", image, mask, PALETTE, NAMES)
    assert entries == []
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "o.png").convert("RGB")), image)
    for names in (["_background_", "a", "b"], ["BACKGROUND", "a", "b"]):
        assert viz.background_classes(names) == [0]
    assert viz.background_classes(["sky", "building", "road"]) == []  # CamVid: all tinted
    tinted = viz.save_overlay(tmp_path / "t.png", image, mask, PALETTE, NAMES, tint_background=True)
    assert tinted == [(0, "Background")]
    out = np.array(Image.open(tmp_path / "t.png").convert("RGB"))[:30, :40]
    assert (out[3:] < image[3:]).mean() > 0.9 and np.array_equal(out[:3], image[:3])


def _swatch_box(path: Path, image_width: int, colour: list[int]) -> tuple[int, int]:
    """Height and width of the legend swatch of ``colour`` (the legend is right of the image)."""
    legend = np.array(Image.open(path).convert("RGB"))[:, image_width:]
    ys, xs = np.nonzero((legend == colour).all(-1))
    assert len(ys), "no swatch of that colour in the legend"
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


def test_legend_scales_with_the_image(tmp_path: Path) -> None:
    """A 2000×3000 image's legend swatch is ~1/60 of its shorter side (readable there); a
    200×300 image's is still at least 12 px."""
    sizes = {}
    for h, w in [(200, 300), (2000, 3000)]:
        image = np.full((h, w, 3), 128, np.uint8)
        mask = np.zeros((h, w), np.int64)
        mask[h // 4 : h // 2, w // 4 : w // 2] = 1
        path = tmp_path / f"{h}.png"
        assert viz.save_overlay(path, image, mask, PALETTE, NAMES) == [(1, "horse")]
        sizes[h] = _swatch_box(path, w, PALETTE[1])
        assert Image.open(path).width > w  # the legend is beside the image
    assert min(sizes[200]) >= 12
    assert min(sizes[2000]) >= 2000 / 60 and max(sizes[2000]) <= 2000 / 20
    assert sizes[2000][0] >= 2.5 * sizes[200][0]
    assert viz.text_size_for(3000, 4000) == 50 and viz.text_size_for(200, 300) == 12


def _find(panel: np.ndarray, cell: np.ndarray, x: int) -> bool:
    """Whether ``cell`` is pasted into ``panel`` at column ``x`` (any row)."""
    h, w = cell.shape[:2]
    return any(np.array_equal(panel[y : y + h, x : x + w], cell) for y in range(panel.shape[0] - h))


def test_predict_panels_with_and_without_masks(
    tmp_path: Path, make_fcn_checkpoint, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    """`predict --masks DIR`: image | ground truth | prediction for an image with a mask of its
    stem, image | prediction (and a warning) for one without; a mask of the wrong size is
    reported in one line and the command fails; --panels alone writes two columns."""
    ckpt = make_fcn_checkpoint(tmp_path / "m.safetensors", classes=NAMES, palette=PALETTE)
    images, masks = tmp_path / "in", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    a, b = _image(20, 120, 1), _image(24, 110, 2)  # wider than the titles
    Image.fromarray(a).save(images / "a.png")
    Image.fromarray(b).save(images / "b.png")
    gt = np.zeros((20, 120), np.uint8)
    gt[5:15, 5:20] = 2
    Image.fromarray(gt).save(masks / "a.png")
    out = tmp_path / "out"
    args = ["predict", str(ckpt), str(images), "-o", str(out), "--device", "cpu", "--no-progress"]
    with caplog.at_level(logging.WARNING, logger="fcnseg"):
        assert main([*args, "--masks", str(masks)]) == 0
    assert "no mask b.*" in caplog.text
    pad = 4  # small images: 12 px text, 4 px padding
    for name, image, truth in (("a", a, gt), ("b", b, None)):
        panel = np.array(Image.open(out / f"{name}_panel.png").convert("RGB"))
        labels = np.array(Image.open(out / f"{name}.png"))
        w = image.shape[1]
        cells = [image] + ([] if truth is None else [viz.colorize(truth, PALETTE)])
        cells.append(viz.colorize(labels, PALETTE))
        for i, cell in enumerate(cells):
            assert _find(panel, cell, pad + i * (w + pad)), (name, i)
        assert panel.shape[1] > len(cells) * w and not _find(
            panel, cells[-1], pad + len(cells) * (w + pad)
        )
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(masks / "b.png")
    capsys.readouterr()
    assert main([*args, "-o", str(tmp_path / "bad"), "--masks", str(masks)]) == 1
    err = capsys.readouterr().err
    assert "b.png is (5, 5), its image (24, 110)" in err and "could not be used" in err
    assert (tmp_path / "bad" / "b.png").is_file()  # the prediction itself is still written
    assert main([*args, "-o", str(tmp_path / "plain"), "--panels"]) == 0
    assert {p.name for p in (tmp_path / "plain").glob("*_panel.png")} == {
        "a_panel.png",
        "b_panel.png",
    }
    with pytest.raises(SystemExit, match=r"masks folder .* does not exist"):
        main([*args, "--masks", str(tmp_path / "none")])
