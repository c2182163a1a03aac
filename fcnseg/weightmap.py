"""The U-Net paper's loss weight map, which makes the network learn the thin borders between
touching objects:

    w(x) = w_c(x) + w0 · exp(−(d1(x) + d2(x))² / (2σ²))

``w_c`` balances the class frequencies, ``d1``/``d2`` are the distances to the nearest and the
second nearest object (paper: w0 = 10, σ ≈ 5 px). Objects are instances, or the connected
components of the foreground classes of a semantic mask. Any model can use it: pass the map as
``weight_map`` to :class:`fcnseg.losses.SegmentationLoss`. Weight maps are precomputed per
ground truth image (the paper does so), so :class:`WeightMapCache` memoises them by file, and
:class:`WithWeightMaps` feeds them through a dataset's joint transforms.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from fcnseg.data.base import IGNORE_INDEX

__all__ = ["WeightMapCache", "WithWeightMaps", "class_balance_weights", "unet_weight_map"]

#: Border-term cut-off: beyond this multiple of σ, exp(−d²/2σ²) < 1e-6 and is taken as 0.
_CUTOFF_SIGMAS = math.sqrt(2 * math.log(1e6))


def _as_numpy(labels: Any) -> np.ndarray:
    array = labels.numpy(force=True) if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if array.dtype == np.bool_:
        array = array.astype(np.int64)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"expected an H×W integer label map, got {array.dtype} {array.shape}")
    return array


def class_balance_weights(classes: np.ndarray, counted: np.ndarray) -> dict[int, float]:
    """Inverse-frequency class weights ``N / (K · n_c)`` over the ``counted`` pixels (K classes
    present), so that the mean weight of a counted pixel is 1."""
    values, counts = np.unique(classes[counted], return_counts=True)
    total = counts.sum()
    return {int(v): float(total / (len(values) * n)) for v, n in zip(values, counts, strict=True)}


def _two_nearest(instances: np.ndarray, count: int, cutoff: float) -> tuple[np.ndarray, ...]:
    """Per pixel, the distances to the nearest and second nearest of instances 1..count
    (``inf`` beyond ``cutoff``), via one Euclidean distance transform per instance, each on the
    instance's bounding box grown by ``cutoff``, keeping a running two smallest."""
    h, w = instances.shape
    d1 = np.full((h, w), np.inf)
    d2 = np.full((h, w), np.inf)
    reach = math.ceil(cutoff) + 1
    for i, box in enumerate(ndimage.find_objects(instances, max_label=count), start=1):
        if box is None:
            continue
        ys = slice(max(0, box[0].start - reach), min(h, box[0].stop + reach))
        xs = slice(max(0, box[1].start - reach), min(w, box[1].stop + reach))
        # The whole instance lies inside the window, so distances within it are exact.
        d = ndimage.distance_transform_edt(instances[ys, xs] != i)
        a, b = d1[ys, xs], d2[ys, xs]
        d2[ys, xs] = np.minimum(b, np.maximum(a, d))
        d1[ys, xs] = np.minimum(a, d)
    return d1, d2


def unet_weight_map(
    labels: Any,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: str | Sequence[float] | None = None,
    instances: bool = False,
    background: int = 0,
    ignore_index: int = IGNORE_INDEX,
    connectivity: int = 1,
) -> np.ndarray:
    """The U-Net loss weight map of one label image, float32 H×W.

    Args:
        labels: H×W integers (array or tensor): a class mask (default) whose non-``background``
            classes are split into objects by connected components, or, with ``instances=True``,
            instance ids (0 = background, each object its own id).
        w0, sigma: height and width (px) of the border term; the paper's 10 and ~5.
        class_weights: ``w_c``: ``None`` (1 everywhere), ``"balanced"`` (inverse class
            frequency in this image, mean 1 over the counted pixels) or one weight per class
            (for instances: ``[background, object]``).
        background: the class between objects (for ISBI 2012: membrane, class 0).
        ignore_index: its pixels get weight 0 (the loss skips them anyway) and are no object.
        connectivity: 1 (4-neighbours, keeps cells apart across a diagonal gap) or 2.

    The border term is added on background pixels only, where ``d1``/``d2`` are the Euclidean
    distances (pixel centre to pixel centre) to the nearest pixel of the nearest and second
    nearest object; inside an object the distance to itself would be 0 and the term meaningless.
    Terms below ``w0 · 1e-6`` (``d1 + d2 > 5.3σ``) are dropped, which bounds the work.
    """
    array = _as_numpy(labels)
    counted = array != ignore_index
    if instances:
        objects = np.where(counted, array, 0)
        classes = (objects > 0).astype(np.int64)
        count = int(objects.max(initial=0))
    else:
        classes = array.astype(np.int64)
        objects = np.zeros(array.shape, dtype=np.int64)
        count = 0
        structure = ndimage.generate_binary_structure(2, connectivity)
        for c in np.unique(array[counted]):
            if c == background:
                continue
            comp, n = ndimage.label(array == c, structure=structure)
            objects[comp > 0] = comp[comp > 0] + count
            count += n
    weights = np.zeros(array.shape, dtype=np.float64)
    if class_weights is None:
        weights[counted] = 1.0
    else:
        if isinstance(class_weights, str):
            if class_weights != "balanced":
                raise ValueError(
                    f"class_weights must be 'balanced' or a list, not {class_weights!r}"
                )
            table = class_balance_weights(classes, counted)
        else:
            table = dict(enumerate(float(v) for v in class_weights))
        for c in np.unique(classes[counted]):
            if int(c) not in table:
                raise ValueError(f"no class weight for class {int(c)} ({len(table)} given)")
            weights[counted & (classes == c)] = table[int(c)]
    if count >= 2 and w0 != 0 and sigma > 0:
        d1, d2 = _two_nearest(objects, count, _CUTOFF_SIGMAS * sigma)
        between = counted & (objects == 0) & np.isfinite(d2)
        total = d1[between] + d2[between]
        weights[between] += w0 * np.exp(-(total**2) / (2 * sigma**2))
    return weights.astype(np.float32)


