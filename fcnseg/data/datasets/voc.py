"""PASCAL VOC segmentation in the devkit layout (``VOCdevkit/VOC2012`` or ``VOC2011``)."""

from __future__ import annotations

from pathlib import Path

from fcnseg.choices import did_you_mean
from fcnseg.data.base import DataError, Transform
from fcnseg.data.datasets.pairs import PairedFileDataset, Sample, check_samples, require_root
from fcnseg.data.io import PathLike, read_id_list
from fcnseg.data.palettes import VOC_CLASSES, VOC_PALETTE

__all__ = ["VOCSegmentation"]


class VOCSegmentation(PairedFileDataset):
    """PASCAL VOC: ``root/JPEGImages/<id>.jpg`` with ``root/SegmentationClass/<id>.png`` (palette
    PNGs: indices 0..20, 255 on object boundaries and "difficult" regions → ignored).

    Args:
        root: the ``VOC2012`` (or ``VOC2011``) folder inside ``VOCdevkit``.
        split: reads ``root/ImageSets/Segmentation/<split>.txt`` (``train``, ``val``,
            ``trainval``; any other list placed there, e.g. ``seg11valid``, works too).
        list_file: a list file that overrides ``split`` — e.g. the FCN paper's
            ``seg11valid.txt`` (736 VOC2011 val images not in SBD train). A relative path that
            does not exist as given is looked up in ``root/ImageSets/Segmentation/``.
    """

    classes = VOC_CLASSES
    palette = VOC_PALETTE

    def __init__(
        self,
        root: PathLike | None,
        split: str = "train",
        transforms: Transform | None = None,
        *,
        list_file: PathLike | None = None,
    ) -> None:
        root = require_root(root, "VOCSegmentation")
        if not (root / "JPEGImages").is_dir():
            raise DataError(
                f"VOCSegmentation root {root} has no JPEGImages/ folder; point root at the "
                "VOC2012 (or VOC2011) folder inside VOCdevkit"
            )
        lists = root / "ImageSets" / "Segmentation"
        if list_file is None:
            path = lists / f"{split}.txt"
            if not path.is_file():
                known = sorted(p.stem for p in lists.glob("*.txt")) if lists.is_dir() else []
                hint = did_you_mean(split, known)
                raise DataError(f"VOC split list {path} does not exist; {hint}lists there: {known}")
        else:
            path = Path(list_file).expanduser()
            if not path.is_file() and not path.is_absolute() and (lists / path).is_file():
                path = lists / path
        self.split = split
        self.list_file = path
        ids = read_id_list(path)
        samples = [
            Sample(i, root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png")
            for i in ids
        ]
        super().__init__(check_samples(samples, path), transforms)
