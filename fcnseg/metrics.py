"""The FCN paper's four segmentation metrics (§5), from one confusion matrix over the whole set.

Accumulate every batch into a single :class:`ConfusionMatrix` and call ``compute()`` once at the
end. Averaging per-batch (or per-image) scores gives a different, wrong number: the paper's
ratios are of pixel counts summed over the set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from fcnseg.data.base import IGNORE_INDEX

__all__ = ["ConfusionMatrix", "absent_note"]


class ConfusionMatrix:
    """Pixel confusion matrix ``n[i, j]`` = pixels of ground-truth class ``i`` predicted ``j``.

    ``update`` drops pixels whose target is ``ignore_index``; any other target or prediction
    outside ``[0, num_classes)`` is an error. The counts are int64 on ``device`` (put it on the
    GPU with the predictions to avoid transfers; ``all_reduce`` needs it where the process
    group's backend works, e.g. CUDA for NCCL).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        device: torch.device | str | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` labels N×H×W (or logits N×C×H×W, argmax over C), ``target`` N×H×W.

        Any matching shapes work (e.g. a single H×W image with H×W labels).
        """
        if pred.dim() == target.dim() + 1:
            if pred.shape[1] != self.num_classes:
                raise ValueError(
                    f"logits have {pred.shape[1]} channels, expected {self.num_classes} classes"
                )
            pred = pred.argmax(1)
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} does not match target {tuple(target.shape)}"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError("predictions and targets must be integer labels (or logits)")
        device = self.matrix.device
        target = target.to(device=device, dtype=torch.int64).reshape(-1)
        pred = pred.to(device=device, dtype=torch.int64).reshape(-1)
        if target.numel() == 0:
            return
        valid = target != self.ignore_index
        # Range checks with one host sync: min/max of the labels at counted pixels.
        t_lo, t_hi, p_lo, p_hi = torch.stack(
            [*torch.where(valid, target, 0).aminmax(), *torch.where(valid, pred, 0).aminmax()]
        ).tolist()
        c = self.num_classes
        if min(t_lo, p_lo) < 0 or max(t_hi, p_hi) >= c:
            raise ValueError(
                f"labels outside [0, {c}) (and not ignore_index {self.ignore_index}): targets "
                f"in [{t_lo}, {t_hi}], predictions in [{p_lo}, {p_hi}]"
            )
        # Ignored pixels go to an extra bin (cheaper than boolean indexing), then dropped.
        index = torch.where(valid, target * c + pred, c * c)
        counts = torch.bincount(index, minlength=c * c + 1)[: c * c]
        self.matrix += counts.view(c, c)

    def reset(self) -> None:
        """Zero all counts."""
        self.matrix.zero_()

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add ``other``'s counts into this one (e.g. from another worker); returns ``self``."""
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"cannot merge a {other.num_classes}-class matrix into a "
                f"{self.num_classes}-class one"
            )
        self.matrix += other.matrix.to(self.matrix.device)
        return self

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the counts over all processes when ``torch.distributed`` is initialised (no-op
        otherwise); returns ``self``. Call once, after the last ``update``."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        return self

    def compute(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """The paper's metrics (§5) from the accumulated counts, as Python floats.

        With ``n_ij`` pixels of class ``i`` predicted ``j``, ``t_i = Σ_j n_ij`` and
        ``IU_i = n_ii / (t_i + Σ_j n_ji − n_ii)``:

        - ``pixel_acc`` = Σ_i n_ii / Σ_i t_i
        - ``mean_acc`` = (1/n_cl) Σ_i n_ii / t_i
        - ``mean_iu`` = (1/n_cl) Σ_i IU_i
        - ``fw_iu`` = (Σ_k t_k)^-1 Σ_i t_i · IU_i

        Which classes count (``n_cl``): a class absent from both ground truth and predictions
        has no defined score and is left out of every mean (its per-class values are NaN). A
        class present only in predictions (``t_i = 0``, false positives only) counts in
        ``mean_iu`` with IU 0, but not in ``mean_acc`` (its accuracy 0/0 is undefined, NaN); it
        adds nothing to ``fw_iu`` (weight ``t_i = 0``). ``present`` lists the classes counted in
        ``mean_iu`` (those in ground truth or predictions), ``in_ground_truth`` those with
        ``t_i > 0`` (see :func:`absent_note`). With no pixels at all, every metric is NaN.

        ``per_class_iu``/``per_class_acc``/``present`` are dicts keyed by class name when
        ``class_names`` is given, else lists indexed by class.
        """
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names given for {self.num_classes} classes")
        n = self.matrix.detach().to("cpu", torch.float64)
        tp = n.diagonal()
        gt = n.sum(1)  # t_i
        predicted = n.sum(0)  # Σ_j n_ji
        union = gt + predicted - tp
        total = gt.sum()
        nan = torch.tensor(math.nan, dtype=torch.float64)
        acc = torch.where(gt > 0, tp / gt.clamp_min(1), nan)
        iu = torch.where(union > 0, tp / union.clamp_min(1), nan)
        in_gt = gt > 0
        present = union > 0

        def mean(values: torch.Tensor, mask: torch.Tensor) -> float:
            return float(values[mask].mean()) if bool(mask.any()) else math.nan

        if total > 0:
            pixel_acc = float(tp.sum() / total)
            fw_iu = float((gt[in_gt] * iu[in_gt]).sum() / total)
        else:
            pixel_acc = fw_iu = math.nan

        def per_class(values: list[Any]) -> dict[str, Any] | list[Any]:
            if class_names is None:
                return values
            return dict(zip(class_names, values, strict=True))

        return {
            "pixel_acc": pixel_acc,
            "mean_acc": mean(acc, in_gt),
            "mean_iu": mean(iu, present),
            "fw_iu": fw_iu,
            "per_class_iu": per_class(iu.tolist()),
            "per_class_acc": per_class(acc.tolist()),
            "present": per_class(present.tolist()),
            "in_ground_truth": per_class(in_gt.tolist()),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.num_classes}, "
            f"ignore_index={self.ignore_index}, pixels={int(self.matrix.sum())})"
        )


def absent_note(metrics: dict[str, Any]) -> str:
    """``""``, or a note naming the classes absent from the ground truth of ``metrics`` (from
    :meth:`ConfusionMatrix.compute`): their IoU is undefined or 0, so the mean IU is over the
    others — a perfect mean IU over one class of two is not a perfect model."""
    flags = metrics.get("in_ground_truth")
    if flags is None:
        return ""
    items = flags.items() if isinstance(flags, dict) else enumerate(flags)
    absent = [str(name) for name, flag in items if not flag]
    if not absent:
        return ""
    return f" ({', '.join(absent)} absent from the ground truth: this mean IU does not measure it)"
