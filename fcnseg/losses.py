"""Per-pixel softmax cross-entropy as in FCN, with the paper's loss sampling and class balancing."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.data.base import IGNORE_INDEX

__all__ = ["CLASS_WEIGHTINGS", "SegmentationLoss", "median_frequency_weights"]

#: ``train.class_weights`` computed from the training masks: name → the power applied to
#: :func:`median_frequency_weights` (1: SegNet's balancing; 0.5: its square root, which lifts
#: rare classes less and so trades less precision for their recall).
CLASS_WEIGHTINGS: dict[str, float] = {"median_frequency": 1.0, "sqrt_median_frequency": 0.5}


class SegmentationLoss(nn.Module):
    """Multinomial logistic loss summed or averaged over the non-ignored pixels.

    Args:
        ignore_index: target label contributing nothing (and not counted in the mean).
        reduction: ``"sum"`` is the paper's loss (a sum over all pixels, hence its tiny learning
            rates, e.g. 1e-10 with unnormalised input); ``"mean"`` divides by the total weight of
            the counted pixels, which without weights is their number. It is the weighted mean of
            ``F.cross_entropy``: ``Σ w_i l_i / Σ w_i``, ``w_i`` = class weight × ``weight_map``.
        class_weights: a length-C weight per class (e.g. :func:`median_frequency_weights`).
        sample_prob: the paper's loss sampling (§4.3): in training mode each pixel's loss is kept
            independently with probability ``p``. ``"mean"`` normalises by the kept pixels' weight;
            ``"sum"`` is NOT rescaled by ``1/p`` (as in the paper: its expectation is ``p`` times
            the full sum, which the learning rate absorbs). In eval mode all pixels count.

    ``forward(logits, target, weight_map=None)``: logits N×C×H×W, target N×H×W int, optional
    ``weight_map`` N×H×W per-pixel weights (e.g. U-Net border weights) multiplying each pixel's
    loss. If no pixel counts (all ignored or sampled away), the loss is 0 (with a graph), not NaN.
    """

    class_weights: torch.Tensor | None

    def __init__(
        self,
        *,
        ignore_index: int = IGNORE_INDEX,
        reduction: str = "mean",
        class_weights: torch.Tensor | None = None,
        sample_prob: float = 1.0,
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        if not 0.0 < sample_prob <= 1.0:
            raise ValueError(f"sample_prob must be in (0, 1], got {sample_prob}")
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
            if class_weights.dim() != 1 or bool((class_weights < 0).any()):
                raise ValueError("class_weights must be a 1-D tensor of non-negative weights")
        self.ignore_index = int(ignore_index)
        self.reduction = reduction
        self.sample_prob = float(sample_prob)
        self.register_buffer("class_weights", class_weights)

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        weight_map: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if logits.dim() != 4 or target.dim() != 3:
            raise ValueError(
                f"expected logits N×C×H×W and target N×H×W, got {tuple(logits.shape)} and "
                f"{tuple(target.shape)}"
            )
        n, c, h, w = logits.shape
        if tuple(target.shape) != (n, h, w):
            raise ValueError(
                f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}"
            )
        weights = self.class_weights
        if weights is not None:
            if weights.numel() != c:
                raise ValueError(f"{weights.numel()} class weights for {c} classes")
            weights = weights.to(logits.dtype)
        target = target.long()
        losses = F.cross_entropy(
            logits, target, weight=weights, ignore_index=self.ignore_index, reduction="none"
        )  # includes the class weight; 0 at ignored pixels
        counted = target != self.ignore_index
        if self.training and self.sample_prob < 1.0:
            counted = counted & (torch.rand(target.shape, device=target.device) < self.sample_prob)
        pixel_weight = counted.to(losses.dtype)
        if weights is not None:
            pixel_weight = pixel_weight * weights[torch.where(counted, target, 0)]
        if weight_map is not None:
            if tuple(weight_map.shape) != (n, h, w):
                raise ValueError(
                    f"weight_map shape {tuple(weight_map.shape)} does not match target "
                    f"{tuple(target.shape)}"
                )
            losses = losses * weight_map.to(losses.dtype)
            pixel_weight = pixel_weight * weight_map.to(losses.dtype)
        total = (losses * counted).sum()
        if self.reduction == "sum":
            return total
        # Weighted mean; an empty denominator means an all-zero numerator, so the result is 0.
        return total / pixel_weight.sum().clamp_min(torch.finfo(losses.dtype).tiny)

    def extra_repr(self) -> str:
        weighted = self.class_weights is not None
        return (
            f"reduction={self.reduction!r}, ignore_index={self.ignore_index}, "
            f"sample_prob={self.sample_prob:g}, class_weights={weighted}"
        )


def median_frequency_weights(
    masks: Iterable[torch.Tensor], num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """SegNet's median-frequency balancing: ``w_c = median(freq) / freq(c)``.

    ``freq(c)`` = pixels of class ``c`` / total pixels of the images in which ``c`` appears;
    pixels labelled ``ignore_index`` are counted in neither. Each tensor of ``masks`` is one H×W
    label image, or a batch N×H×W of them. The median is taken over the classes that appear
    (the mean of the two middle values for an even count, as ``numpy.median``); classes that
    never appear get weight 0 (they contribute no loss anyway). Returns float32, length C.
    """
    counts = torch.zeros(num_classes, dtype=torch.float64)
    image_pixels = torch.zeros(num_classes, dtype=torch.float64)
    for mask in masks:
        batch = torch.as_tensor(mask)
        if batch.dim() == 2:
            batch = batch.unsqueeze(0)
        if batch.dim() != 3:
            raise ValueError(f"expected H×W or N×H×W masks, got shape {tuple(batch.shape)}")
        flat = batch.reshape(batch.shape[0], -1).to("cpu", torch.int64)
        for labels in flat:
            labels = labels[labels != ignore_index]
            if labels.numel() == 0:
                continue
            if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
                raise ValueError(
                    f"mask labels outside [0, {num_classes}) and not ignore_index {ignore_index}"
                )
            per_class = torch.bincount(labels, minlength=num_classes).to(torch.float64)
            counts += per_class
            image_pixels += (per_class > 0) * labels.numel()
    seen = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    if bool(seen.any()):
        freq = counts[seen] / image_pixels[seen]
        sorted_freq = freq.sort().values
        k = sorted_freq.numel()
        median = (sorted_freq[(k - 1) // 2] + sorted_freq[k // 2]) / 2
        weights[seen] = median / freq
    return weights.float()
