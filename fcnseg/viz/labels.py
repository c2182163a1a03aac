"""Pictures of segmentations and of training: colour masks, overlays, panels, plots.

Images are drawn with PIL; plots with matplotlib's object-oriented API (``Figure`` rendered by
Agg, never ``pyplot``), so everything works headless and leaves no open figures behind. Every
``save_*``/``plot_*`` function creates the parent directories of ``path`` and writes a PNG.

Images may be uint8 H×W×3 arrays or 3×H×W tensors (floats are taken to be in [0, 1]); masks
H×W integer arrays or tensors whose values are class indices or ``ignore_index``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from fcnseg.data.base import IGNORE_INDEX

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "colorize",
    "label_image",
    "overlay",
    "plot_confusion",
    "plot_curves",
    "plot_per_class_iou",
    "save_label_png",
    "save_overlay",
    "save_panels",
]

RGB = tuple[int, int, int]
ArrayLike = np.ndarray | torch.Tensor

#: Colour of ignored pixels in panels (VOC's boundary colour, distinct from black background).
PANEL_IGNORE_COLOR: RGB = (224, 224, 192)
_WHITE: RGB = (255, 255, 255)
_PAD = 4


# --- conversions ------------------------------------------------------------------------


def _image_array(image: ArrayLike) -> np.ndarray:
    """Any supported image as a uint8 H×W×3 array."""
    if isinstance(image, torch.Tensor):
        arr = image.detach().cpu()
        if arr.dim() == 3 and arr.shape[0] in (1, 3):
            arr = arr.permute(1, 2, 0)
        arr = arr.numpy()
    else:
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[-1] not in (1, 3) and arr.shape[0] in (1, 3):
            arr = arr.transpose(1, 2, 0)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"expected an H×W×3 or 3×H×W image, got shape {tuple(np.shape(image))}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype != np.uint8:
        scale = 255.0 if np.issubdtype(arr.dtype, np.floating) else 1.0
        arr = np.clip(np.asarray(arr, np.float64) * scale, 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(arr)


def _mask_array(mask: ArrayLike) -> np.ndarray:
    """Any supported mask as an int64 H×W array (a leading singleton dimension is dropped)."""
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise ValueError(f"expected an integer H×W mask, got {arr.dtype} of shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _palette_array(palette: Sequence[Sequence[int]]) -> np.ndarray:
    pal = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    if pal.size and (pal.min() < 0 or pal.max() > 255):
        raise ValueError("palette colours must be RGB triples in 0–255")
    return pal.astype(np.uint8)


def _check_labels(mask: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """Boolean map of labelled (non-ignored) pixels; raises on labels outside the palette."""
    valid = mask != ignore_index if ignore_index is not None else np.ones(mask.shape, bool)
    labels = mask[valid]
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise ValueError(
            f"mask has label(s) {np.unique(bad)[:5].tolist()} outside [0, {num_classes}) "
            f"and not the ignore index {ignore_index}"
        )
    return valid


def _present(mask: np.ndarray, ignore_index: int | None) -> list[int]:
    values = np.unique(mask)
    return [int(v) for v in values if v != ignore_index]


def _prepare(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --- masks and overlays -----------------------------------------------------------------


def colorize(
    mask: ArrayLike,
    palette: Sequence[Sequence[int]],
    ignore_index: int = IGNORE_INDEX,
    ignore_color: Sequence[int] = (0, 0, 0),
) -> np.ndarray:
    """Class-index mask → uint8 H×W×3 colours: label ``k`` gets ``palette[k]``, ignored pixels
    ``ignore_color``. Raises ``ValueError`` on labels the palette does not cover."""
    m = _mask_array(mask)
    pal = _palette_array(palette)
    valid = _check_labels(m, len(pal), ignore_index)
    lut = np.concatenate([pal, _palette_array([ignore_color])])
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
    img = _image_array(image)
    m = _mask_array(mask)
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
    m = _mask_array(mask)
    pal = _palette_array(palette)
    if len(pal) > 255:
        raise ValueError(f"a palette PNG holds at most 255 classes besides 255, got {len(pal)}")
    _check_labels(m, len(pal), ignore_index)
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
    path = _prepare(path)
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
    m = _mask_array(mask)
    present = [(k, _class_name(class_names, k)) for k in _present(m, ignore_index)]
    legend = _legend([(palette[k], name) for k, name in present])
    _beside(Image.fromarray(blended), legend).save(_prepare(path))
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
        img, g, p = _image_array(image), _mask_array(gt), _mask_array(pred)
        if not img.shape[:2] == g.shape == p.shape:
            raise ValueError(
                f"row {i}: image {img.shape[:2]}, ground truth {g.shape} and prediction "
                f"{p.shape} differ in size"
            )
        has_ignore = has_ignore or bool((g == ignore_index).any() or (p == ignore_index).any())
        present.update(_present(g, ignore_index) + _present(p, ignore_index))
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
    _beside(grid, _legend(swatches)).save(_prepare(path))
    return entries


# --- matplotlib plots -------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure  # imported lazily: matplotlib is slow to import

    return Figure(figsize=(width, height), dpi=100)


def _save(fig: Figure, path: str | Path) -> Path:
    path = _prepare(path)
    fig.savefig(path, format="png")
    fig.clear()
    return path


def plot_confusion(
    path: str | Path,
    matrix: ArrayLike,
    class_names: Sequence[str],
    normalize: bool = True,
) -> np.ndarray:
    """Plot a C×C confusion matrix (rows: ground truth, columns: prediction) as a heat map,
    row-normalised when ``normalize`` (empty rows stay 0) and annotated when C ≤ 25. Returns
    the matrix as drawn."""
    m = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    m = m.astype(np.float64)
    c = len(class_names)
    if m.shape != (c, c):
        raise ValueError(f"confusion matrix has shape {m.shape}, expected ({c}, {c})")
    if normalize:
        totals = m.sum(axis=1, keepdims=True)
        m = np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)
    side = float(np.clip(0.45 * c + 3.0, 4.0, 30.0))
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(float(m.max()), 1.0)
    im = ax.imshow(m, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fontsize = float(np.clip(300.0 / max(c, 1), 3.0, 9.0))
    ax.set_xticks(range(c), list(class_names), rotation=45, ha="right", fontsize=fontsize)
    ax.set_yticks(range(c), list(class_names), fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion matrix" + (" (row-normalised)" if normalize else ""))
    if c <= 25:
        for (i, j), v in np.ndenumerate(m):
            text = f"{v:.2f}" if normalize else f"{v:.0f}"
            colour = "white" if v > 0.5 * vmax else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=fontsize - 1)
    fig.tight_layout()
    _save(fig, path)
    return m


def plot_per_class_iou(
    path: str | Path,
    per_class_iu: Mapping[str, float | None],
    palette: Sequence[Sequence[int]] | None = None,
) -> Path:
    """Horizontal bar chart of per-class IU (first class on top) with the mean as a dashed
    line; missing/NaN values (class absent) are marked "n/a". ``palette`` colours the bars."""
    names = list(per_class_iu)
    values = np.array(
        [np.nan if v is None else float(v) for v in per_class_iu.values()], dtype=np.float64
    )
    n = len(names)
    fig = _figure(7.0, 0.28 * max(n, 1) + 1.4)
    ax = fig.add_subplot()
    finite = np.isfinite(values)
    top = max(1.0, float(values[finite].max())) if finite.any() else 1.0
    colours: Any = (
        [tuple(ch / 255 for ch in palette[i]) if i < len(palette) else "tab:blue" for i in range(n)]
        if palette is not None
        else "tab:blue"
    )
    ax.barh(range(n), np.where(finite, values, 0.0), color=colours, edgecolor="0.3", linewidth=0.5)
    for i, v in enumerate(values):
        label = f"{v:.3f}" if math.isfinite(v) else "n/a"
        ax.text((v if math.isfinite(v) else 0.0) + 0.01 * top, i, label, va="center", fontsize=7)
    if finite.any():
        mean = float(values[finite].mean())
        ax.axvline(mean, color="0.2", linestyle="--", linewidth=1, label=f"mean {mean:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.12 * top)
    ax.set_xlabel("IU")
    ax.set_title("per-class IU")
    fig.tight_layout()
    return _save(fig, path)


def _number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _moving_average(y: np.ndarray, window: int) -> np.ndarray:
    kernel = np.ones(window) / window
    return np.convolve(y, kernel, mode="valid")


def plot_curves(path: str | Path, log_rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Training curves from log rows: top panel training loss (raw and smoothed; validation
    loss as points) with the learning rate on a second axis, bottom panel validation mean IU
    (and pixel accuracy) against ``iteration``. A row counts as an evaluation row when it has
    ``mean_iu`` or ``pixel_acc``; rows without ``iteration`` or with non-numeric values are
    skipped. Returns the number of points drawn per series."""
    series: dict[str, tuple[list[float], list[float]]] = {
        k: ([], []) for k in ("loss", "lr", "val_loss", "mean_iu", "pixel_acc")
    }
    for row in log_rows:
        it = _number(row, "iteration")
        if it is None:
            continue
        is_eval = _number(row, "mean_iu") is not None or _number(row, "pixel_acc") is not None
        keys = {"loss": "val_loss", "mean_iu": "mean_iu", "pixel_acc": "pixel_acc"}
        if not is_eval:
            keys = {"loss": "loss", "lr": "lr"}
        for key, name in keys.items():
            v = _number(row, key)
            if v is not None:
                series[name][0].append(it)
                series[name][1].append(v)

    fig = _figure(7.5, 6.5)
    ax_loss, ax_iu = fig.subplots(2, 1, sharex=True)
    x, y = (np.array(s) for s in series["loss"])
    if len(x):
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        ax_loss.plot(x, y, color="tab:blue", alpha=0.35 if len(x) > 20 else 1.0, lw=1, label="loss")
        if len(x) > 20:
            w = max(5, len(x) // 25)
            ax_loss.plot(
                x[w - 1 :], _moving_average(y, w), color="tab:blue", lw=1.8, label=f"mean of {w}"
            )
    if series["val_loss"][0]:
        ax_loss.plot(*series["val_loss"], "o", color="tab:orange", ms=4, label="val loss")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training")
    handles = ax_loss.get_legend_handles_labels()[0]
    if series["lr"][0]:
        ax_lr = ax_loss.twinx()
        handles += ax_lr.plot(*series["lr"], color="0.5", ls="--", lw=1, label="lr")
        ax_lr.set_ylabel("learning rate", color="0.4")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    if handles:
        ax_loss.legend(handles=handles, loc="upper right", fontsize=8)
    if not len(x) and not series["val_loss"][0]:
        ax_loss.text(
            0.5, 0.5, "no loss logged", ha="center", va="center", transform=ax_loss.transAxes
        )
    for name, label, colour in (
        ("mean_iu", "mean IU", "tab:green"),
        ("pixel_acc", "pixel acc.", "tab:purple"),
    ):
        if series[name][0]:
            ax_iu.plot(*series[name], "o-", color=colour, ms=4, lw=1.5, label=label)
    if series["mean_iu"][0] or series["pixel_acc"][0]:
        values = series["mean_iu"][1] + series["pixel_acc"][1]
        if max(values) <= 1.0:
            ax_iu.set_ylim(0.0, 1.0)
        ax_iu.legend(loc="lower right", fontsize=8)
        ax_iu.grid(alpha=0.3)
    else:
        ax_iu.text(
            0.5, 0.5, "no evaluation logged", ha="center", va="center", transform=ax_iu.transAxes
        )
    ax_iu.set_ylabel("validation")
    ax_iu.set_xlabel("iteration")
    fig.tight_layout()
    _save(fig, path)
    return {k: len(v[0]) for k, v in series.items()}
