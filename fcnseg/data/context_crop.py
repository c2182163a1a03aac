"""The U-Net paper's training crop: an output crop of the mask, and of the image the same crop
plus the context the network eats, cut from the real image around it.

Used by :func:`fcnseg.data.transforms.train_transforms` when the model asks for context
(:meth:`fcnseg.models.SegmentationModel.training_context`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as nnf
from torchvision import tv_tensors
from torchvision.transforms import v2

from fcnseg.data.base import IGNORE_INDEX
from fcnseg.models.base import Margins
from fcnseg.models.unet import mirror_pad

__all__ = ["ContextCrop"]


def _position(size: int, crop: int) -> int:
    """Start of a crop along an axis of ``size``, drawn as ``v2.RandomCrop(pad_if_needed=True)``
    draws it (an axis shorter than the crop is first padded by the shortfall on both sides), in
    image coordinates: negative when the crop starts before the image."""
    short = max(0, crop - size)
    padded = size + 2 * short
    start = int(torch.randint(0, padded - crop + 1, size=())) if padded > crop else 0
    return start - short


def _window(
    inpt: torch.Tensor, top: int, left: int, height: int, width: int, fill: float | None
) -> torch.Tensor:
    """The ``height`` × ``width`` window of ``inpt`` (…×H×W) at ``(top, left)``, which may
    reach beyond the image: there ``fill``, or the image mirrored when ``fill`` is ``None``."""
    h, w = inpt.shape[-2], inpt.shape[-1]
    before_y, after_y = max(0, -top), max(0, top + height - h)
    before_x, after_x = max(0, -left), max(0, left + width - w)
    plain = inpt.as_subclass(torch.Tensor)
    if fill is None:
        padded = mirror_pad(plain, before_y, after_y, before_x, after_x)
    else:
        padded = nnf.pad(plain, (before_x, after_x, before_y, after_y), value=fill)
    y, x = top + before_y, left + before_x
    return tv_tensors.wrap(padded[..., y : y + height, x : x + width].contiguous(), like=inpt)


class ContextCrop(v2.Transform):
    """Random crop of ``size`` = ``(height, width)`` from masks (and weight maps), and of
    ``size`` plus ``context`` = ``((top, bottom), (left, right))`` margins from the image at the
    same position: mask pixel ``(i, j)`` lies at image pixel ``(i + top, j + left)``.

    The margins are the real image around the crop, mirrored only beyond the image border,
    which is what the model's whole-image forward sees (the paper's overlap-tile training).
    Mirroring is :func:`fcnseg.models.unet.mirror_pad`, not ``F.pad(mode="reflect")``: it is
    the very extrapolation ``UNet.forward`` applies at the image border, and it takes margins
    larger than the image (92 px at depth 4), which reflect padding refuses.

    Positions are drawn as ``v2.RandomCrop(size, pad_if_needed=True)`` draws them; mask pixels
    outside the image get ``ignore_index``, weight-map pixels 0. The margins need not be
    symmetric, so flips must come before this crop.
    """

    def __init__(
        self, size: tuple[int, int], context: Margins, *, ignore_index: int = IGNORE_INDEX
    ) -> None:
        super().__init__()
        (top, bottom), (left, right) = context
        if min(size) < 1 or min(top, bottom, left, right) < 0:
            raise ValueError(f"need a size >= 1 and margins >= 0, got {size} and {context}")
        self.size = (int(size[0]), int(size[1]))
        self.context = ((int(top), int(bottom)), (int(left), int(right)))
        self.ignore_index = int(ignore_index)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        return {"top": _position(height, self.size[0]), "left": _position(width, self.size[1])}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        (top, bottom), (left, right) = self.context
        y, x = params["top"], params["left"]
        h, w = self.size
        if isinstance(inpt, tv_tensors.Mask):  # a WeightMap (subclass) gets weight 0 outside
            fill = self.ignore_index if type(inpt) is tv_tensors.Mask else 0
            return _window(inpt, y, x, h, w, fill)
        if isinstance(inpt, tv_tensors.Image):
            return _window(inpt, y - top, x - left, h + top + bottom, w + left + right, None)
        return inpt

    def extra_repr(self) -> str:
        return f"size={self.size}, context={self.context}, ignore_index={self.ignore_index}"
