"""Reading images and label masks from disk, strictly: every failure is a :class:`DataError`.

Conventions shared by every dataset:

* :func:`read_image` returns an ``Image`` (uint8, 3×H×W, RGB) in *display* orientation (the EXIF
  orientation tag is applied). Grey, palette, CMYK, YCbCr and 16-bit images are converted to RGB;
  an alpha channel is **dropped** (the colour channels are kept as stored, not composited), which
  is what PIL's and torchvision's RGB conversions do.
* :func:`read_mask` returns class indices (int64, H×W), never colours: a palette PNG gives its
  palette indices, a grey (8- or 16-bit) image its values. A colour (RGB/RGBA) mask is an error;
  convert it once with :func:`colors_to_indices` and the dataset's palette.
* PIL's decompression-bomb guard stays on. ``max_pixels`` (default: ``PIL.Image.MAX_IMAGE_PIXELS``,
  89,478,485 px) is a hard limit: larger images raise :class:`DataError` (PIL itself only warns
  between 1× and 2× its limit).
* A truncated file raises unless the caller set ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True``
  globally, which this module respects.
* Every error message names the file (or the ``name`` given with encoded bytes) and says what to
  do; ``tests/test_bad_input.py`` covers each kind of bad input (see
  ``docs/reliability.md``).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import tv_tensors

from fcnseg.data.base import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MASK_EXTENSIONS",
    "LabelMap",
    "check_pair",
    "colors_to_indices",
    "format_values",
    "read_id_list",
    "read_image",
    "read_mask",
]

PathLike = str | os.PathLike[str]
Color = tuple[int, int, int]

#: File extensions recognised as images / as (lossless) masks when a dataset scans a folder.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".pgm")

# Modes PIL converts to RGB itself (alpha dropped); 16/32-bit grey is scaled by hand.
_RGB_CONVERTIBLE = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
_INDEX_MODES = {"1", "L", "P", "I", *_SIXTEEN_BIT}
_COLOR_MODES = {"RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}

_pil_limit_lock = threading.Lock()


def format_values(values: Iterable[int], limit: int = 10) -> str:
    """``[3, 7, 300, …]``: at most ``limit`` values, then how many more."""
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    more = f", … ({len(values) - limit} more)" if len(values) > limit else ""
    return f"[{shown}{more}]"


@contextlib.contextmanager
def _pil_limit(limit: int | None) -> Iterator[None]:
    """Let PIL's own guard allow ``limit`` pixels when that exceeds PIL's current setting.

    Only then is the global ``Image.MAX_IMAGE_PIXELS`` raised (under a lock, restored after);
    otherwise PIL's guard is left untouched and :func:`_open` enforces the smaller limit itself.
    """
    pil = Image.MAX_IMAGE_PIXELS
    if pil is None or (limit is not None and limit <= pil):
        yield
        return
    with _pil_limit_lock:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = limit
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


_REPLACE = "replace the file (re-download or re-export it) or remove it from the data set"


def _check_file(path: Path, what: str) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{what} file {path} does not exist") from None
    except OSError as exc:
        raise DataError(f"cannot access {what} file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. an embedded NUL character
        raise DataError(f"{what} path {str(path)!r} is not a valid path: {exc}") from None
    if not path.is_file():
        raise DataError(f"{what} path {path} is not a regular file")
    if size == 0:
        raise DataError(f"{what} file {path} is empty (0 bytes); {_REPLACE}")


@contextlib.contextmanager
def _open(
    source: PathLike | bytes, what: str, max_pixels: int | None, name: str | None = None
) -> Iterator[Image.Image]:
    """Open, fully decode and EXIF-orient an image (a file, or encoded bytes called ``name`` in
    messages); any failure becomes a :class:`DataError`."""
    if isinstance(source, bytes):
        path: Path | str = name or "<bytes>"
        if not source:
            raise DataError(f"{what} file {path} is empty (0 bytes); {_REPLACE}")
        opened: PathLike | io.BytesIO = io.BytesIO(source)
    else:
        path = opened = Path(source)
        _check_file(path, what)
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        with _pil_limit(limit), Image.open(opened) as im:
            width, height = im.size
            if limit is not None and width * height > limit:
                raise DataError(
                    f"{what} file {path} is {width}×{height} = {width * height:,} pixels, more "
                    f"than max_pixels={limit:,} (decompression-bomb guard); raise max_pixels if "
                    "the file is trusted"
                )
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
            yield im
    except DataError:
        raise
    except Image.UnidentifiedImageError:
        raise DataError(
            f"{what} file {path} is not an image PIL can read (not an image despite its name, an "
            f"unsupported format, or a corrupt header); {_REPLACE}"
        ) from None
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"{what} file {path} is too large for max_pixels={limit:,} (PIL's decompression-bomb "
            f"guard: {exc}); raise max_pixels if the file is trusted"
        ) from None
    except OSError as exc:
        if exc.errno is not None:  # the OS refused (permissions, I/O error), not the decoder
            raise DataError(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc
        raise _decode_error(what, path, exc) from exc
    except Exception as exc:  # PIL also raises SyntaxError, ValueError, EOFError, struct.error
        raise _decode_error(what, path, exc) from exc


def _decode_error(what: str, path: Path | str, exc: Exception) -> DataError:
    reason = str(exc) or type(exc).__name__
    advice = f"the file is corrupt; {_REPLACE}"
    if "truncated" in reason:
        reason = f"the file is truncated ({reason})"
        advice = (
            f"{_REPLACE}, or set PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True to accept truncated "
            "files"
        )
    return DataError(f"cannot decode {what} file {path}: {reason}; {advice}")


def _sixteen_to_eight(array: np.ndarray) -> np.ndarray:
    """16-bit grey → 8 bits by the 16-bit range: ``round(v · 255 / 65535)`` (65535 → 255)."""
    return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def read_image(
    path: PathLike | bytes, *, max_pixels: int | None = None, name: str | None = None
) -> tv_tensors.Image:
    """Read an image file (or its encoded ``bytes``, called ``name`` in error messages) as an
    ``Image`` (uint8, 3×H×W, RGB, EXIF orientation applied).

    Modes: RGB as is; ``1``/L/P/CMYK/YCbCr converted by PIL; RGBA/LA/PA: alpha dropped (not
    composited); 16-bit grey (``I;16*``) scaled by its bit depth, ``round(v · 255 / 65535)``; 32-bit
    ``I`` is treated as 16-bit when its values lie in 0..65535 (how PIL opens some 16-bit files),
    otherwise rejected, as are float (``F``) images — there is no faithful 8-bit rendering. A
    16-bit image whose data use fewer bits (e.g. 12-bit microscopy) therefore comes out dark;
    stretch such data before training. ``max_pixels``: see the module docstring.
    """
    with _open(path, "image", max_pixels, name) as im:
        if isinstance(path, bytes):
            path = name or "<bytes>"  # type: ignore[assignment]  # for the messages below
        mode = im.mode
        if mode in _SIXTEEN_BIT or mode == "I":
            grey = np.array(im)
            if mode == "I" and grey.size and (grey.min() < 0 or grey.max() > 65535):
                raise DataError(
                    f"image file {path} is a 32-bit integer image with values "
                    f"{grey.min()}..{grey.max()} outside 0..65535; convert it to 8 or 16 bits"
                )
            array = np.repeat(_sixteen_to_eight(grey)[..., None], 3, axis=2)
        elif mode in _RGB_CONVERTIBLE:
            if mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")  # PIL's route for palettes with transparency
            array = np.array(im if im.mode == "RGB" else im.convert("RGB"))
        else:
            raise DataError(
                f"image file {path} has unsupported mode {mode!r} (no faithful 8-bit RGB "
                f"rendering); convert it to 8-bit RGB or 8/16-bit grey. Supported modes: "
                f"{sorted(_RGB_CONVERTIBLE | _SIXTEEN_BIT | {'I'})}"
            )
    return tv_tensors.Image(torch.from_numpy(array).permute(2, 0, 1).contiguous())


def read_mask(
    path: PathLike | bytes, *, max_pixels: int | None = None, name: str | None = None
) -> torch.Tensor:
    """Read a label mask file (or its encoded ``bytes``, called ``name`` in error messages) as
    class indices (int64, H×W, EXIF orientation applied).

    Palette (``P``) PNGs give their palette indices, grey images (``1``, L, ``I;16*``, ``I``) their
    values. Colour masks (RGB, RGBA, …) raise :class:`DataError`: convert them with
    :func:`colors_to_indices` and the dataset's palette. Values are not range-checked here (see
    :func:`check_pair`).
    """
    with _open(path, "mask", max_pixels, name) as im:
        if isinstance(path, bytes):
            path = name or "<bytes>"  # type: ignore[assignment]  # for the messages below
        mode = im.mode
        if mode in _COLOR_MODES:
            raise DataError(
                f"mask file {path} holds colours (mode {mode}), not class indices; convert it "
                "to an index PNG with the dataset's palette, e.g. "
                "fcnseg.data.io.colors_to_indices(np.asarray(Image.open(path).convert('RGB')), "
                "dataset.palette), and save the result as an 8-bit grey or palette PNG"
            )
        if mode not in _INDEX_MODES:
            alpha = " (drop the alpha channel: save it as mode L or P)" if "A" in mode else ""
            raise DataError(
                f"mask file {path} has unsupported mode {mode!r}; a mask must be a palette (P) or "
                f"grey (1, L, I;16, I) image of class indices{alpha}"
            )
        array = np.array(im)
    return torch.from_numpy(array.astype(np.int64))


def _as_color(color: Sequence[int]) -> Color:
    r, g, b = (int(c) for c in color)
    return (r, g, b)


def colors_to_indices(
    rgb: np.ndarray,
    palette: Sequence[Sequence[int]] | Mapping[Sequence[int], int],
    *,
    source: PathLike | None = None,
) -> np.ndarray:
    """Map a colour mask (H×W×3, or ×4 with alpha ignored) to class indices (int64, H×W).

    ``palette`` is either a sequence (colour ``i`` → index ``i``) or a mapping colour → index (to
    send e.g. VOC's boundary colour ``(224, 224, 192)`` to 255). Colours absent from it raise
    :class:`DataError` naming them (and ``source``, the file, when given); a colour listed for two
    different indices raises ``ValueError``.
    """
    rgb = np.asarray(rgb)
    where = f"colour mask {source}" if source is not None else "colour mask"
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise DataError(f"{where} must be H×W×3 (RGB), got shape {tuple(rgb.shape)}")
    pairs = palette.items() if isinstance(palette, Mapping) else enumerate(palette)
    table: dict[int, int] = {}
    for a, b in pairs:
        color, index = (_as_color(a), int(b)) if isinstance(palette, Mapping) else (_as_color(b), a)
        key = (color[0] << 16) | (color[1] << 8) | color[2]
        if table.get(key, index) != index:
            raise ValueError(
                f"palette colour {color} is given for indices {table[key]} and {index}"
            )
        table.setdefault(key, index)
    channels = rgb[..., :3].astype(np.int64)
    keys = (channels[..., 0] << 16) | (channels[..., 1] << 8) | channels[..., 2]
    uniques, inverse = np.unique(keys, return_inverse=True)
    unknown = [int(k) for k in uniques if int(k) not in table]
    if unknown:
        counts = {int(k): int(c) for k, c in zip(*np.unique(keys, return_counts=True), strict=True)}
        listed = [f"({k >> 16}, {(k >> 8) & 255}, {k & 255}) ×{counts[k]} px" for k in unknown[:8]]
        more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        raise DataError(f"{where} has colours not in the palette: {', '.join(listed)}{more}")
    lut = np.array([table[int(k)] for k in uniques], dtype=np.int64)
    return lut[inverse.reshape(keys.shape)]


class LabelMap:
    """Raw mask value → class index (a lookup table); unlisted raw values raise :class:`DataError`.

    Datasets use it for the explicit remaps (CamVid void 11 → 255, Cityscapes labelId → trainId,
    ADE20K ``k → k-1``, ISBI 0/255 → 0/1), so an unexpected raw value is reported as such rather
    than as an out-of-range class after remapping.
    """

    def __init__(self, mapping: Mapping[int, int], *, name: str = "label map") -> None:
        if not mapping:
            raise ValueError("LabelMap needs at least one raw value")
        if min(mapping) < 0:
            raise ValueError(f"{name}: raw mask values must be ≥ 0, got {min(mapping)}")
        self.mapping = {int(k): int(v) for k, v in mapping.items()}
        self.name = name
        self.lut = torch.full((max(self.mapping) + 1,), -1, dtype=torch.int64)
        for raw, label in self.mapping.items():
            self.lut[raw] = label

    def __call__(self, raw: torch.Tensor, path: PathLike = "<mask>") -> torch.Tensor:
        if raw.numel() == 0:
            return raw.to(torch.int64)
        outside = (raw < 0) | (raw >= len(self.lut))
        safe = raw.clamp(0, len(self.lut) - 1)
        mapped = self.lut[safe]
        bad = outside | (mapped < 0)
        if bool(bad.any()):
            values = torch.unique(raw[bad]).tolist()
            raise DataError(
                f"mask file {path} has raw values {format_values(values)} that the {self.name} "
                f"does not list (known: {format_values(sorted(self.mapping), 40)}); is it a mask "
                "of another annotation format? fix or replace it"
            )
        return mapped

    def __repr__(self) -> str:
        return f"LabelMap({self.mapping!r}, name={self.name!r})"


def check_pair(
    image: torch.Tensor,
    mask: torch.Tensor,
    num_classes: int,
    ignore_index: int | None,
    image_path: PathLike,
    mask_path: PathLike,
) -> None:
    """Raise :class:`DataError` unless ``mask`` (H×W) matches ``image`` (…×H×W) in size and holds
    only labels in ``[0, num_classes) ∪ {ignore_index}``."""
    ih, iw = image.shape[-2:]
    mh, mw = mask.shape[-2:]
    if (ih, iw) != (mh, mw):
        hint = ""
        if (ih, iw) == (mw, mh):
            hint = " (transposed: does one of them carry an EXIF orientation tag the other lacks?)"
        raise DataError(
            f"mask file {mask_path} is {mw}×{mh} (W×H) but image file {image_path} is "
            f"{iw}×{ih}{hint}; a mask must have its image's size: check the pairing, or resize "
            "the mask with nearest-neighbour interpolation"
        )
    bad = (mask < 0) | (mask >= num_classes)
    if ignore_index is not None:
        bad &= mask != ignore_index
    if bool(bad.any()):
        values = torch.unique(mask[bad]).tolist()
        allowed = f"0..{num_classes - 1}" + (
            f" or {ignore_index}" if ignore_index is not None else ""
        )
        raise DataError(
            f"mask file {mask_path} has labels {format_values(values)} outside the allowed "
            f"{allowed} ({int(bad.sum())} pixels; num_classes={num_classes}); fix the mask, or "
            "map raw values to classes / the ignore index (FolderPairs: mask_values=)"
        )


def read_id_list(path: PathLike, what: str = "split list") -> list[str]:
    """Sample ids from a list file: one per line (first whitespace-separated field), ``#``
    comments and blank lines skipped, duplicates kept once (first occurrence)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what} {path} is a folder, not a list file of sample ids")
    if not path.is_file():
        raise DataError(f"{what} file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {what} file {path}: {exc}") from None
    ids: dict[str, None] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            ids.setdefault(fields[0], None)
    return list(ids)
