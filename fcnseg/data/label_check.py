"""Label sanity before training: what the masks of a dataset hold, and what is wrong with it.

A run that learns nothing must not report success. The classic way to get one: binary masks
saved as 0/255 with 255 read as the ignore label — the object class never occurs, the loss is 0
after a few steps and the mean IU over the one class present is a perfect 1.0. :func:`label_stats`
counts the labels of (a sample of) a dataset's masks and :func:`label_problems` turns the counts
into errors (nothing to learn) and warnings (a class never seen, mostly ignored pixels), each
saying what to set. The trainer calls :func:`check_labels` before the first step; ``fcnseg
inspect`` prints the same report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from fcnseg.data.base import DataError, SegmentationDataset

__all__ = ["LabelProblem", "LabelStats", "check_labels", "label_problems", "label_stats"]

log = logging.getLogger("fcnseg")

#: Masks read at most by :func:`label_stats` (evenly spaced over the dataset) by default.
MAX_MASKS = 300


@dataclass
class LabelStats:
    """Pixel counts of the labels in ``masks`` of the ``total`` masks of a dataset."""

    classes: tuple[str, ...]
    ignore_index: int | None
    #: Labelled pixels per class (length ``len(classes)``).
    counts: np.ndarray
    #: Pixels holding the ignore label.
    ignored: int
    #: Masks in which each class occurs.
    images_with: np.ndarray
    masks: int
    total: int
    sizes: list[tuple[int, int]] = field(default_factory=list)
    #: Values outside the classes and the ignore label → pixels holding them.
    outside: dict[int, int] = field(default_factory=dict)
    #: The first mask (file or sample name) holding such a value.
    outside_example: str | None = None

    @property
    def labelled(self) -> int:
        return int(self.counts.sum())

    def frequencies(self) -> np.ndarray:
        """Each class's share of the labelled pixels (zeros when nothing is labelled)."""
        return self.counts / max(self.labelled, 1)


@dataclass(frozen=True)
class LabelProblem:
    """``level`` is ``"error"`` (training would learn nothing useful) or ``"warning"``."""

    level: str
    message: str


def _mask_of(dataset: SegmentationDataset, index: int) -> torch.Tensor:
    """Mask ``index`` as the model sees its classes, read without decoding the image when the
    dataset can (file datasets' ``load_mask``), else through ``load``."""
    load_mask = getattr(dataset, "load_mask", None)
    return load_mask(index) if load_mask is not None else dataset.load(index)[1]


def label_stats(
    dataset: SegmentationDataset, *, max_masks: int = MAX_MASKS, progress: bool = False
) -> LabelStats:
    """Count the labels of up to ``max_masks`` masks of ``dataset`` (evenly spaced, first and
    last included), as remapped by the dataset (``mask_values``)."""
    n = len(dataset)
    if n == 0:
        raise DataError("the dataset is empty: no masks to check")
    indices = np.unique(np.linspace(0, n - 1, min(n, max_masks)).round().astype(int)).tolist()
    k = dataset.num_classes
    ignore = dataset.ignore_index
    counts = np.zeros(k, dtype=np.int64)
    images_with = np.zeros(k, dtype=np.int64)
    ignored = 0
    sizes = []
    outside: dict[int, int] = {}
    example = None
    if progress and len(indices) > 50:
        from tqdm import tqdm

        indices = tqdm(indices, desc="checking labels", unit="mask", leave=False)
    for i in indices:
        mask = torch.as_tensor(_mask_of(dataset, i)).as_subclass(torch.Tensor)
        sizes.append((int(mask.shape[-2]), int(mask.shape[-1])))
        flat = mask.reshape(-1)
        if ignore is not None:
            is_ignored = flat == ignore
            ignored += int(is_ignored.sum())
            flat = flat[~is_ignored]
        valid = (flat >= 0) & (flat < k)
        if not bool(valid.all()):
            found, pixels = torch.unique(flat[~valid], return_counts=True)
            for value, count in zip(found.tolist(), pixels.tolist(), strict=True):
                outside[value] = outside.get(value, 0) + count
            example = example or _where(dataset, i)
            flat = flat[valid]
        per_class = torch.bincount(flat, minlength=k).numpy()
        counts += per_class
        images_with += per_class > 0
    return LabelStats(
        tuple(dataset.classes), ignore, counts, ignored, images_with, len(indices), n, sizes,
        dict(sorted(outside.items())), example,
    )  # fmt: skip


