"""Label sanity: 0/255 masks, absent classes, mostly-ignored labels are caught before training."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.data.base import DataError
from fcnseg.data.datasets.folder import FolderPairs
from fcnseg.data.label_check import check_labels, label_problems, label_stats


def _folder(root: Path, masks: list[np.ndarray]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, mask in enumerate(masks):
        h, w = mask.shape
        Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(root / "images" / f"s{i}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"s{i}.png")
    return root


def _object(value: int, h: int = 12, w: int = 16) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[3:9, 4:12] = value
    return mask


META = {"classes": ["background", "horse"]}


def test_binary_255_masks_are_an_error_that_says_what_to_set(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", [_object(255), _object(255)])
    with pytest.raises(DataError, match=r"mask_values=\{0: 0, 255: 1\}"):
        check_labels(FolderPairs(root, meta=META))
    # Mapped as the message says, the same folder is fine, and both classes are counted.
    stats = check_labels(FolderPairs(root, meta=META, mask_values={0: 0, 255: 1}))
    assert stats.counts.tolist() == [2 * (12 * 16 - 48), 2 * 48]
    assert stats.ignored == 0 and stats.images_with.tolist() == [2, 2]


def test_only_one_class_is_an_error_and_none_labelled_too(tmp_path: Path) -> None:
    root = _folder(tmp_path / "one", [np.zeros((8, 8), np.uint8)] * 2)
    with pytest.raises(DataError, match="only class 'background' occurs"):
        check_labels(FolderPairs(root, meta=META))
    root = _folder(tmp_path / "none", [np.full((8, 8), 255, np.uint8)] * 2)
    with pytest.raises(DataError, match="no labelled pixel"):
        check_labels(FolderPairs(root, meta=META))


def test_absent_class_and_mostly_ignored_are_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    meta = {"classes": ["background", "horse", "rider"]}
    ignored = np.full((12, 16), 255, np.uint8)
    ignored[0, :8] = 0
    ignored[1, :8] = 1
    root = _folder(tmp_path / "d", [_object(1), ignored, ignored])
    with caplog.at_level(logging.WARNING, logger="fcnseg"):
        stats = check_labels(FolderPairs(root, meta=meta))
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "1 of 3 classes never occur" in messages and "rider" in messages
    assert stats.ignored == 2 * (12 * 16 - 16)
    assert "hold the ignore label 255" in messages
    share = stats.ignored / (stats.ignored + stats.labelled)
    assert share > 0.5


def test_clean_labels_have_no_problems(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", [_object(1), _object(1)])
    assert label_problems(label_stats(FolderPairs(root, meta=META))) == []


def test_sampling_reads_at_most_max_masks(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", [_object(1)] * 7)
    stats = label_stats(FolderPairs(root, meta=META), max_masks=3)
    assert (stats.masks, stats.total) == (3, 7)
    assert label_problems(label_stats(FolderPairs(root, meta=META), max_masks=3)) == []


def test_values_outside_the_classes_are_an_error_naming_a_file(tmp_path: Path) -> None:
    """Caught before training from the counts (a load would fail only when that mask comes up)."""
    root = _folder(tmp_path / "d", [_object(1), _object(7)])
    dataset = FolderPairs(root, meta=META)
    stats = label_stats(dataset)
    assert stats.outside == {7: 48} and stats.outside_example.endswith("s1.png")
    with pytest.raises(DataError, match=r"values 7 \(48 px\) outside the classes 0..1.*s1.png"):
        check_labels(dataset)
