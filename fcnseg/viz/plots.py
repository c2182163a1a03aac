"""Plots of training and evaluation: training curves, confusion matrix, per-class IU.

Drawn with matplotlib's object-oriented API (``Figure`` rendered by Agg, never ``pyplot``), so
they work headless and leave no open figures behind. Every ``plot_*`` function creates the
parent directories of ``path`` and writes a PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fcnseg.viz._convert import ArrayLike, prepare_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_confusion", "plot_curves", "plot_per_class_iou"]


def _figure(width: float, height: float) -> Figure:
    """A new Agg-rendered figure of ``width``×``height`` inches at 100 dpi."""
    from matplotlib.figure import Figure  # imported lazily: matplotlib is slow to import

    return Figure(figsize=(width, height), dpi=100)


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG and free its contents."""
    path = prepare_path(path)
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
    """``row[key]`` as a finite float, or ``None`` when missing, non-numeric or not finite."""
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _moving_average(y: np.ndarray, window: int) -> np.ndarray:
    kernel = np.ones(window) / window
    return np.convolve(y, kernel, mode="valid")


#: ``(iterations, values)`` per logged series.
_Series = dict[str, tuple[list[float], list[float]]]


def _curve_series(log_rows: Sequence[Mapping[str, Any]]) -> _Series:
    """Split log rows into the series ``loss``, ``lr`` (training rows) and ``val_loss``,
    ``mean_iu``, ``pixel_acc`` (evaluation rows: those with ``mean_iu`` or ``pixel_acc``);
    rows without ``iteration`` and non-numeric values are skipped."""
    series: _Series = {k: ([], []) for k in ("loss", "lr", "val_loss", "mean_iu", "pixel_acc")}
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
    return series


def _plot_loss(ax: Axes, series: _Series) -> None:
    """Training loss (raw, and smoothed when long), validation loss as points and the learning
    rate on a second axis."""
    x, y = (np.array(s) for s in series["loss"])
    if len(x):
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        ax.plot(x, y, color="tab:blue", alpha=0.35 if len(x) > 20 else 1.0, lw=1, label="loss")
        if len(x) > 20:
            w = max(5, len(x) // 25)
            ax.plot(
                x[w - 1 :], _moving_average(y, w), color="tab:blue", lw=1.8, label=f"mean of {w}"
            )
    if series["val_loss"][0]:
        ax.plot(*series["val_loss"], "o", color="tab:orange", ms=4, label="val loss")
    ax.set_ylabel("loss")
    ax.set_title("training")
    handles = ax.get_legend_handles_labels()[0]
    if series["lr"][0]:
        ax_lr = ax.twinx()
        handles += ax_lr.plot(*series["lr"], color="0.5", ls="--", lw=1, label="lr")
        ax_lr.set_ylabel("learning rate", color="0.4")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=8)
    if not len(x) and not series["val_loss"][0]:
        ax.text(0.5, 0.5, "no loss logged", ha="center", va="center", transform=ax.transAxes)


def _plot_validation(ax: Axes, series: _Series) -> None:
    """Validation mean IU and pixel accuracy against the iteration."""
    for name, label, colour in (
        ("mean_iu", "mean IU", "tab:green"),
        ("pixel_acc", "pixel acc.", "tab:purple"),
    ):
        if series[name][0]:
            ax.plot(*series[name], "o-", color=colour, ms=4, lw=1.5, label=label)
    if series["mean_iu"][0] or series["pixel_acc"][0]:
        values = series["mean_iu"][1] + series["pixel_acc"][1]
        if max(values) <= 1.0:
            ax.set_ylim(0.0, 1.0)
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
    else:
        ax.text(0.5, 0.5, "no evaluation logged", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("validation")
    ax.set_xlabel("iteration")


def plot_curves(path: str | Path, log_rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Training curves from log rows: top panel training loss (raw and smoothed; validation
    loss as points) with the learning rate on a second axis, bottom panel validation mean IU
    (and pixel accuracy) against ``iteration``. A row counts as an evaluation row when it has
    ``mean_iu`` or ``pixel_acc``; rows without ``iteration`` or with non-numeric values are
    skipped. Returns the number of points drawn per series."""
    series = _curve_series(log_rows)
    fig = _figure(7.5, 6.5)
    ax_loss, ax_iu = fig.subplots(2, 1, sharex=True)
    _plot_loss(ax_loss, series)
    _plot_validation(ax_iu, series)
    fig.tight_layout()
    _save(fig, path)
    return {k: len(v[0]) for k, v in series.items()}
