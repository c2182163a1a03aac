"""Synthetic shapes: a generated segmentation dataset for tests, demos and quick experiments.

Every image has a textured background (smooth multi-scale colour noise, a colour gradient and
sometimes low-frequency waves, all different per image) and 1–4 filled shapes of random class,
size (28–52 % of the short side: 27–50 px at the default 96×128), rotation, position and colour,
inside the frame and painted in order, so later shapes occlude earlier ones (partly: a new shape
is placed, if it can be, at most a quarter on earlier ones). Colours are drawn independently of
the class (only contrast with what lies underneath is favoured), so the class must be read from
the outline: circle, square, triangle, ring or bar. Labels are exact (no ignore pixels) unless
``ignore_border`` asks for a band of them along every label boundary.

Samples are a pure function of ``(seed, split, index)``: nothing is read from disk, each split
draws from its own random stream, and a sample is rendered on first access (≈1 ms) and cached.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from fcnseg.choices import unknown_choice
from fcnseg.data.base import DataError, SegmentationDataset, Transform, as_mask

__all__ = ["SyntheticShapes"]

#: split → (stream id, default number of images).
SPLITS: dict[str, tuple[int, int]] = {"train": (0, 400), "val": (1, 60), "test": (2, 60)}
_PLACEMENT_TRIES = 8


@lru_cache(maxsize=64)
def _smooth_interp(n_out: int, n_in: int) -> np.ndarray:
    """n_out×n_in matrix spreading ``n_in`` control points over ``n_out`` pixels (smoothstep)."""
    pos = np.linspace(0.0, n_in - 1, n_out)
    i0 = np.minimum(pos.astype(np.int64), n_in - 2)
    t = pos - i0
    t = t * t * (3.0 - 2.0 * t)
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    m[rows, i0] = 1.0 - t
    m[rows, i0 + 1] += t
    return m


class SyntheticShapes(SegmentationDataset):
    """Generated shapes on textured backgrounds; see the module docstring.

    Args:
        root: ignored (accepted for the registry's ``Cls(root, split, ...)`` signature).
        split: ``"train"``, ``"val"`` or ``"test"`` (independent random streams).
        transforms: joint ``(image, mask)`` transform applied by ``dataset[i]``.
        num_images: split size; defaults to 400 / 60 / 60.
        size: image ``(height, width)``, at least 32×32.
        seed: non-negative base seed; samples are a function of ``(seed, split, index)``.
        ignore_border: if > 0, label pixels within this many pixels (chessboard distance) of a
            different label as ``ignore_index``; 0 keeps labels clean.
        cache: keep rendered samples in memory (≈50 KB each at the default size).
    """

    classes = ("background", "circle", "square", "triangle", "ring", "bar")
    splits = tuple(SPLITS)
    palette = (
        (0, 0, 0),
        (230, 25, 75),
        (60, 180, 75),
        (0, 130, 200),
        (255, 225, 25),
        (145, 30, 180),
    )

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        transforms: Transform | None = None,
        *,
        num_images: int | None = None,
        size: tuple[int, int] = (96, 128),
        seed: int = 0,
        ignore_border: int = 0,
        cache: bool = True,
    ) -> None:
        super().__init__(transforms)
        if split not in SPLITS:
            msg = unknown_choice("split", split, SPLITS, where=" for synthetic", label="splits")
            raise DataError(msg)
        stream, default_n = SPLITS[split]
        n = default_n if num_images is None else int(num_images)
        if n < 0:
            raise DataError(f"synthetic: num_images must be >= 0, got {num_images}")
        height, width = (int(s) for s in size)
        if height < 32 or width < 32:
            raise DataError(f"synthetic: size must be at least 32×32, got {tuple(size)}")
        if seed < 0:
            raise DataError(f"synthetic: seed must be >= 0, got {seed}")
        if ignore_border < 0:
            raise DataError(f"synthetic: ignore_border must be >= 0, got {ignore_border}")
        self.root = root
        self.split = split
        self.num_images = n
        self.size = (height, width)
        self.seed = int(seed)
        self.ignore_border = int(ignore_border)
        self._stream = stream
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.num_images

    def _index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self.num_images
        if not 0 <= i < self.num_images:
            raise IndexError(f"index {index} out of range ({self.num_images} {self.split} images)")
        return i

    def name(self, index: int) -> str:
        return f"{self.split}_{self._index(index):04d}"

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` as numpy arrays: image uint8 H×W×3 (RGB), labels uint8 H×W."""
        i = self._index(index)
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        rng = np.random.default_rng([self.seed, self._stream, i])
        image, labels = _render(rng, self.size, len(self.classes) - 1)
        if self.ignore_border:
            labels[_near_boundary(labels, self.ignore_border)] = self.ignore_index
        image.flags.writeable = False
        labels.flags.writeable = False
        if self._cache is not None:
            self._cache[i] = (image, labels)
        return image, labels

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        image, labels = self.sample(index)
        img = torch.from_numpy(image.transpose(2, 0, 1).copy())
        return tv_tensors.Image(img), as_mask(torch.from_numpy(labels.copy()))


def _render(
    rng: np.random.Generator, size: tuple[int, int], num_shapes: int
) -> tuple[np.ndarray, np.ndarray]:
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    canvas = _background(rng, height, width, yy, xx)
    labels = np.zeros((height, width), np.uint8)
    short = min(height, width)
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(1, num_shapes + 1))
        r = rng.uniform(0.14, 0.26) * short  # diameter 28–52 % of the short side (27–50 px)
        theta = rng.uniform(0.0, 2.0 * np.pi)
        aspect = rng.uniform(0.28, 0.38)  # bars only
        # Occlusion is allowed but kept partial: of a few positions (shape inside the frame),
        # take the first that lands at most a quarter on earlier shapes, else the least covered.
        best: tuple[float, np.ndarray, float, float] | None = None
        for _ in range(_PLACEMENT_TRIES):
            cy = rng.uniform(0.9 * r, height - 0.9 * r)
            cx = rng.uniform(0.9 * r, width - 0.9 * r)
            mask = _shape(cls, yy - cy, xx - cx, r, theta, aspect)
            overlap = float((mask & (labels > 0)).sum()) / max(int(mask.sum()), 1)
            if best is None or overlap < best[0]:
                best = (overlap, mask, cy, cx)
            if overlap <= 0.25:
                break
        assert best is not None
        _, inside, cy, cx = best
        # Colour: independent of class; of a few candidates, take the one contrasting most with
        # what it is painted over, so every shape stays visible.
        under = canvas[inside].mean(axis=0)
        candidates = rng.uniform(0.0, 255.0, size=(6, 3))
        colour = candidates[np.argmax(((candidates - under) ** 2).sum(axis=1))]
        # Mild shading across the shape, so it is not perfectly flat either.
        phi = rng.uniform(0.0, 2.0 * np.pi)
        ramp = ((xx - cx) * np.cos(phi) + (yy - cy) * np.sin(phi)) / r
        shade = rng.uniform(0.0, 25.0, size=3)
        canvas[inside] = colour + ramp[inside, None] * shade
        labels[inside] = cls
    canvas += rng.normal(0.0, rng.uniform(2.0, 8.0), size=canvas.shape)
    return np.clip(canvas, 0.0, 255.0).round().astype(np.uint8), labels