class WeightMapCache:
    """:func:`unet_weight_map` memoised per label file: key ``(path, mtime, size, options)``, so
    an edited file is recomputed. Keeps the ``maxsize`` most recent maps in memory (ISBI 2012:
    30 × 1 MiB), and with ``cache_dir`` also as ``.npy`` files that outlive the process (and
    DataLoader workers, each of which has its own memory).
    """

    def __init__(
        self, maxsize: int = 256, cache_dir: str | Path | None = None, **options: Any
    ) -> None:
        self.maxsize = int(maxsize)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.options = options
        self._memory: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def _key(self, path: str | Path) -> tuple:
        stat = os.stat(path)
        options = tuple(sorted((k, repr(v)) for k, v in self.options.items()))
        return (str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size, options)

    def __call__(self, path: str | Path, labels: Any) -> np.ndarray:
        """The weight map of ``labels``, the (already remapped) class mask read from ``path``."""
        key = self._key(path)
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        self.misses += 1
        file = None
        if self.cache_dir is not None:
            import hashlib

            name = hashlib.sha1(repr(key).encode()).hexdigest()[:20]
            file = self.cache_dir / f"{Path(path).stem}-{name}.npy"
        if file is not None and file.is_file():
            weights = np.load(file)
        else:
            weights = unet_weight_map(labels, **self.options)
            if file is not None:
                file.parent.mkdir(parents=True, exist_ok=True)
                tmp = file.with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(tmp, weights)
                os.replace(tmp, file)
        if weights.shape != tuple(labels.shape):
            raise ValueError(f"cached weight map of {path} has shape {weights.shape}")
        self._memory[key] = weights
        while len(self._memory) > self.maxsize:
            self._memory.popitem(last=False)
        return weights


class WithWeightMaps(torch.utils.data.Dataset):
    """A file dataset whose samples carry their cached U-Net weight map:
    ``(image, mask, weights)`` after the dataset's joint transforms, which move the weights
    with the mask (:class:`fcnseg.data.transforms.SegmentationTransforms` does). Batch with
    :class:`fcnseg.data.transforms.PadCollate` (pads weights with 0).

    ``dataset`` needs ``load(i)`` and ``transforms``; with ``samples`` holding ``.mask`` paths
    (every file dataset of fcnseg) the maps are cached per file, otherwise computed per sample.
    """

    def __init__(self, dataset: Any, cache: WeightMapCache) -> None:
        self.dataset = dataset
        self.cache = cache

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:  # classes, palette, ignore_index, name(), ...
        if name in ("dataset", "cache"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> tuple[Any, Any, Any]:
        from fcnseg.data.transforms import WeightMap

        image, mask = self.dataset.load(index)
        samples = getattr(self.dataset, "samples", None)
        if samples is not None:  # file data: cached per label file
            array = self.cache(samples[index].mask, mask)
        else:  # generated data (no file to key a cache on): computed each time
            array = unet_weight_map(mask, **self.cache.options)
        weights = WeightMap(torch.from_numpy(array))
        transforms = self.dataset.transforms
        if transforms is None:
            return image, mask, weights
        return transforms(image, mask, weights)
