"""ADE20K SceneParsing (MIT Scene Parsing Benchmark, Zhou et al. 2017), 150 classes."""

from __future__ import annotations

from fcnseg.choices import unknown_choice
from fcnseg.data.base import IGNORE_INDEX, DataError, Transform
from fcnseg.data.datasets.pairs import PairedFileDataset, pair_by_stem, require_root
from fcnseg.data.io import LabelMap, PathLike
from fcnseg.data.palettes import ADE20K_CLASSES, ADE20K_PALETTE

__all__ = ["ADE20K"]

_SPLITS = {
    "training": "training",
    "validation": "validation",
    "train": "training",
    "val": "validation",
}


class ADE20K(PairedFileDataset):
    """``ADEChallengeData2016/images/<split>/*.jpg`` with ``annotations/<split>/*.png`` (grey
    PNGs: 0 = "other" / unlabelled, 1..150 = the classes of ``objectInfo150``).

    Args:
        root: the ``ADEChallengeData2016`` folder (or the folder containing it).
        split: ``"training"`` (20210) or ``"validation"`` (2000); ``"train"``/``"val"`` accepted.
        reduce_zero_label: ``True`` (default, the benchmark's protocol): raw 0 → 255 (ignored)
            and raw ``k`` → ``k - 1``, giving 150 classes 0..149. ``False``: raw values are kept,
            and "other" becomes class 0 of 151 (``classes[0] == "other"``, drawn black).
    """

    splits = tuple(_SPLITS)

    def __init__(
        self,
        root: PathLike | None,
        split: str = "training",
        transforms: Transform | None = None,
        *,
        reduce_zero_label: bool = True,
    ) -> None:
        root = require_root(root, "ADE20K")
        if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
            root = root / "ADEChallengeData2016"
        if split not in _SPLITS:
            raise DataError(
                unknown_choice("split", split, _SPLITS, where=" for ADE20K", label="splits")
            )
        self.split = _SPLITS[split]
        self.reduce_zero_label = reduce_zero_label
        n = len(ADE20K_CLASSES)
        if reduce_zero_label:
            self.classes = ADE20K_CLASSES
            self.palette = ADE20K_PALETTE
            mapping = {0: IGNORE_INDEX, **{k: k - 1 for k in range(1, n + 1)}}
        else:
            self.classes = ("other", *ADE20K_CLASSES)
            self.palette = ((0, 0, 0), *ADE20K_PALETTE)
            mapping = {k: k for k in range(n + 1)}
        self.label_map = LabelMap(mapping, name="ADE20K label map (0..150)")
        samples = pair_by_stem(
            root / "images" / self.split,
            root / "annotations" / self.split,
            image_extensions=(".jpg", ".jpeg", ".png"),
            mask_extensions=(".png",),
        )
        super().__init__(samples, transforms)
