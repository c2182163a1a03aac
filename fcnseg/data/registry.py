"""Datasets by name, as configs and the command line refer to them (imported lazily)."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from fcnseg.choices import unknown_choice
from fcnseg.data.base import DataError, SegmentationDataset, Transform

__all__ = ["DATASETS", "build_dataset", "dataset_class"]

#: name → "module:Class"; every class takes ``(root, split, transforms=None, **options)``.
DATASETS: dict[str, str] = {
    "voc": "fcnseg.data.datasets.voc:VOCSegmentation",
    "sbd": "fcnseg.data.datasets.sbd:SBDSegmentation",
    "voc_sbd": "fcnseg.data.datasets.sbd:VOCPlusSBD",
    "camvid": "fcnseg.data.datasets.camvid:CamVid",
    "cityscapes": "fcnseg.data.datasets.cityscapes:Cityscapes",
    "ade20k": "fcnseg.data.datasets.ade20k:ADE20K",
    "folder": "fcnseg.data.datasets.folder:FolderPairs",
    "synthetic": "fcnseg.data.datasets.synthetic:SyntheticShapes",
}


#: Parameters every class takes positionally (not options).
_POSITIONAL = {"self", "root", "split", "transforms"}


def dataset_class(name: str) -> type[SegmentationDataset]:
    """The class registered as ``name``; :class:`DataError` (a ``ValueError``) if none is."""
    if name not in DATASETS:
        raise DataError(unknown_choice("dataset", name, sorted(DATASETS)))
    module, cls = DATASETS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_dataset(
    name: str,
    root: str | Path | None,
    split: str,
    transforms: Transform | None = None,
    **options: Any,
) -> SegmentationDataset:
    """Instantiate dataset ``name`` for ``split`` (see :data:`DATASETS`).

    An option the class does not take raises :class:`DataError` naming it and the valid ones
    (rather than a ``TypeError`` from the constructor); so does a split not among the class's
    ``splits`` (where it declares them).
    """
    cls = dataset_class(name)
    splits = getattr(cls, "splits", None)
    if splits is not None and split not in splits and options.get("list_file") is None:
        raise DataError(
            unknown_choice("split", split, splits, where=f" for {name}", label="splits")
        )
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        valid = [
            n
            for n, p in params.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
            or (p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and n not in _POSITIONAL)
        ]
        unknown = sorted(set(options) - set(valid), key=str)
        if unknown:
            raise DataError(
                f"dataset {name!r} has no option(s) {unknown} (data.options / val_options); "
                f"valid options: {valid}"
            )
    return cls(root, split, transforms=transforms, **options)
