"""Cityscapes (Cordts et al. 2016), fine annotations, 19 evaluated classes."""

from __future__ import annotations

from fcnseg.data.base import DataError, Transform
from fcnseg.data.datasets.pairs import PairedFileDataset, Sample, natural_key, require_root
from fcnseg.data.io import LabelMap, PathLike, format_values
from fcnseg.data.palettes import CITYSCAPES_CLASSES, CITYSCAPES_ID_TO_TRAINID, CITYSCAPES_PALETTE

__all__ = ["Cityscapes"]

_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelIds.png"


class Cityscapes(PairedFileDataset):
    """``root/leftImg8bit/<split>/<city>/<id>_leftImg8bit.png`` with
    ``root/gtFine/<split>/<city>/<id>_gtFine_labelIds.png``; labelIds (0..33) are mapped to the
    19 trainIds with the official table (:data:`fcnseg.data.palettes.CITYSCAPES_ID_TO_TRAINID`),
    every other labelId to 255. ``name(i)`` is ``<id>`` (e.g. ``aachen_000000_000019``).

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``"train"`` (2975), ``"val"`` (500) or ``"test"`` (1525; its labels are all 255).
    """

    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE
    splits = ("train", "val", "test")
    label_map = LabelMap(CITYSCAPES_ID_TO_TRAINID, name="Cityscapes labelId table (0..33)")

    def __init__(
        self, root: PathLike | None, split: str = "train", transforms: Transform | None = None
    ) -> None:
        root = require_root(root, "Cityscapes")
        image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise DataError(f"Cityscapes split {split!r}: folder {folder} does not exist")
        self.split = split
        images = {
            f"{p.parent.name}/{p.name[: -len(_IMAGE_SUFFIX)]}": p
            for p in image_dir.glob(f"*/*{_IMAGE_SUFFIX}")
        }
        labels = {
            f"{p.parent.name}/{p.name[: -len(_LABEL_SUFFIX)]}": p
            for p in label_dir.glob(f"*/*{_LABEL_SUFFIX}")
        }
        problems = []
        if only_images := sorted(images.keys() - labels.keys(), key=natural_key):
            problems.append(f"images without *{_LABEL_SUFFIX}: {format_values(only_images)}")
        if only_labels := sorted(labels.keys() - images.keys(), key=natural_key):
            problems.append(f"labels without *{_IMAGE_SUFFIX}: {format_values(only_labels)}")
        if problems:
            raise DataError(
                f"Cityscapes {split!r} ({image_dir}, {label_dir}) has unmatched files — "
                + "; ".join(problems)
            )
        if not images:
            raise DataError(f"split is empty: no <city>/*{_IMAGE_SUFFIX} files in {image_dir}")
        samples = [
            Sample(key.split("/", 1)[1], images[key], labels[key])
            for key in sorted(images, key=natural_key)
        ]
        super().__init__(samples, transforms)
