"""Tests for :mod:`fcnseg.data.datasets.synthetic`."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from fcnseg.data import DataError, build_dataset
from fcnseg.data.datasets.synthetic import SyntheticShapes


def _digest(ds: SyntheticShapes, i: int) -> str:
    image, labels = ds.sample(i)
    return hashlib.sha1(image.tobytes() + labels.tobytes()).hexdigest()


def test_registry_builds_it_with_defaults():
    ds = build_dataset("synthetic", None, "val")
    assert isinstance(ds, SyntheticShapes)
    assert len(ds) == 60
    assert len(SyntheticShapes()) == 400
    assert len(SyntheticShapes(split="test")) == 60
    assert ds.num_classes == len(ds.palette) == 6
    assert 4 <= ds.num_classes <= 6
    assert ds.classes[0] == "background"
    assert len(set(ds.palette)) == len(ds.palette)
    assert ds.meta()["classes"] == list(ds.classes)


def test_types_shapes_and_label_range():
    ds = SyntheticShapes(split="train", num_images=8, size=(64, 80))
    for i in range(len(ds)):
        image, mask = ds[i]
        assert isinstance(image, tv_tensors.Image)
        assert isinstance(mask, tv_tensors.Mask)
        assert image.dtype == torch.uint8
        assert image.shape == (3, 64, 80)
        assert mask.dtype == torch.int64
        assert mask.shape == (64, 80)
        assert int(mask.min()) >= 0 and int(mask.max()) < ds.num_classes  # clean: no 255
        assert (mask > 0).any()  # at least one shape


def test_deterministic_by_seed_split_and_index():
    a = SyntheticShapes(split="train", num_images=5, cache=False)
    b = SyntheticShapes(split="train", num_images=5)
    for i in range(5):
        ia, ma = a.load(i)
        ib, mb = b.load(i)
        assert torch.equal(ia, ib) and torch.equal(ma, mb)
        assert torch.equal(a.load(i)[0], ia)  # regenerated (no cache): still identical
    assert len({_digest(a, i) for i in range(5)}) == 5
    other = SyntheticShapes(split="train", num_images=5, seed=1)
    assert not any(_digest(a, i) == _digest(other, i) for i in range(5))
    # the split size does not change which sample an index is
    assert _digest(SyntheticShapes(num_images=100), 3) == _digest(a, 3)


def test_splits_are_disjoint():
    digests = {
        split: {_digest(SyntheticShapes(split=split, num_images=30), i) for i in range(30)}
        for split in ("train", "val", "test")
    }
    assert all(len(d) == 30 for d in digests.values())
    assert not digests["train"] & digests["val"]
    assert not digests["train"] & digests["test"]
    assert not digests["val"] & digests["test"]


def test_all_classes_present_and_colour_does_not_give_the_class_away():
    ds = SyntheticShapes(split="train", num_images=120)
    counts = np.zeros(ds.num_classes, np.int64)
    mean_colours: dict[int, list[np.ndarray]] = {k: [] for k in range(1, ds.num_classes)}
    for i in range(len(ds)):
        image, labels = ds.sample(i)
        counts += np.bincount(labels.ravel(), minlength=ds.num_classes)
        for k in np.unique(labels)[1:]:
            mean_colours[int(k)].append(image[labels == k].mean(axis=0))
    fractions = counts / counts.sum()
    assert 0.5 < fractions[0] < 0.95
    assert (fractions[1:] > 0.005).all()
    # every shape class appears in many colours, spread over the whole colour cube
    for colours in mean_colours.values():
        spread = np.ptp(np.stack(colours), axis=0)
        assert (spread > 150).all()


def test_backgrounds_are_textured_not_flat():
    ds = SyntheticShapes(split="val", num_images=10)
    for i in range(len(ds)):
        image, labels = ds.sample(i)
        background = image[labels == 0].astype(np.float64)
        assert background.std(axis=0).max() > 8.0


def test_names_and_indexing():
    ds = SyntheticShapes(split="val", num_images=12)
    assert ds.name(7) == "val_0007"
    assert ds.name(-1) == "val_0011"
    assert torch.equal(ds[-1][0], ds[11][0])
    with pytest.raises(IndexError):
        ds.load(12)
    assert sum(1 for _ in ds) == 12  # iteration stops at the end


def test_ignore_border_marks_thin_band():
    clean = SyntheticShapes(split="train", num_images=3)
    ds = SyntheticShapes(split="train", num_images=3, ignore_border=1)
    for i in range(3):
        c, m = clean.sample(i)[1], ds.sample(i)[1]
        ignored = m == ds.ignore_index
        assert ignored.any()
        assert ignored.mean() < 0.2
        np.testing.assert_array_equal(m[~ignored], c[~ignored])
        assert np.array_equal(clean.sample(i)[0], ds.sample(i)[0])


def test_transforms_are_applied():
    def flip(image, mask):
        return image.flip(-1), mask.flip(-1)

    ds = SyntheticShapes(split="val", num_images=2, transforms=flip)
    image, mask = ds[0]
    raw_image, raw_mask = ds.load(0)
    assert torch.equal(image, raw_image.flip(-1))
    assert torch.equal(mask, raw_mask.flip(-1))
    # torchvision v2 transforms see the tv_tensors and crop image and mask alike
    crop = SyntheticShapes(split="val", num_images=2, transforms=v2.CenterCrop((40, 50)))
    image, mask = crop[1]
    assert isinstance(mask, tv_tensors.Mask) and image.shape == (3, 40, 50)
    assert torch.equal(mask, crop.load(1)[1][28:68, 39:89])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"split": "trainval"},
        {"num_images": -1},
        {"size": (16, 128)},
        {"seed": -3},
        {"ignore_border": -1},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(DataError):
        SyntheticShapes(**kwargs)