def _where(dataset: SegmentationDataset, index: int) -> str:
    samples = getattr(dataset, "samples", None)
    return str(samples[index].mask) if samples is not None else f"sample {dataset.name(index)}"


def label_problems(stats: LabelStats, split: str = "train") -> list[LabelProblem]:
    """What is wrong with the labels ``stats`` counted (empty when nothing is)."""
    problems: list[LabelProblem] = []
    sampled = "" if stats.masks == stats.total else f" (in {stats.masks} of {stats.total} masks)"
    absent = [c for c, n in zip(stats.classes, stats.counts, strict=True) if n == 0]
    present = len(stats.classes) - len(absent)
    total = stats.labelled + stats.ignored
    ignore_share = stats.ignored / total if total else 0.0
    binary_255 = (
        len(stats.classes) == 2
        and stats.ignore_index == 255
        and stats.counts[0] > 0
        and stats.counts[1] == 0
        and stats.ignored > 0
    )
    if stats.outside:
        allowed = f"0..{len(stats.classes) - 1}" + (
            f" and the ignore label {stats.ignore_index}" if stats.ignore_index is not None else ""
        )
        values = ", ".join(f"{v} ({n:,} px)" for v, n in stats.outside.items())
        problems.append(
            LabelProblem(
                "error",
                f"the {split} masks{sampled} hold values {values} outside the classes "
                f"{allowed} (e.g. {stats.outside_example}): fix the masks or map raw values "
                "to classes with data.options.mask_values",
            )
        )
        return problems
    if binary_255:
        problems.append(
            LabelProblem(
                "error",
                f"the {split} masks hold only 0 and 255, and 255 is the ignore label: class "
                f"{stats.classes[1]!r} never occurs, so training would learn nothing. These look "
                "like binary masks saved as 0/255: map 255 to class 1 with "
                "data.options.mask_values={0: 0, 255: 1} (or train on the folder itself: "
                "`fcnseg train DATA_DIR` maps 0/255 masks for you)",
            )
        )
        return problems
    if present == 0:
        problems.append(
            LabelProblem(
                "error",
                f"no labelled pixel in the {split} masks{sampled}: every pixel is the ignore "
                f"label {stats.ignore_index}; check the masks' values and data.options.mask_values",
            )
        )
        return problems
    if present == 1 and len(stats.classes) > 1:
        only = stats.classes[int(np.flatnonzero(stats.counts)[0])]
        problems.append(
            LabelProblem(
                "error",
                f"only class {only!r} occurs in the {split} masks{sampled}: there is nothing to "
                f"learn; check that the masks hold class indices 0..{len(stats.classes) - 1} "
                "(or map their raw values with data.options.mask_values)",
            )
        )
        return problems
    if absent:
        problems.append(
            LabelProblem(
                "warning",
                f"{len(absent)} of {len(stats.classes)} classes never occur in the {split} "
                f"masks{sampled}: {', '.join(absent)}; the model cannot learn them and they "
                "are left out of the mean IU where the ground truth lacks them",
            )
        )
    if ignore_share > 0.5:
        problems.append(
            LabelProblem(
                "warning",
                f"{ignore_share:.0%} of the {split} mask pixels{sampled} hold the ignore label "
                f"{stats.ignore_index}: only the rest trains the model; if {stats.ignore_index} "
                "marks a class, map it with data.options.mask_values",
            )
        )
    return problems


def check_labels(
    dataset: SegmentationDataset, *, split: str = "train", max_masks: int = MAX_MASKS
) -> LabelStats:
    """Raise :class:`DataError` on an error of :func:`label_problems`, log its warnings."""
    stats = label_stats(dataset, max_masks=max_masks)
    for problem in label_problems(stats, split):
        if problem.level == "error":
            raise DataError(problem.message)
        log.warning("%s", problem.message)
    return stats
