"""Inference at the training's scale: a model trained on images resized to ``data.resize``
[H, W] is shown every image resized to H×W (as its training and evaluation transforms did,
aspect ratio included), and its probabilities are resized back (bilinear) to the image's size.

Checkpoints record the policy as ``train_scale`` (:func:`train_scale`); exported ONNX and
TorchScript files carry it too. Without a recorded ``resize`` (older checkpoints, or training
at the images' own sizes) images are predicted at their own size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from fcnseg.inference.tta import as_float

if TYPE_CHECKING:
    from fcnseg.config import Config

__all__ = ["resize_images", "resized_rows", "train_scale", "train_size"]

#: Output rows resized at a time by :func:`resized_rows` (bounds the memory of huge images).
ROWS = 256


def train_scale(cfg: Config) -> dict[str, Any]:
    """The scale policy of a training run, as recorded in its checkpoints: ``resize`` (the
    [H, W] every image was resized to, or ``None``), with ``scale_range`` and ``crop_size``
    (the augmentation around that scale, for the record)."""
    d = cfg.data
    return {
        "resize": list(d.resize) if d.resize else None,
        "scale_range": list(d.scale_range),
        "crop_size": list(d.crop_size) if d.crop_size else None,
    }


def train_size(policy: dict[str, Any] | None) -> tuple[int, int] | None:
    """The H×W a recorded policy resizes images to (``None``: their own size)."""
    resize = (policy or {}).get("resize")
    return (int(resize[0]), int(resize[1])) if resize else None


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A B×3×H×W batch (uint8 or float in [0, 1]) resized to ``size``, as float: bilinear,
    antialiased (the training transform's ``Resize``)."""
    return F.interpolate(
        as_float(images), size=size, mode="bilinear", antialias=True, align_corners=False
    )


def resized_rows(
    probs: torch.Tensor, size: tuple[int, int], rows: int = ROWS
) -> Iterator[tuple[int, torch.Tensor]]:
    """``probs`` (C×h×w) resized bilinearly to ``size`` in strips of ``rows`` output rows, as
    ``(first row, C×rows×W)``: together they equal ``F.interpolate(..., mode="bilinear")``,
    but only one strip of the full-size result is held at a time."""
    h, w = size
    p = probs[None]
    # Output pixel centres in grid_sample's [-1, 1] coordinates (align_corners=False); the
    # border padding clamps sources as interpolate does.
    xs = (torch.arange(w, device=p.device, dtype=p.dtype) * 2 + 1) / w - 1
    for top in range(0, h, rows):
        n = min(rows, h - top)
        ys = (torch.arange(top, top + n, device=p.device, dtype=p.dtype) * 2 + 1) / h - 1
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], -1)[None]
        strip = F.grid_sample(p, grid, mode="bilinear", padding_mode="border", align_corners=False)
        yield top, strip[0]
