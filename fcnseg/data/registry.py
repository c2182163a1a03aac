"""Datasets by name, as configs and the command line refer to them (imported lazily)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from fcnseg.data.base import SegmentationDataset, Transform

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


def dataset_class(name: str) -> type[SegmentationDataset]:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    module, cls = DATASETS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_dataset(
    name: str,
    root: str | Path | None,
    split: str,
    transforms: Transform | None = None,
    **options: Any,
) -> SegmentationDataset:
    """Instantiate dataset ``name`` for ``split`` (see :data:`DATASETS`)."""
    return dataset_class(name)(root, split, transforms=transforms, **options)
