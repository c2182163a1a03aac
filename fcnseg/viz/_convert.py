"""Inputs of :mod:`fcnseg.viz` as numpy arrays: images, masks, palettes; output paths."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

RGB = tuple[int, int, int]
ArrayLike = np.ndarray | torch.Tensor


def image_array(image: ArrayLike) -> np.ndarray:
    """Any supported image as a uint8 H×W×3 array."""
    if isinstance(image, torch.Tensor):
        arr = image.detach().cpu()
        if arr.dim() == 3 and arr.shape[0] in (1, 3):
            arr = arr.permute(1, 2, 0)
        arr = arr.numpy()
    else:
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[-1] not in (1, 3) and arr.shape[0] in (1, 3):
            arr = arr.transpose(1, 2, 0)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"expected an H×W×3 or 3×H×W image, got shape {tuple(np.shape(image))}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype != np.uint8:
        scale = 255.0 if np.issubdtype(arr.dtype, np.floating) else 1.0
        arr = np.clip(np.asarray(arr, np.float64) * scale, 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(arr)


def mask_array(mask: ArrayLike) -> np.ndarray:
    """Any supported mask as an int64 H×W array (a leading singleton dimension is dropped)."""
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise ValueError(f"expected an integer H×W mask, got {arr.dtype} of shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def palette_array(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """RGB triples as a uint8 N×3 array; raises on values outside 0–255."""
    pal = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    if pal.size and (pal.min() < 0 or pal.max() > 255):
        raise ValueError("palette colours must be RGB triples in 0–255")
    return pal.astype(np.uint8)


def check_labels(mask: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """Boolean map of labelled (non-ignored) pixels; raises on labels outside the palette."""
    valid = mask != ignore_index if ignore_index is not None else np.ones(mask.shape, bool)
    labels = mask[valid]
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise ValueError(
            f"mask has label(s) {np.unique(bad)[:5].tolist()} outside [0, {num_classes}) "
            f"and not the ignore index {ignore_index}"
        )
    return valid


def present_labels(mask: np.ndarray, ignore_index: int | None) -> list[int]:
    """The sorted class indices in ``mask``, ``ignore_index`` left out."""
    values = np.unique(mask)
    return [int(v) for v in values if v != ignore_index]


def prepare_path(path: str | Path) -> Path:
    """``path`` as a ``Path`` whose parent directories exist."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
