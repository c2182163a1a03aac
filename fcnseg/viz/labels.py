"""Class-index masks as pictures: colour masks, overlays, palette PNGs, legends and panels.

Drawn with PIL. Every ``save_*`` function creates the parent directories of ``path`` and writes
a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fcnseg.data.base import IGNORE_INDEX
from fcnseg.viz._convert import (
    RGB,
    ArrayLike,
    check_labels,
    image_array,
    mask_array,
    palette_array,
    prepare_path,
    present_labels,
)

__all__ = [
    "PANEL_IGNORE_COLOR",
    "colorize",
    "label_image",
    "overlay",
    "save_label_png",
    "save_overlay",
    "save_panels",
]

#: Colour of ignored pixels in panels (VOC's boundary colour, distinct from black background).
PANEL_IGNORE_COLOR: RGB = (224, 224, 192)
_WHITE: RGB = (255, 255, 255)
_PAD = 4

# --- masks and overlays -----------------------------------------------------------------


def colorize(
    mask: ArrayLike,
    palette: Sequence[Sequence[int]],
    ignore_index: int = IGNORE_INDEX,
    ignore_color: Sequence[int] = (0, 0, 0),
) -> np.ndarray:
    """Class-index mask → uint8 H×W×3 colours: label ``k`` gets ``palette[k]``, ignored pixels
    ``ignore_color``. Raises ``ValueError`` on labels the palette does not cover."""
    m = mask_array(mask)
    pal = palette_array(palette)
    valid = check_labels(m, len(pal), ignore_index)
    lut = np.concatenate([pal, palette_array([ignore_color])])
    return lut[np.where(valid, m, len(pal))]


def overlay(
    image: ArrayLike,
    mask: ArrayLike,
    palette: Sequence[Sequence[int]],
    alpha: float = 0.5,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """``(1 − alpha)·image + alpha·colorize(mask)`` as uint8 H×W×3; ignored pixels keep the
    image. ``alpha=0`` returns the image, ``alpha=1`` the colour mask."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = image_array(image)
    m = mask_array(mask)
    if img.shape[:2] != m.shape:
        raise ValueError(f"image is {img.shape[:2]} but mask is {m.shape}")
    colours = colorize(m, palette, ignore_index)
    blend = (1.0 - alpha) * img.astype(np.float64) + alpha * colours.astype(np.float64)
    out = np.where((m != ignore_index)[..., None], blend.round(), img)
    return out.astype(np.uint8)


def label_image(
    mask: ArrayLike,
    palette: Sequence[Sequence[int]],
    ignore_index: int = IGNORE_INDEX,
) -> Image.Image:
    """``mask`` as a palette-mode ("P") PIL image: pixel values are the class indices, the
    attached palette colours them (the VOC label format); other entries, 255 included, are black.
    """
    m = mask_array(mask)
    pal = palette_array(palette)
    if len(pal) > 255:
        raise ValueError(f"a palette PNG holds at most 255 classes besides 255, got {len(pal)}")
    check_labels(m, len(pal), ignore_index)
    if m.size and m.max() > 255:
        raise ValueError(f"ignore index {ignore_index} does not fit a palette PNG (0–255)")
    table = np.zeros((256, 3), np.uint8)
    table[: len(pal)] = pal
    img = Image.fromarray(m.astype(np.uint8))
    img.putpalette(table.ravel().tolist())  # an "L" image with a palette becomes "P"
    return img


def save_label_png(
    path: str | Path,
    mask: ArrayLike,
    palette: Sequence[Sequence[int]],
    ignore_index: int = IGNORE_INDEX,
) -> Path:
    """Write ``mask`` as a palette PNG of class indices (see :func:`label_image`)."""
    path = prepare_path(path)
    label_image(mask, palette, ignore_index).save(path)
    return path


# --- PIL composition --------------------------------------------------------------------


@lru_cache(maxsize=8)
def _font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_bbox(text: str) -> tuple[int, int, int, int]:
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=_font())
    return tuple(int(v) for v in box)  # type: ignore[return-value]


def _text_size(text: str) -> tuple[int, int]:
    left, top, right, bottom = _text_bbox(text)
    return right - left, bottom - top


