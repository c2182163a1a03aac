"""What a folder of images and masks holds, and how its mask values map to classes.

``fcnseg train DATA_DIR`` and ``fcnseg inspect DATA_DIR`` start here: :func:`survey_folder`
pairs the files (``images/`` + ``masks/``, or ``train/`` and ``val/`` folders each holding
both), reads every mask once and infers the classes:

* palette PNGs: a class per palette index used (colours from the palette), 255 = ignore;
* grey masks holding only 0 and 255 (the usual binary masks): 0 → class 0, 255 → class 1;
* grey masks holding small indices 0..K (255 allowed as VOC's ignore border): K + 1 classes;
* any other handful of grey values (e.g. 0/128/255): sorted, mapped to 0, 1, 2, …

Class names come from ``classes.txt`` (one per line) in the folder when there is one, else
``background`` for class 0 and ``foreground`` (two classes) or ``class_1``, ``class_2``, …
Nothing here trains or builds a config: :mod:`fcnseg.config.own_data` turns a survey into one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import numpy as np
from PIL import Image

from fcnseg.data.base import IGNORE_INDEX, DataError
from fcnseg.data.datasets.pairs import Sample, pair_by_stem
from fcnseg.data.io import format_values, read_mask
from fcnseg.data.palettes import default_palette

__all__ = ["FolderSurvey", "median_size", "survey_folder"]

#: More distinct values than this in the masks: they are not label maps (JPEG artefacts or a
#: photo in the masks folder). Scattered grey levels are mapped in order only up to
#: :data:`MAX_LEVELS`; near-contiguous indices may go up to 254 (ADE20K-sized label sets).
MAX_VALUES = 256
MAX_LEVELS = 32
#: Share of pixels outside 0 and 255 below which 0/255 masks count as anti-aliased binary ones.
ANTIALIAS_SHARE = 0.01
#: Files naming the classes, one per line, looked for in the data folder.
CLASS_FILES = ("classes.txt", "class_names.txt")


@dataclass
class FolderSurvey:
    """The facts of a data folder and the classes inferred from its masks."""

    root: Path
    #: ``{"train": [...], "val": [...]}`` for split folders, ``{"all": [...]}`` for a flat one.
    splits: dict[str, list[Sample]]
    #: Mask sizes (H, W) → number of masks.
    sizes: Counter[tuple[int, int]]
    #: ``"palette"`` or ``"grey"``.
    mask_kind: str
    #: Raw mask value → pixels holding it, over all masks.
    values: dict[int, int]
    classes: list[str]
    palette: list[list[int]]
    ignore_index: int
    #: Raw value → class index (``None``: raw values are the class indices).
    mask_values: dict[int, int] | None
    #: One line: how raw values became classes.
    mapping: str
    notes: list[str] = field(default_factory=list)

    @property
    def pairs(self) -> int:
        return sum(len(s) for s in self.splits.values())


def _split_layout(root: Path) -> dict[str, tuple[Path, Path]]:
    """``{split: (images, masks)}``: ``root/images`` + ``root/masks`` (split ``all``), or
    ``root/<split>/images`` + ``…/masks`` for ``train`` and ``val``."""
    if (root / "images").is_dir() or (root / "masks").is_dir():
        return {"all": (root / "images", root / "masks")}
    found = {
        s: (root / s / "images", root / s / "masks")
        for s in ("train", "val")
        if (root / s / "images").is_dir()
    }
    if set(found) == {"train", "val"}:
        return found
    if found:
        raise DataError(
            f"{root} has {'/, '.join(found)}/ but not {'val' if 'train' in found else 'train'}/: "
            "give both train/ and val/ (each with images/ and masks/), or put every pair in "
            "images/ and masks/ for an automatic split"
        )
    raise DataError(
        f"{root} is not a data folder: expected images/ and masks/ in it (files paired by "
        "name: images/a.jpg ↔ masks/a.png), or train/ and val/ folders each holding both"
    )


def _class_names(root: Path, count: int) -> tuple[list[str], str | None]:
    for name in CLASS_FILES:
        file = root / name
        if file.is_file():
            names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
            names = [n for n in names if n and not n.startswith("#")]
            if len(names) != count:
                raise DataError(
                    f"{file} names {len(names)} classes but the masks hold {count}; list one "
                    "class name per line, in class-index order"
                )
            return names, str(file)
    if count == 2:
        return ["background", "foreground"], None
    return ["background", *(f"class_{i}" for i in range(1, count))], None


def _palette(path: Path) -> list[int] | None:
    """A palette PNG's palette (flat RGB list), ``None`` for other masks."""
    with Image.open(path) as im:
        return im.getpalette() if im.mode == "P" else None


def median_size(sizes: dict[tuple[int, int], int]) -> tuple[float, float]:
    """The median height and width of ``sizes`` (size → number of images)."""
    every = [s for s, n in sizes.items() for _ in range(n)]
    return median(s[0] for s in every), median(s[1] for s in every)


