"""Datasets in their real on-disk formats, joint transforms and batching."""

from fcnseg.data.base import IGNORE_INDEX, DataError, SegmentationDataset
from fcnseg.data.registry import DATASETS, build_dataset, dataset_class

__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "DataError",
    "SegmentationDataset",
    "build_dataset",
    "dataset_class",
]