def _draw_text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, align: str) -> None:
    """Draw ``text`` left-aligned (``align="l"``) or centred (``"c"``) at ``xy``, vertically
    centred on ``xy[1]`` (without ``anchor=``, which bitmap fonts lack)."""
    left, top, right, bottom = _text_bbox(text)
    x = xy[0] - left if align == "l" else xy[0] - (left + right) // 2
    draw.text((x, xy[1] - (top + bottom) // 2), text, fill=(0, 0, 0), font=_font())


def _legend(entries: Sequence[tuple[Sequence[int], str]]) -> Image.Image | None:
    """A white column of colour swatches with names, or ``None`` when there are no entries."""
    if not entries:
        return None
    row = max(14, *(_text_size(name)[1] for _, name in entries)) + 4
    swatch = row - 4
    width = _PAD + swatch + _PAD + max(_text_size(name)[0] for _, name in entries) + _PAD
    img = Image.new("RGB", (width, _PAD + row * len(entries) + _PAD), _WHITE)
    draw = ImageDraw.Draw(img)
    for i, (colour, name) in enumerate(entries):
        y = _PAD + i * row
        draw.rectangle(
            (_PAD, y, _PAD + swatch - 1, y + swatch - 1),
            fill=tuple(int(c) for c in colour),
            outline=(96, 96, 96),
        )
        _draw_text(draw, (2 * _PAD + swatch, y + swatch // 2), name, "l")
    return img


def _beside(left: Image.Image, right: Image.Image | None) -> Image.Image:
    if right is None:
        return left
    out = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), _WHITE)
    out.paste(left, (0, 0))
    out.paste(right, (left.width, 0))
    return out


def _class_name(class_names: Sequence[str], index: int) -> str:
    return class_names[index] if index < len(class_names) else f"class {index}"


def save_overlay(
    path: str | Path,
    image: ArrayLike,
    mask: ArrayLike,
    palette: Sequence[Sequence[int]],
    class_names: Sequence[str],
    alpha: float = 0.5,
    ignore_index: int = IGNORE_INDEX,
) -> list[tuple[int, str]]:
    """Write the overlay of ``mask`` on ``image`` with a legend of the classes present in the
    mask (swatch + name) to its right. Returns the legend entries ``[(index, name), ...]``."""
    blended = overlay(image, mask, palette, alpha, ignore_index)
    m = mask_array(mask)
    present = [(k, _class_name(class_names, k)) for k in present_labels(m, ignore_index)]
    legend = _legend([(palette[k], name) for k, name in present])
    _beside(Image.fromarray(blended), legend).save(prepare_path(path))
    return present


def save_panels(
    path: str | Path,
    rows: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike]],
    palette: Sequence[Sequence[int]],
    class_names: Sequence[str],
    ignore_index: int = IGNORE_INDEX,
    ignore_color: Sequence[int] = PANEL_IGNORE_COLOR,
) -> list[tuple[int, str]]:
    """Write a grid with one ``image | ground truth | prediction`` row per sample, column
    titles on top and a legend of every class present (plus "ignore" if any) on the right.
    Returns the class legend entries ``[(index, name), ...]``."""
    if not rows:
        raise ValueError("save_panels needs at least one (image, gt, prediction) row")
    cells: list[list[np.ndarray]] = []
    present: set[int] = set()
    has_ignore = False
    for i, (image, gt, pred) in enumerate(rows):
        img, g, p = image_array(image), mask_array(gt), mask_array(pred)
        if not img.shape[:2] == g.shape == p.shape:
            raise ValueError(
                f"row {i}: image {img.shape[:2]}, ground truth {g.shape} and prediction "
                f"{p.shape} differ in size"
            )
        has_ignore = has_ignore or bool((g == ignore_index).any() or (p == ignore_index).any())
        present.update(present_labels(g, ignore_index) + present_labels(p, ignore_index))
        colour = [colorize(x, palette, ignore_index, ignore_color) for x in (g, p)]
        cells.append([img, *colour])
    titles = ("image", "ground truth", "prediction")
    widths = [max(max(r[c].shape[1] for r in cells), _text_size(titles[c])[0]) for c in range(3)]
    heights = [max(c.shape[0] for c in r) for r in cells]
    header = _text_size("".join(titles))[1] + 2 * _PAD
    grid = Image.new(
        "RGB",
        (sum(widths) + 4 * _PAD, header + sum(heights) + (len(cells) + 1) * _PAD - _PAD),
        _WHITE,
    )
    draw = ImageDraw.Draw(grid)
    x = _PAD
    for c, title in enumerate(titles):
        _draw_text(draw, (x + widths[c] // 2, header // 2), title, "c")
        y = header
        for r, row in enumerate(cells):
            grid.paste(Image.fromarray(row[c]), (x, y))
            y += heights[r] + _PAD
        x += widths[c] + _PAD
    entries = [(k, _class_name(class_names, k)) for k in sorted(present)]
    swatches: list[tuple[Sequence[int], str]] = [(palette[k], name) for k, name in entries]
    if has_ignore:
        swatches.append((ignore_color, "ignore"))
    _beside(grid, _legend(swatches)).save(prepare_path(path))
    return entries
