"""What every fcnseg dataset is: (image, mask) pairs, class names, a palette, an ignore label."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

__all__ = ["IGNORE_INDEX", "DataError", "SegmentationDataset"]

#: The label that marks pixels excluded from loss and metrics (VOC's boundary value).
IGNORE_INDEX = 255


class DataError(ValueError):
    """Bad input data; the message names the file (or split/argument) and what is wrong."""


Transform = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[Any, Any]]


class SegmentationDataset(Dataset):
    """Base class: subclasses set ``classes``/``palette`` and implement ``__len__``, ``load`` and
    ``name``. ``dataset[i]`` returns ``transforms(image, mask)``: by default an ``Image`` (uint8,
    3×H×W, RGB) and a ``Mask`` (int64, H×W) with values in ``[0, num_classes) ∪ {ignore_index}``.
    """

    classes: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    ignore_index: int = IGNORE_INDEX

    def __init__(self, transforms: Transform | None = None) -> None:
        self.transforms = transforms

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """The raw, validated pair (no transforms)."""
        raise NotImplementedError

    def name(self, index: int) -> str:
        """A stable identifier of sample ``index`` (file stem or id), for outputs and errors."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, mask = self.load(index)
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask

    def meta(self) -> dict[str, Any]:
        """Class names, palette and ignore label, as stored in checkpoints."""
        return {
            "classes": list(self.classes),
            "palette": [list(c) for c in self.palette],
            "ignore_index": self.ignore_index,
        }


def as_mask(labels: torch.Tensor) -> tv_tensors.Mask:
    """Wrap an H×W integer tensor as an int64 ``Mask``."""
    return tv_tensors.Mask(labels.to(torch.int64))
