"""Pictures of segmentations and of training: colour masks, overlays, panels, plots.

:mod:`fcnseg.viz.labels` draws masks with PIL (colour masks, overlays, palette PNGs, legends,
panels); :mod:`fcnseg.viz.plots` draws training curves, confusion matrices and per-class IU
with matplotlib's object-oriented API (headless, no open figures left behind). Every
``save_*``/``plot_*`` function creates the parent directories of ``path`` and writes a PNG.

Images may be uint8 H×W×3 arrays or 3×H×W tensors (floats are taken to be in [0, 1]); masks
H×W integer arrays or tensors whose values are class indices or ``ignore_index``.
"""

from __future__ import annotations

from fcnseg.viz.labels import (
    BACKGROUND_NAMES,
    PANEL_IGNORE_COLOR,
    background_classes,
    colorize,
    label_image,
    overlay,
    save_label_png,
    save_overlay,
    save_panels,
    text_size_for,
)
from fcnseg.viz.plots import plot_confusion, plot_curves, plot_per_class_iou

__all__ = [
    "BACKGROUND_NAMES",
    "PANEL_IGNORE_COLOR",
    "background_classes",
    "colorize",
    "label_image",
    "overlay",
    "plot_confusion",
    "plot_curves",
    "plot_per_class_iou",
    "save_label_png",
    "save_overlay",
    "save_panels",
    "text_size_for",
]
