"""The U-Net weight map against hand-computed values, its cache, and the pipeline that carries
it (joint transforms, collation, loss)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from torch.testing import assert_close

from fcnseg.data.datasets.folder import FolderPairs
from fcnseg.data.transforms import PadCollate, WeightMap, train_transforms
from fcnseg.losses import SegmentationLoss
from fcnseg.weightmap import WeightMapCache, WithWeightMaps, unet_weight_map

IGNORE = 255


def border(d1: float, d2: float, w0: float = 10.0, sigma: float = 5.0) -> float:
    return w0 * math.exp(-((d1 + d2) ** 2) / (2 * sigma**2))


def three_bars() -> np.ndarray:
    """5×10 instance map: A = columns 0–2, gap 3, B = 4–6, gap 7–8, C = 9."""
    labels = np.zeros((5, 10), dtype=np.int64)
    labels[:, 0:3], labels[:, 4:7], labels[:, 9] = 1, 2, 3
    return labels


def test_hand_computed_bars() -> None:
    inst = three_bars()
    w = unet_weight_map(inst, instances=True)
    assert w.dtype == np.float32 and w.shape == (5, 10)
    # Objects: w_c = 1, no border term.
    assert np.all(w[inst > 0] == 1)
    # Column 3: one pixel from A and from B (C is third, at 6): d1 = d2 = 1.
    assert_close(w[:, 3], np.full(5, 1 + border(1, 1), np.float32))
    # Column 7: B at 1, C at 2; column 8: C at 1, B at 2.
    assert_close(w[:, 7], np.full(5, 1 + border(1, 2), np.float32))
    assert_close(w[:, 8], np.full(5, 1 + border(1, 2), np.float32))
    # A class mask gives the same objects through connected components.
    assert_close(unet_weight_map((inst > 0).astype(np.uint8)), w)
    # w0 and sigma enter as in the formula.
    w2 = unet_weight_map(inst, instances=True, w0=4, sigma=2)
    assert_close(float(w2[0, 3]), 1 + border(1, 1, 4, 2))


def test_hand_computed_diagonal_distances() -> None:
    """Euclidean distances between pixel centres: A at (0, 0), B at (2, 2) in a 3×3 image."""
    labels = np.zeros((3, 3), dtype=np.int64)
    labels[0, 0], labels[2, 2] = 1, 2
    w = unet_weight_map(labels, instances=True)
    expected = {
        (1, 1): (math.sqrt(2), math.sqrt(2)),
        (0, 1): (1, math.sqrt(5)),
        (0, 2): (2, 2),
        (1, 0): (1, math.sqrt(5)),
    }
    for (y, x), (d1, d2) in expected.items():
        assert_close(float(w[y, x]), 1 + border(d1, d2), rtol=1e-6, atol=1e-6)
    # Diagonal neighbours are separate objects under 4-connectivity, one under 8.
    touching = np.array([[1, 0], [0, 1]])
    assert unet_weight_map(touching, connectivity=1)[0, 1] > 1
    assert unet_weight_map(touching, connectivity=2)[0, 1] == 1


def test_class_balancing_and_ignore() -> None:
    inst = three_bars()  # 35 object pixels, 15 background
    w = unet_weight_map(inst, instances=True, class_weights="balanced", w0=0)
    assert_close(float(w[0, 0]), 50 / (2 * 35))
    assert_close(float(w[0, 3]), 50 / (2 * 15))
    assert_close(float(w.mean()), 1.0)
    w = unet_weight_map(inst, instances=True, class_weights=[2.0, 0.5])
    assert_close(float(w[0, 0]), 0.5)
    assert_close(float(w[0, 3]), 2 + border(1, 1))
    # A class mask: classes are its own (here 0 and 1); ignored pixels get 0 and are no object.
    mask = (inst > 0).astype(np.int64)
    mask[:, 9] = IGNORE  # removes C: the second nearest of columns 7 and 8 is now A
    w = unet_weight_map(mask, class_weights="balanced")
    assert np.all(w[:, 9] == 0)
    counted = 45  # 30 object pixels, 15 background
    assert_close(float(w[0, 0]), counted / (2 * 30))
    assert_close(float(w[0, 3]), counted / (2 * 15) + border(1, 1))
    assert_close(float(w[0, 7]), counted / (2 * 15) + border(1, 5))
    assert_close(float(w[0, 8]), counted / (2 * 15) + border(2, 6))
    with pytest.raises(ValueError, match="class weight"):
        unet_weight_map(mask, class_weights=[1.0])


def test_fewer_than_two_objects_have_no_border_term() -> None:
    one = np.zeros((6, 6), dtype=np.int64)
    one[2:4, 2:4] = 1
    assert np.all(unet_weight_map(one) == 1)
    assert np.all(unet_weight_map(np.zeros((4, 4), dtype=np.int64)) == 1)


def brute_force(inst: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """The formula literally: all distance maps stacked and sorted, no cut-off."""
    ids = [i for i in np.unique(inst) if i > 0]
    d = np.sort(np.stack([ndimage.distance_transform_edt(inst != i) for i in ids]), axis=0)
    w = np.ones(inst.shape)
    bg = inst == 0
    w[bg] += w0 * np.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2))[bg]
    return w


@pytest.mark.parametrize("sigma", [2.0, 5.0])
def test_matches_brute_force_on_random_cells(sigma: float) -> None:
    """Random touching-cell layout (Voronoi cells with 1-px membranes)."""
    rng = np.random.default_rng(0)
    seeds = np.zeros((96, 80), dtype=np.int64)
    pts = rng.integers(0, [96, 80], size=(25, 2))
    seeds[pts[:, 0], pts[:, 1]] = np.arange(1, 26)
    _, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    cells = seeds[iy, ix]
    membrane = np.zeros_like(cells, dtype=bool)
    membrane[:-1] |= cells[:-1] != cells[1:]
    membrane[:, :-1] |= cells[:, :-1] != cells[:, 1:]
    inst = np.where(membrane, 0, cells)
    w = unet_weight_map(inst, instances=True, sigma=sigma)
    ref = brute_force(inst, 10.0, sigma)
    assert np.abs(w - ref).max() < 10 * 1e-6 + 1e-5
    # Somewhere a 1-px membrane has a cell on either side: d1 = d2 = 1.
    assert_close(float(w.max()), 1 + border(1, 1, sigma=sigma))


def test_cache_by_path_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "0.png"
    path.write_bytes(b"x")
    labels = torch.from_numpy(three_bars())
    cache = WeightMapCache(instances=True)
    a = cache(path, labels)
    b = cache(path, labels)
    assert a is b and (cache.hits, cache.misses) == (1, 1)
    os.utime(path, ns=(1, 1))  # an edited file is recomputed
    assert cache(path, labels) is not a and cache.misses == 2
    # On disk: a second cache (another worker) reads the first one's file.
    disk = WeightMapCache(cache_dir=tmp_path / "cache", instances=True)
    disk(path, labels)
    (written,) = (tmp_path / "cache").glob("*.npy")
    np.save(written, np.full((5, 10), 7, np.float32))  # prove the file is what is read
    assert np.all(WeightMapCache(cache_dir=tmp_path / "cache", instances=True)(path, labels) == 7)


def test_pipeline_moves_weights_with_the_mask() -> None:
    """Weights equal to the mask's labels stay equal under scale, elastic, crop and flip."""
    h, w = 40, 48
    labels = torch.arange(h * w).view(h, w) + 256  # no pixel labelled 255 (the ignore label)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    t = train_transforms(
        crop_size=(36, 44), scale_range=(0.8, 1.3), fill=(128,) * 3, elastic_sigma=4.0
    )
    torch.manual_seed(0)
    for _ in range(10):
        _, out_mask, out_weights = t(image, labels, labels.float())
        assert out_weights.dtype == torch.float32 and type(out_weights) is torch.Tensor
        valid = out_mask != IGNORE
        assert torch.equal(out_weights[valid], out_mask[valid].float())
        assert torch.all(out_weights[~valid] == 0)  # padding and outside: weight 0
    batch = [t(image, labels, WeightMap(labels.float())) for _ in range(2)]
    batch.append(
        (torch.zeros(3, 30, 30), torch.zeros(30, 30, dtype=torch.long), torch.ones(30, 30))
    )
    images, masks, weights = PadCollate(fill=(0.5,) * 3)(batch)
    assert weights.shape == masks.shape == (3, 36, 44) and images.shape == (3, 3, 36, 44)
    assert torch.all(weights[2, 30:] == 0) and torch.all(weights[2, :30, :30] == 1)
    logits = torch.randn(3, 2, 36, 44)
    masks = masks.clamp(max=1).where(masks != IGNORE, masks)
    assert torch.isfinite(SegmentationLoss()(logits, masks, weight_map=weights))


