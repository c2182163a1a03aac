"""What every fcnseg model offers the engine, inference, checkpoints and export.

A model is an ``nn.Module`` mapping normalised images to logits of the same height and width,
with hooks whose defaults suit most networks; a model that differs overrides them (no
``if unet`` branches anywhere else):

- :meth:`SegmentationModel.set_preprocess`: install the normalisation its weights expect.
- :meth:`SegmentationModel.tiler`: a function computing logits tile by tile in a way that is
  exact for this model (U-Net's overlap-tile), or ``None`` when the model has no such way and
  inference should blend overlapping tiles instead.
- :meth:`SegmentationModel.training_context`: the input margins the model wants around each
  training crop, taken from the image (U-Net's valid convolutions), or ``None``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fcnseg.weights import Preprocess

__all__ = ["Margins", "SegmentationModel"]

#: ``((top, bottom), (left, right))`` pixels of input around an output region.
Margins = tuple[tuple[int, int], tuple[int, int]]


class SegmentationModel(nn.Module):
    """Base class of fcnseg's models: ``forward(preprocess(images)) → N×num_classes×H×W``."""

    num_classes: int
    preprocess: Preprocess

    def set_preprocess(self, preprocess: Preprocess) -> None:
        """Use ``preprocess`` as the model's input normalisation."""
        self.preprocess = preprocess

    def tiler(self, tile: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """A function mapping a normalised batch to the logits the whole image would give,
        computed in tiles of about ``tile`` pixels; ``None`` when this model has no exact
        tiling (the default: the Predictor then blends overlapping tiles)."""
        return None

    def training_context(self, height: int, width: int) -> Margins | None:
        """The input margins this model wants around an output crop of ``height`` × ``width``
        during training, cut from the image itself (mirrored only beyond its border); ``None``
        (the default) trains on the crop alone.

        A model returning margins must accept ``forward(x, valid=True)``: the bare network on
        such a tile, whose output's top-left ``height`` × ``width`` pixels are the crop's
        logits (more rows/columns at the bottom/right are allowed; the engine drops them).
        """
        return None
