""":class:`FolderPairs` reads any "images folder + masks folder, paired by file stem" data
set, with class names, palette, ignore label and an optional raw-value remap from a small YAML file
(``meta=``). Two ship with fcnseg (``fcnseg/data/meta/``): ``"horse"`` (Weizmann Horse) and
``"isbi2012"`` (ISBI 2012 EM membranes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fcnseg.data.base import IGNORE_INDEX, DataError, Transform
from fcnseg.data.datasets.pairs import (
    PairedFileDataset,
    Sample,
    check_samples,
    kfold_indices,
    natural_key,
    pair_by_stem,
    require_root,
    scan_stems,
)
from fcnseg.data.io import (
    LabelMap,
    PathLike,
    read_id_list,
)
from fcnseg.data.palettes import Palette, default_palette

__all__ = [
    "FolderMeta",
    "FolderPairs",
    "PairedFileDataset",
    "Sample",
    "available_meta",
    "check_samples",
    "holdout_counts",
    "kfold_indices",
    "load_meta",
    "natural_key",
    "pair_by_stem",
    "require_root",
    "scan_stems",
]


# --- FolderPairs and its YAML metadata ----------------------------------------------------

_META_KEYS = {"classes", "palette", "ignore_index", "mask_values", "images", "masks"}


@dataclass(frozen=True)
class FolderMeta:
    """Contents of a FolderPairs YAML file (see :func:`load_meta`)."""

    classes: tuple[str, ...]
    palette: Palette
    ignore_index: int = IGNORE_INDEX
    mask_values: dict[int, int] | None = None
    images: str | None = None
    masks: str | None = None


def available_meta() -> list[str]:
    """Names of the YAML files shipped in ``fcnseg/data/meta/``."""
    folder = resources.files("fcnseg.data").joinpath("meta")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _int(value: Any, what: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{source}: {what} must be an integer, got {value!r}")
    return value


def _parse_mask_values(raw: Any, source: str) -> dict[int, int]:
    if not isinstance(raw, Mapping) or not raw:
        raise DataError(f"{source}: mask_values must be a non-empty mapping raw value → class")

    def key(k: Any) -> int:
        # Checkpoints and exports store the config as JSON, whose keys are strings: "255".
        if isinstance(k, str) and k.lstrip("-").isdigit():
            return int(k)
        return _int(k, "a mask_values key", source)

    return {key(k): _int(v, "a mask_values value", source) for k, v in raw.items()}


def load_meta(meta: str | Path | Mapping[str, Any], root: Path | None = None) -> FolderMeta:
    """Parse FolderPairs metadata: a shipped name (``"horse"``, ``"isbi2012"``), a YAML path, or
    an already-loaded mapping. Keys: ``classes`` (list of names, required), ``palette`` (list of
    ``[r, g, b]``, default :func:`default_palette`), ``ignore_index`` (default 255),
    ``mask_values`` (raw mask value → class index or the ignore index), ``images`` / ``masks``
    (default sub-folder names). A relative path is looked up in ``root`` (the data folder) first,
    then in the working directory."""
    if isinstance(meta, Mapping):
        data, source = dict(meta), "meta mapping"
    else:
        path = Path(meta).expanduser()
        if root is not None and not path.is_absolute() and (root / path).is_file():
            path = root / path
        if path.is_file():
            source = str(path)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"cannot read FolderPairs meta file {path}: {exc}") from None
        elif isinstance(meta, str) and re.fullmatch(r"[\w-]+", meta):
            shipped = resources.files("fcnseg.data").joinpath("meta", f"{meta}.yaml")
            if not shipped.is_file():
                from fcnseg.choices import unknown_choice

                what = unknown_choice("FolderPairs meta", meta, available_meta())
                raise DataError(f"{what} (or a YAML file with 'classes')")
            source = f"fcnseg/data/meta/{meta}.yaml"
            text = shipped.read_text(encoding="utf-8")
        else:
            where = f" (looked in {root} and the working directory)" if root is not None else ""
            raise DataError(f"FolderPairs meta file {meta} does not exist{where}")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DataError(f"{source} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise DataError(f"{source} must be a YAML mapping with at least 'classes'")
    unknown = set(data) - _META_KEYS
    if unknown:
        raise DataError(
            f"{source}: unknown keys {sorted(unknown, key=str)}; known: {sorted(_META_KEYS)}"
        )
    classes = data.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{source}: 'classes' must be a non-empty list of class names")
    if "palette" in data:
        palette_raw = data["palette"]
        ok = isinstance(palette_raw, list) and len(palette_raw) == len(classes)
        ok = ok and all(
            isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) for v in c)
            for c in palette_raw
        )
        if not ok or not all(0 <= v <= 255 for c in palette_raw for v in c):
            raise DataError(
                f"{source}: 'palette' must list one [r, g, b] (0..255) per class "
                f"({len(classes)} classes)"
            )
        palette: Palette = tuple((c[0], c[1], c[2]) for c in palette_raw)
    else:
        palette = default_palette(len(classes))
    ignore_index = _int(data.get("ignore_index", IGNORE_INDEX), "ignore_index", source)
    mask_values = None
    if data.get("mask_values") is not None:
        mask_values = _parse_mask_values(data["mask_values"], source)
    folders = {}
    for key in ("images", "masks"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise DataError(f"{source}: {key!r} must be a folder name")
        folders[key] = value
    return FolderMeta(
        tuple(classes), palette, ignore_index, mask_values, folders["images"], folders["masks"]
    )


def holdout_counts(pairs: int, holdout: int) -> tuple[int, int]:
    """``(train, val)`` pair counts of FolderPairs' ``holdout`` split of ``pairs`` pairs (every
    ``holdout``-th pair, 0, k, 2k, …, is val)."""
    val = -(-pairs // holdout)
    return pairs - val, val


class FolderPairs(PairedFileDataset):
    """``root/<images>/*`` paired with ``root/<masks>/*`` by file stem (masks: lossless formats).

    Args:
        root: the data set folder.
        split: ``"all"`` (every pair); a sub-folder ``root/<split>/`` holding its own
            ``images/`` and ``masks/`` (e.g. ``train/`` and ``val/``); or a list file of stems — a
            path (absolute or relative to ``root``) or a name ``s`` meaning ``root/s.txt``.
            ``holdout`` or ``folds`` split a flat folder into ``train`` / ``val`` instead.
        images, masks: sub-folder names (absolute paths allowed); default: the meta file's, else
            ``"images"`` / ``"masks"``.
        meta: required: a shipped name (``"horse"``, ``"isbi2012"``), a YAML path or a mapping;
            see :func:`load_meta`.
        list_file: a list file that overrides ``split``.
        mask_values: raw mask value → class index (or the ignore index), overriding the meta's;
            raw values not listed are an error. Without it, raw values are the class indices.
        holdout: with ``split="train"``/``"val"`` and no list file: a fixed interleaved split of
            the naturally sorted pairs — every ``holdout``-th pair (0, k, 2k, …) is ``val``, the
            rest ``train``. 0 (default) disables it.
    """

    def __init__(
        self,
        root: PathLike | None,
        split: str = "all",
        transforms: Transform | None = None,
        *,
        images: str | None = None,
        masks: str | None = None,
        meta: str | Path | Mapping[str, Any] | None = None,
        list_file: PathLike | None = None,
        mask_values: Mapping[int, int] | None = None,
        holdout: int = 0,
        folds: int = 0,
        fold: int = 0,
        fold_seed: int | None = None,
    ) -> None:
        root = require_root(root, "FolderPairs")
        if holdout > 0 and folds > 0:
            raise DataError("FolderPairs: holdout and folds are two ways to split; pass one")
        if meta is None:
            raise DataError(
                "FolderPairs needs meta=: a shipped name "
                f"{available_meta()}, a YAML file with 'classes' (and optional 'palette', "
                "'ignore_index', 'mask_values'), or such a mapping"
            )
        info = load_meta(meta, root)
        self.meta_info = info
        self.classes = info.classes
        self.palette = info.palette
        self.ignore_index = info.ignore_index
        values = mask_values if mask_values is not None else info.mask_values
        if values is not None:
            values = _parse_mask_values(values, "mask_values")
            bad = [
                v
                for v in values.values()
                if not (0 <= v < len(self.classes) or v == self.ignore_index)
            ]
            if bad:
                raise DataError(
                    f"mask_values map to {sorted(set(bad))}, outside 0..{len(self.classes) - 1} "
                    f"and the ignore index {self.ignore_index}"
                )
            self.label_map = LabelMap(values, name="mask_values table")
        self.split = split
        generated = (holdout > 0 or folds > 0) and list_file is None and split in ("train", "val")
        base = root
        if not generated and list_file is None and split != "all" and (root / split).is_dir():
            base = root / split  # a split folder: root/train/images, root/train/masks, …
        self.image_dir = base / (images or info.images or "images")
        self.mask_dir = base / (masks or info.masks or "masks")
        list_path = None
        if not generated and base is root:
            list_path = self._list_path(root, split, list_file)
        ids = None if list_path is None else read_id_list(list_path)
        samples = pair_by_stem(self.image_dir, self.mask_dir, ids=ids, source=list_path)
        if generated and holdout > 0:
            samples = [s for i, s in enumerate(samples) if (i % holdout == 0) == (split == "val")]
        elif generated:
            train, val = kfold_indices(len(samples), folds, fold, fold_seed)
            samples = [samples[i] for i in (val if split == "val" else train)]
        super().__init__(samples, transforms)

    @staticmethod
    def _list_path(root: Path, split: str, list_file: PathLike | None) -> Path | None:
        if list_file is not None:
            path = Path(list_file).expanduser()
            if not path.is_absolute() and not path.is_file() and (root / path).is_file():
                path = root / path
            if path.is_dir():
                raise DataError(f"list file {path} is a folder, not a list file of sample stems")
            if not path.is_file():
                raise DataError(f"list file {path} does not exist")
            return path
        if split == "all":
            return None
        for candidate in (Path(split).expanduser(), root / split, root / f"{split}.txt"):
            if candidate.is_file():
                return candidate
        raise DataError(
            f"no split {split!r} in {root}: no folder {root / split}/ with images/ and masks/, "
            f"and no list file {root / (split + '.txt')}; split a flat folder with "
            "data.options.holdout=5 (every 5th pair is val) or data.options.folds=K, or use "
            "split all"
        )
