"""Test-time augmentation: the mean of the softmax over horizontal flips and rescalings."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["as_float", "tta_probabilities"]


def as_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 → float in [0, 1]; float images pass through."""
    return image.float() / 255 if image.dtype == torch.uint8 else image


def tta_probabilities(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    *,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
) -> torch.Tensor:
    """Test-time augmentation: the mean of the softmax over horizontal flips and rescalings.

    ``logits_fn`` maps a B×3×h×w batch (float in [0, 1]; uint8 ``images`` are converted) to
    B×C×h×w logits; each scale's probabilities are resized back to the input size (bilinear)
    before averaging. With ``flip=False, scales=(1,)`` this is ``softmax(logits_fn(images))``."""
    if not scales:
        raise ValueError("scales must name at least one scale, e.g. (1.0,)")
    images = as_float(images)
    h, w = images.shape[-2:]
    total: torch.Tensor | None = None
    count = 0
    for s in scales:
        x = images
        if s != 1.0:
            size = (max(1, round(h * s)), max(1, round(w * s)))
            x = F.interpolate(images, size=size, mode="bilinear", antialias=s < 1)
        for flipped in (False, True) if flip else (False,):
            p = logits_fn(x.flip(-1) if flipped else x).float().softmax(1)
            p = p.flip(-1) if flipped else p
            if p.shape[-2:] != (h, w):
                p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
            total = p if total is None else total + p
            count += 1
    return total / count  # type: ignore[operator]