def _infer_grey(values: dict[int, int]) -> tuple[int, dict[int, int] | None, int, str]:
    """(number of classes, raw → class map or None, ignore index, description)."""
    raw = sorted(values)
    if set(raw) <= {0, 255} and 255 in values:
        return 2, {0: 0, 255: 1}, IGNORE_INDEX, "0 → class 0, 255 → class 1 (binary masks)"
    between = sum(n for v, n in values.items() if v not in (0, 255))
    if 0 in values and 255 in values and between <= ANTIALIAS_SHARE * sum(values.values()):
        raise DataError(
            f"the masks are 0/255 binary masks with {len(raw) - 2} other grey levels on "
            f"{between:,} pixels (anti-aliased or resized edges): threshold them (e.g. ≥ 128 → "
            "255, else 0) and save as PNG, so every pixel is one class"
        )
    indices = [v for v in raw if v != IGNORE_INDEX]
    top = max(indices)
    # Small indices (from 0 or 1) with few gaps are class indices (VOC-style 255 = ignore
    # beside them); 1-based labels leave class 0 empty, which the label check reports.
    if indices[0] <= 1 and top < IGNORE_INDEX and len(indices) * 2 >= top + 1:
        note = f"values are class indices 0..{top}"
        if IGNORE_INDEX in values:
            note += f"; 255 = ignore ({values[IGNORE_INDEX]:,} pixels, e.g. object borders)"
        return top + 1, None, IGNORE_INDEX, note
    if len(raw) > MAX_LEVELS:
        raise DataError(
            f"the masks hold {len(raw)} scattered grey levels ({format_values(raw)}): too many "
            "to be classes; save masks as class indices 0..K (or a palette PNG)"
        )
    mapping = {v: i for i, v in enumerate(raw)}
    shown = ", ".join(f"{v} → {i}" for v, i in mapping.items())
    return len(raw), mapping, IGNORE_INDEX, f"grey values mapped in order: {shown}"


def survey_folder(root: str | Path, *, progress: bool = False) -> FolderSurvey:
    """Pair the files of data folder ``root``, read every mask, infer its classes."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    splits = {s: pair_by_stem(i, m) for s, (i, m) in _split_layout(root).items()}
    samples = [s for group in splits.values() for s in group]
    sizes: Counter[tuple[int, int]] = Counter()
    values: Counter[int] = Counter()
    kinds: set[str] = set()
    palette: list[int] | None = None
    iterator = samples
    if progress and len(samples) > 50:
        from tqdm import tqdm

        iterator = tqdm(samples, desc="reading masks", unit="mask", leave=False)
    for sample in iterator:
        array = read_mask(sample.mask).numpy()
        sizes[array.shape[:2]] += 1
        with Image.open(sample.mask) as im:  # the header only
            kinds.add("palette" if im.mode == "P" else "grey")
        if palette is None and "palette" in kinds:
            palette = _palette(sample.mask)
        found, counts = np.unique(array, return_counts=True)
        values.update(dict(zip(found.tolist(), counts.tolist(), strict=True)))
        if len(values) > MAX_VALUES:
            raise DataError(
                f"the masks hold more than {MAX_VALUES} distinct values (e.g. {sample.mask}): "
                "they are not label maps; save one value per class, losslessly (PNG), "
                "without anti-aliasing"
            )
    if len(kinds) > 1:
        raise DataError(
            f"the masks in {root} mix palette PNGs and grey images: save them all one way"
        )
    kind = kinds.pop()
    ignore = IGNORE_INDEX
    notes: list[str] = []
    if kind == "palette":
        indices = [v for v in values if v != IGNORE_INDEX]
        count = max(indices) + 1 if indices else 0
        mask_values = None
        mapping = f"palette indices 0..{count - 1} are the classes"
        if IGNORE_INDEX in values:
            mapping += "; index 255 = ignore"
        assert palette is not None
        colours = [palette[3 * i : 3 * i + 3] for i in range(count)]
    else:
        count, mask_values, ignore, mapping = _infer_grey(dict(values))
        colours = [list(c) for c in default_palette(count)]
    if count < 2:
        raise DataError(
            f"the masks in {root} hold only {format_values(sorted(values))}: at least two "
            "classes are needed (e.g. 0 = background, 1 or 255 = object)"
        )
    classes, names_file = _class_names(root, count)
    if names_file:
        notes.append(f"class names from {names_file}")
    raw_of = {c: r for r, c in mask_values.items()} if mask_values else None
    for i in range(count):
        if values.get(raw_of[i] if raw_of else i, 0) == 0:
            notes.append(f"class {i} ({classes[i]}) never occurs in the masks")
    return FolderSurvey(
        root, splits, sizes, kind, dict(sorted(values.items())), classes, colours, ignore,
        mask_values, mapping, notes,
    )  # fmt: skip
