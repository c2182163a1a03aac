"""How an image is predicted: tiling, test-time augmentation and CRF refinement, in one object
shared by :class:`~fcnseg.inference.Predictor`, ``fcnseg predict``, ``fcnseg eval`` and
``fcnseg serve``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fcnseg.crf import CRFParams

__all__ = ["SCALES", "TTA_SCALES", "InferenceOptions"]

#: The scales ``--tta`` averages over (with horizontal flips).
TTA_SCALES = (0.75, 1.0, 1.25)
#: The values of :attr:`InferenceOptions.scale`.
SCALES = ("train", "native")


@dataclass(frozen=True)
class InferenceOptions:
    """Inference settings; the defaults are plain whole-image inference.

    ``tile``: overlap-tiled inference with tiles of this many pixels (``None``: whole images;
    memory is then bounded by the tile); ``overlap``: pixels shared by neighbouring tiles, in
    ``[0, tile)``; ``flip``/``scales``: test-time augmentation (the mean of the softmax over
    horizontal flips and rescalings); ``crf``: dense-CRF refinement (of each tile when tiled);
    ``scale``: ``"train"`` shows the network each image at the training's scale when the
    checkpoint records one (resized to ``data.resize``, then the probabilities back to the
    image's size; tiles and TTA apply to the resized image: :mod:`fcnseg.inference.scale`),
    ``"native"`` at the image's own size.
    Change one field with ``dataclasses.replace(options, tile=512)``.
    """

    tile: int | None = None
    overlap: int = 64
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    crf: CRFParams | None = None
    scale: str = "train"

    def __post_init__(self) -> None:
        if self.tile is not None and (isinstance(self.tile, bool) or self.tile < 1):
            raise ValueError(f"tile must be a positive number of pixels or None, got {self.tile}")
        if self.overlap < 0 or (self.tile is not None and self.overlap >= self.tile):
            bound = f"[0, tile) = [0, {self.tile})" if self.tile is not None else "≥ 0"
            raise ValueError(f"overlap must be in {bound}, got {self.overlap}")
        scales = tuple(float(s) for s in self.scales)
        if not scales or min(scales) <= 0:
            raise ValueError(f"scales must be one or more positive factors, got {self.scales}")
        object.__setattr__(self, "scales", scales)
        if self.crf is not None and not isinstance(self.crf, CRFParams):
            raise ValueError(f"crf must be CRFParams or None, got {type(self.crf).__name__}")
        if self.scale not in SCALES:
            raise ValueError(f"scale must be 'train' or 'native', got {self.scale!r}")

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as recorded in reports (``metrics.json``)."""
        return {
            "tile": self.tile,
            "overlap": self.overlap,
            "flip": self.flip,
            "scales": list(self.scales),
            "crf": self.crf.as_dict() if self.crf is not None else None,
            "scale": self.scale,
        }