def test_with_weight_maps_dataset(tmp_path: Path) -> None:
    """A folder dataset yields (image, mask, weights), the weights computed once per file."""
    (tmp_path / "image").mkdir()
    (tmp_path / "label").mkdir()
    raw = np.where(three_bars() > 0, 255, 0).astype(np.uint8)
    for i in range(2):
        Image.fromarray(np.stack([raw] * 3, -1)).save(tmp_path / "image" / f"{i}.png")
        Image.fromarray(raw).save(tmp_path / "label" / f"{i}.png")
    data = FolderPairs(tmp_path, meta="isbi2012")
    cache = WeightMapCache(class_weights="balanced")
    ds = WithWeightMaps(data, cache)
    assert len(ds) == 2 and ds.classes == ("membrane", "cell")
    image, mask, weights = ds[0]
    assert isinstance(weights, WeightMap)
    assert_close(weights.numpy(), unet_weight_map(three_bars() > 0, class_weights="balanced"))
    data.transforms = train_transforms(crop_size=(4, 8), scale_range=None, fill=(128,) * 3)
    for _ in range(3):
        image, mask, weights = ds[1]
        assert image.shape == (3, 4, 8) and weights.shape == mask.shape == (4, 8)
    assert cache.misses == 2 and cache.hits == 2


def test_isbi_slice(shared_path: Callable[..., Path]) -> None:
    label = shared_path("data", "isbi2012-em", "label", "0.png")
    cells = (np.array(Image.open(label)) == 255).astype(np.int64)
    w = unet_weight_map(cells, class_weights="balanced")
    membrane = cells == 0
    # Thin membranes between two cells weigh most; cell interiors only carry w_c.
    assert w[membrane].max() > 10 and np.allclose(w[~membrane], w[~membrane][0])