def _background(
    rng: np.random.Generator, height: int, width: int, yy: np.ndarray, xx: np.ndarray
) -> np.ndarray:
    """Smooth random colour field: base colour + two noise octaves + gradient (+ waves)."""
    canvas = np.broadcast_to(rng.uniform(40.0, 215.0, size=3), (height, width, 3)).copy()
    for (gh, gw), amp in (((3, 4), (20.0, 60.0)), ((6, 8), (5.0, 25.0))):
        grid = rng.normal(0.0, 1.0, size=(gh, gw, 3)) * rng.uniform(*amp, size=3)
        rows = np.tensordot(_smooth_interp(height, gh), grid, axes=(1, 0))  # H×gw×3
        canvas += (rows.transpose(0, 2, 1) @ _smooth_interp(width, gw).T).transpose(0, 2, 1)
    phi = rng.uniform(0.0, 2.0 * np.pi)
    t = (xx * np.cos(phi) + yy * np.sin(phi)) / max(height, width)
    canvas += (t - t.mean())[..., None] * rng.uniform(-60.0, 60.0, size=3)
    if rng.random() < 0.5:
        psi = rng.uniform(0.0, 2.0 * np.pi)
        period = rng.uniform(24.0, 64.0)
        wave = np.sin(2 * np.pi * (xx * np.cos(psi) + yy * np.sin(psi)) / period)
        canvas += wave[..., None] * rng.uniform(-20.0, 20.0, size=3)
    return canvas


def _shape(
    cls: int, dy: np.ndarray, dx: np.ndarray, r: float, theta: float, aspect: float
) -> np.ndarray:
    """Boolean mask of shape class ``cls`` of radius ``r`` centred at offsets (0, 0)."""
    c, s = np.cos(theta), np.sin(theta)
    u, v = dx * c + dy * s, dy * c - dx * s
    if cls == 1:  # circle
        return u * u + v * v <= r * r
    if cls == 2:  # square
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8 * r
    if cls == 3:  # equilateral triangle, circumradius 1.3 r
        inside = np.ones(u.shape, bool)
        for k in range(3):
            a = 2.0 * np.pi * k / 3.0
            inside &= u * np.cos(a) + v * np.sin(a) <= 0.65 * r
        return inside
    if cls == 4:  # ring
        d2 = u * u + v * v
        return (d2 <= r * r) & (d2 >= (0.5 * r) ** 2)
    # bar: a long thin rectangle
    return (np.abs(u) <= 1.15 * r) & (np.abs(v) <= aspect * r)


def _near_boundary(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` (chessboard distance) of a pixel with a different label."""
    h, w = labels.shape
    padded = np.pad(labels, width, mode="edge")
    near = np.zeros((h, w), bool)
    for dy in range(2 * width + 1):
        for dx in range(2 * width + 1):
            near |= padded[dy : dy + h, dx : dx + w] != labels
    return near
