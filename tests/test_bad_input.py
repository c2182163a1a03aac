"""Bad input, one test per kind: a :class:`DataError` / :class:`ConfigError` naming the file or key
and saying what to do, or a documented correct result. The table in ``docs/reliability.md``
maps each kind to its test here.

Already covered in ``tests/test_datasets.py`` and not repeated: missing files and folders, a
directory given as a file, LabelMap raw values (CamVid, Cityscapes, ADE20K), SBD ``.mat`` errors,
unmatched or clashing stems, the transposed-size hint, 32-bit/float images, the basic 1×1 and
EXIF-6 JPEG reads; in ``tests/test_config.py``: an unknown section key and most wrong-type and
bad-choice values.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image, ImageFile

from fcnseg.config import ConfigError, load_config
from fcnseg.data.base import IGNORE_INDEX, DataError
from fcnseg.data.datasets.folder import FolderPairs
from fcnseg.data.io import check_pair, colors_to_indices, read_image, read_mask
from fcnseg.data.palettes import VOC_PALETTE, voc_colormap
from fcnseg.data.registry import build_dataset

TWO_CLASSES = {"classes": ["background", "thing"]}
REPLACE = "replace the file"  # the advice every unreadable-file message ends with


def _encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None, **save: Any) -> bytes:
    im = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    buffer = io.BytesIO()
    im.save(buffer, fmt, **save)
    return buffer.getvalue()


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_header_only(width: int, height: int) -> bytes:
    """A valid-looking grey PNG that *claims* ``width``×``height`` (no pixel data to allocate)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def _folder(root: Path, stems: list[str], h: int = 6, w: int = 8) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for n, stem in enumerate(stems):
        Image.fromarray(_rgb(h, w, n)).save(root / "images" / f"{stem}.png")
        Image.fromarray(np.resize(np.uint8([0, 1]), (h, w))).save(root / "masks" / f"{stem}.png")
    return root


# --- unreadable files ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    full = _encode(_rgb(64, 64), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(full[: len(full) // 2])
    advice = r"the file is truncated .*; replace the file .*LOAD_TRUNCATED_IMAGES = True"
    for reader in (read_image, read_mask):
        with pytest.raises(DataError, match=rf"cut\.{fmt.lower()}: {advice}"):
            reader(path)
    with pytest.raises(DataError, match=rf"upload\.bin: {advice}"):
        read_image(path.read_bytes(), name="upload.bin")
    # the documented opt-in: PIL's global flag is respected (the missing rows are filled in)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert read_image(path).shape == (3, 64, 64)


def test_truncated_tiff(tmp_path: Path) -> None:
    full = _encode(_rgb(64, 64), "TIFF")
    (tmp_path / "cut.tif").write_bytes(full[: len(full) // 2])
    for reader in (read_image, read_mask):
        with pytest.raises(DataError, match=rf"cut\.tif.*{REPLACE}"):
            reader(tmp_path / "cut.tif")


def test_corrupt_image(tmp_path: Path) -> None:
    """A PNG with a flipped byte (CRC mismatch) or a renamed chunk; a JPEG without scan data."""
    png = bytearray(_encode(_rgb(16, 16)))
    png[50] ^= 0xFF  # inside the IDAT data: the chunk's CRC no longer matches
    (tmp_path / "flipped.png").write_bytes(bytes(png))
    for reader in (read_image, read_mask):
        with pytest.raises(DataError, match=rf"flipped\.png: .*the file is corrupt; {REPLACE}"):
            reader(tmp_path / "flipped.png")
    png[50] ^= 0xFF
    png[37:41] = b"IDAX"  # the pixel-data chunk's name: PIL no longer recognises a PNG
    with pytest.raises(
        DataError, match=rf"flipped\.png is not an image .*corrupt header.*{REPLACE}"
    ):
        read_image(bytes(png), name="flipped.png")
    jpeg = _encode(_rgb(16, 16), "JPEG")
    sos = jpeg.index(b"\xff\xda")
    (tmp_path / "garbled.jpg").write_bytes(jpeg[:sos] + b"\xff\xd9")  # no scan data at all
    with pytest.raises(DataError, match=rf"garbled\.jpg.*{REPLACE}"):
        read_image(tmp_path / "garbled.jpg")


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    for reader in (read_image, read_mask):
        with pytest.raises(DataError, match=rf"empty\.jpg is empty \(0 bytes\); {REPLACE}"):
            reader(tmp_path / "empty.jpg")
        with pytest.raises(DataError, match=r"upload\.png is empty \(0 bytes\)"):
            reader(b"", name="upload.png")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("page.jpg", b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n"),
        ("notes.png", b"plain text, not pixels\n" * 10),
        ("archive.tif", zlib.compress(b"x" * 1000)),
        ("script.bmp", b"#!/bin/sh\necho hi\n"),
    ],
)
def test_non_image_with_image_extension(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    for reader in (read_image, read_mask):
        with pytest.raises(DataError, match=rf"{name.replace('.', '[.]')} is not an image") as err:
            reader(tmp_path / name)
        assert REPLACE in str(err.value)


def test_invalid_path_is_a_data_error(tmp_path: Path) -> None:
    """A NUL in a path (e.g. from a corrupt list file) is reported, not a bare ValueError."""
    for reader in (read_image, read_mask):
        with pytest.raises(DataError, match=r"'.*a\\x00b\.png' is not a valid path"):
            reader(tmp_path / "a\x00b.png")


# --- mask content -------------------------------------------------------------------------


def test_mask_size_differs_from_image(tmp_path: Path) -> None:
    image = torch.zeros(3, 6, 8, dtype=torch.uint8)
    with pytest.raises(DataError, match=r"m\.png is 8×5 \(W×H\) but image file i\.png is 8×6") as e:
        check_pair(image, torch.zeros(5, 8, dtype=torch.int64), 2, 255, "i.png", "m.png")
    assert "nearest-neighbour" in str(e.value) and "pairing" in str(e.value)


@pytest.mark.parametrize(
    ("values", "num_classes", "ignore", "bad"),
    [
        ([0, 1, 2], 3, 255, None),
        ([0, 255], 1, 255, None),  # the ignore label is allowed…
        ([0, 3], 3, 255, "[3]"),  # …num_classes itself is not
        ([254, 0, 7, 7], 3, 255, "[7, 254]"),
        ([-1, 0], 3, 255, "[-1]"),
        ([255], 3, None, "[255]"),  # no ignore label: 255 is just out of range
        (list(range(300, 315)), 3, 255, "[300, 301, 302, 303, 304, 305, 306, 307, 308, 309, …"),
    ],
)
def test_labels_outside_classes_and_ignore(
    values: list[int], num_classes: int, ignore: int | None, bad: str | None
) -> None:
    mask = torch.tensor([values])
    image = torch.zeros(3, 1, len(values), dtype=torch.uint8)
    if bad is None:
        check_pair(image, mask, num_classes, ignore, "i.png", "m.png")
        return
    with pytest.raises(DataError) as err:
        check_pair(image, mask, num_classes, ignore, "i.png", "m.png")
    message = str(err.value)
    assert message.startswith(f"mask file m.png has labels {bad}")
    assert f"num_classes={num_classes}" in message and "mask_values=" in message


def test_rgb_mask_suggests_palette_conversion(tmp_path: Path) -> None:
    """The error names the fix; following it (colours → indices → P PNG) gives a valid mask."""
    labels = np.array([[0, 15, 255], [1, 1, 0]])
    lut = {**dict(zip(VOC_PALETTE, range(21), strict=True)), (224, 224, 192): IGNORE_INDEX}
    colours = np.array(voc_colormap(256), dtype=np.uint8)[labels]
    Image.fromarray(colours).save(tmp_path / "colour.png")
    with pytest.raises(DataError) as err:
        read_mask(tmp_path / "colour.png")
    message = str(err.value)
    assert "colour.png holds colours (mode RGB), not class indices" in message
    assert "colors_to_indices" in message and "palette" in message
    indices = colors_to_indices(np.asarray(Image.open(tmp_path / "colour.png").convert("RGB")), lut)
    fixed = Image.fromarray(indices.astype(np.uint8), "L").convert("P")
    fixed.putpalette([v for c in voc_colormap(256) for v in c])
    fixed.save(tmp_path / "fixed.png")
    assert read_mask(tmp_path / "fixed.png").tolist() == labels.tolist()


def test_mask_with_alpha_says_drop_it(tmp_path: Path) -> None:
    Image.new("LA", (2, 2)).save(tmp_path / "la.png")
    with pytest.raises(DataError, match=r"la\.png has unsupported mode 'LA'.*drop the alpha"):
        read_mask(tmp_path / "la.png")


# --- image modes, orientation and size: handled, with exact results -------------------------

_GREY = np.array([[0, 1, 128], [200, 254, 255]], dtype=np.uint8)
_RGBA = np.dstack([_rgb(2, 3, 7), np.uint8([[0, 128, 255], [255, 0, 1]])])
_CMYK = np.array([[[0, 255, 255, 0], [0, 0, 0, 255], [10, 20, 30, 40]]], dtype=np.uint8)


def _palette_image() -> tuple[Image.Image, np.ndarray]:
    indices = np.array([[0, 1, 15], [255, 3, 0]], dtype=np.uint8)
    im = Image.fromarray(indices, "L").convert("P")
    im.putpalette([v for c in voc_colormap(256) for v in c])
    return im, np.array(voc_colormap(256), dtype=np.uint8)[indices]


def _mode_case(mode: str) -> tuple[Image.Image, np.ndarray]:
    """A PIL image in ``mode`` and the RGB array :func:`read_image` must return for it."""
    if mode == "L":
        return Image.fromarray(_GREY), np.repeat(_GREY[..., None], 3, axis=2)
    if mode == "1":
        bits = _GREY > 127
        return Image.fromarray(bits), np.repeat(np.where(bits, 255, 0)[..., None], 3, 2)
    if mode == "I;16":
        raw = np.array([[0, 257, 32767, 32768, 65534, 65535]], dtype=np.uint16)
        return Image.fromarray(raw), np.repeat(
            np.uint8([[0, 1, 127, 128, 255, 255]])[..., None], 3, 2
        )
    if mode == "RGBA":  # alpha dropped, colours kept as stored (even under alpha 0)
        return Image.fromarray(_RGBA), _RGBA[..., :3]
    if mode == "LA":
        la = Image.fromarray(_GREY).convert("LA")
        return la, np.repeat(_GREY[..., None], 3, axis=2)
    if mode == "CMYK":  # PIL's conversion: (255 − c)(255 − k)/255, rounded
        cmyk = _CMYK.astype(np.int64)
        rgb = ((255 - cmyk[..., :3]) * (255 - cmyk[..., 3:]) + 127) // 255
        return Image.fromarray(_CMYK, "CMYK"), rgb.astype(np.uint8)
    if mode == "P":
        return _palette_image()
    raise AssertionError(mode)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [(m, f) for m in ("L", "1", "I;16", "RGBA", "LA", "P") for f in ("PNG", "TIFF")]
    + [("CMYK", "TIFF")],
)
def test_image_modes_give_exact_rgb(tmp_path: Path, mode: str, fmt: str) -> None:
    """16-bit, RGBA, grey, CMYK and palette images: 3×H×W uint8 RGB, exact values."""
    im, expected = _mode_case(mode)
    path = tmp_path / f"x.{fmt.lower()}"
    im.save(path)
    assert Image.open(path).mode.startswith(mode[:1])
    out = read_image(path)
    assert out.dtype == torch.uint8 and out.shape == (3, *expected.shape[:2])
    assert np.array_equal(out.permute(1, 2, 0).numpy(), expected)


def test_mask_modes_give_indices(tmp_path: Path) -> None:
    """Grey, 16-bit and palette masks give their stored values (palette: indices, not colours)."""
    im, _ = _palette_image()
    im.save(tmp_path / "p.png")
    assert read_mask(tmp_path / "p.png").tolist() == [[0, 1, 15], [255, 3, 0]]
    Image.fromarray(_GREY).save(tmp_path / "l.png")
    assert read_mask(tmp_path / "l.png").tolist() == _GREY.tolist()
    wide = np.array([[0, 300, 65535]], dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "i16.tif")
    assert read_mask(tmp_path / "i16.tif").tolist() == wide.tolist()


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows for stored ``array`` with EXIF ``orientation`` (1–8)."""
    swap = (1, 0, *range(2, array.ndim))
    return {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(swap),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(swap),
        8: lambda a: np.rot90(a, 1),
    }[orientation](array)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_all_eight(tmp_path: Path, orientation: int) -> None:
    """Image and mask are both shown upright (lossless PNG with an eXIf chunk: exact pixels)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = _rgb(3, 5, orientation)
    Image.fromarray(stored).save(tmp_path / "i.png", exif=exif.tobytes())
    labels = np.arange(15, dtype=np.uint8).reshape(3, 5)
    Image.fromarray(labels).save(tmp_path / "m.png", exif=exif.tobytes())
    image, mask = read_image(tmp_path / "i.png"), read_mask(tmp_path / "m.png")
    assert np.array_equal(image.permute(1, 2, 0).numpy(), _orient(stored, orientation))
    assert np.array_equal(mask.numpy(), _orient(labels, orientation))


def test_exif_rotated_jpeg(tmp_path: Path) -> None:
    """Orientation 8 (stored top → shown left): a JPEG of a red top and blue bottom half."""
    stored = np.zeros((32, 48, 3), dtype=np.uint8)
    stored[:16] = (255, 0, 0)
    stored[16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    out = read_image(tmp_path / "r.jpg").float()
    assert out.shape == (3, 48, 32)
    left, right = out[:, :, :12].mean((1, 2)), out[:, :, 20:].mean((1, 2))
    assert left[0] > 200 > left[2] and right[2] > 200 > right[0]


def test_one_pixel_image_through_dataset(tmp_path: Path) -> None:
    root = _folder(tmp_path, ["dot"], h=1, w=1)
    image, mask = FolderPairs(root, "all", meta=TWO_CLASSES)[0]
    assert image.shape == (3, 1, 1) and mask.shape == (1, 1)
    assert image.flatten().tolist() == _rgb(1, 1, 0).flatten().tolist() and mask.item() == 0


def test_pixel_limit_guard(tmp_path: Path) -> None:
    """``max_pixels`` is a hard limit checked from the header, before any pixel is decoded."""
    (tmp_path / "claims.png").write_bytes(_png_header_only(5000, 4000))  # 20 Mpx, 60 bytes
    for reader in (read_image, read_mask):
        with pytest.raises(DataError) as err:
            reader(tmp_path / "claims.png", max_pixels=10_000_000)
        message = str(err.value)
        assert "claims.png is 5000×4000 = 20,000,000 pixels, more than max_pixels=10,000,000" in (
            message
        )
        assert "decompression-bomb guard" in message and "raise max_pixels" in message
    # far beyond PIL's own limit: PIL refuses at open, still a DataError naming the file
    bomb = _png_header_only(100_000, 100_000)
    with pytest.raises(DataError, match=r"bomb\.png is too large .*raise max_pixels"):
        read_image(bomb, name="bomb.png")
    assert read_image(_encode(_rgb(4, 5)), max_pixels=20).shape == (3, 4, 5)  # the limit itself


# --- data sets and splits -----------------------------------------------------------------


def test_one_bad_sample_is_named_and_the_rest_still_load(tmp_path: Path) -> None:
    """No state lost: a corrupt file fails only its own sample, with a DataError naming it (what
    the trainer reports); the data set is built lazily and keeps serving the other samples."""
    root = _folder(tmp_path, ["a", "b", "c"])
    (root / "images" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    ds = FolderPairs(root, "all", meta=TWO_CLASSES)
    assert len(ds) == 3
    good = ds[0]
    with pytest.raises(DataError, match=r"images/b\.png"):
        ds[1]
    assert torch.equal(ds[0][0], good[0]) and ds[2][0].shape == (3, 6, 8)
    loader = torch.utils.data.DataLoader(ds, batch_size=1)
    batches = iter(loader)
    next(batches)
    with pytest.raises(DataError, match=r"images/b\.png"):
        next(batches)


def test_empty_split_and_missing_files(tmp_path: Path) -> None:
    """Additions to test_datasets.py::test_empty_splits_and_missing_ids: a missing *mask*, a list
    with only comments, a folder given as the list file."""
    root = _folder(tmp_path, ["a", "b"])
    (root / "masks" / "b.png").unlink()
    (root / "ab.txt").write_text("a\nb\n")
    with pytest.raises(
        DataError, match=r"ab\.txt names missing files — 1 without a mask in .*\[b\]"
    ):
        FolderPairs(root, "ab", meta=TWO_CLASSES)
    (root / "comments.txt").write_text("# nothing yet\n\n   \n")
    with pytest.raises(DataError, match=r"split is empty: .*comments\.txt lists no samples"):
        FolderPairs(root, "comments", meta=TWO_CLASSES)
    (root / "lists").mkdir()
    with pytest.raises(DataError, match=r"lists is a folder, not a list file"):
        FolderPairs(root, "all", meta=TWO_CLASSES, list_file=root / "lists")


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("optimiser: sgd\n", r"config: unknown key\(s\) \['optimiser'\]; valid keys are"),
        ("1: x\nfoo: y\n", r"unknown key\(s\) \[1, 'foo'\]"),  # mixed key types still sort
        ("train: 5\n", r"train: expected a mapping, got 5"),
        ("data:\n  resize: 512\n", r"data\.resize: 512 is not null or list"),
        ("data:\n  crop_size: [a, 2]\n", r"data\.crop_size: .*is not null or list"),
        ("data:\n  options: [meta]\n", r"data\.options: expected a mapping"),
        ("train:\n  amp: true\n", r"train\.amp: True is not null or str"),
        ("train:\n  eval_every: 0\n", r"train\.eval_every must be >= 1, got 0"),
        ("train:\n  log_every: 0\n", r"train\.log_every must be >= 1"),
        ("train:\n  checkpoint_every: -1\n", r"train\.checkpoint_every must be >= 1"),
        ("train:\n  step_size: 0\n", r"train\.step_size must be >= 1"),
        ("data:\n  num_workers: -2\n", r"data\.num_workers must be >= 0"),
        ("data:\n  scale_range: [1.5]\n", r"data\.scale_range must be \[min, max\]"),
        ("data:\n  scale_range: [2.0, 0.5]\n", r"data\.scale_range must be .*0 < min <= max"),
        ("- a\n- b\n", r"expected a mapping at the top level"),
        ("train: [\n", r"not valid YAML"),
    ],
)
def test_config_unknown_keys_and_wrong_types(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert "bad.yaml" in str(err.value)


def test_config_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: cannot read the config \(a UTF-8"):
        load_config(path)


def test_dataset_options_unknown_or_bad(tmp_path: Path) -> None:
    """``data.options`` reach the dataset class: an unknown one is named with the valid ones."""
    with pytest.raises(DataError, match=r"'synthetic' has no option\(s\) \['sizes'\].*'size'"):
        build_dataset("synthetic", None, "train", sizes=[64, 64])
    with pytest.raises(DataError, match=r"unknown dataset 'vocc'; did you mean 'voc'.*choices:"):
        build_dataset("vocc", None, "train")
    meta = tmp_path / "meta.yaml"
    meta.write_bytes(b"classes: [\xff]\n")
    with pytest.raises(DataError, match=r"cannot read FolderPairs meta file .*meta\.yaml"):
        FolderPairs(_folder(tmp_path / "d", ["a"]), "all", meta=meta)
    with pytest.raises(DataError, match=r"unknown keys \[0, 'clases'\]"):
        FolderPairs(tmp_path / "d", "all", meta={"classes": ["a"], "clases": [], 0: 1})


# --- property-based: random bytes and shapes ------------------------------------------------

_SIGNATURES = [
    b"\x89PNG\r\n\x1a\n",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    b"\xff\xd8\xff",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"GIF89a",
    b"P6\n4 4\n255\n",
    b"P5\n",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
]
_VALID = [
    _encode(_rgb(7, 9), fmt) for fmt in ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP", "PPM")
] + [_encode(np.uint16([[0, 1000], [65535, 7]])), _encode(_GREY, "TIFF", "P")]


@st.composite
def _garbage(draw: st.DrawFn) -> bytes:
    """Random bytes; a real signature then random bytes; or a valid file, damaged."""
    kind = draw(st.sampled_from(["random", "signature", "damaged"]))
    if kind == "random":
        return draw(st.binary(max_size=600))
    if kind == "signature":
        return draw(st.sampled_from(_SIGNATURES)) + draw(st.binary(max_size=600))
    data = bytearray(draw(st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One scratch folder per module (hypothesis reruns a test body; function fixtures don't)."""
    yield tmp_path_factory.mktemp("fuzz")


_FAST = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about some damaged TIFF tags
@_FAST
@given(data=_garbage())
def test_fuzz_only_data_error_escapes(scratch: Path, data: bytes) -> None:
    """Whatever the bytes, each reader returns a well-formed tensor or raises DataError naming
    the file (``max_pixels`` bounds what a random header can make PIL allocate)."""
    path = scratch / "fuzz.png"
    path.write_bytes(data)
    for reader in (read_image, read_mask):
        for source, kwargs in ((path, {}), (data, {"name": "upload.png"})):
            try:
                out = reader(source, max_pixels=1 << 20, **kwargs)
            except DataError as err:
                assert ("fuzz.png" if source is path else "upload.png") in str(err)
            else:
                assert out.ndim == (3 if reader is read_image else 2)
                assert out.dtype == (torch.uint8 if reader is read_image else torch.int64)


@settings(max_examples=60, deadline=None, database=None)
@given(
    h=st.integers(1, 64),
    w=st.integers(1, 64),
    mode=st.sampled_from(["L", "RGB", "RGBA", "P", "I;16"]),
    fmt=st.sampled_from(["PNG", "TIFF"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_fuzz_valid_images_roundtrip(h: int, w: int, mode: str, fmt: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        raw = rng.integers(0, 65536, (h, w), dtype=np.uint16)
        im = Image.fromarray(raw)
        expected = np.repeat(((raw.astype(np.uint32) * 255 + 32767) // 65535)[..., None], 3, 2)
    elif mode == "P":
        indices = rng.integers(0, 256, (h, w), dtype=np.uint8)
        im = Image.fromarray(indices, "L").convert("P")
        im.putpalette([v for c in voc_colormap(256) for v in c])
        expected = np.array(voc_colormap(256), dtype=np.uint8)[indices]
    else:
        channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        raw = rng.integers(0, 256, (h, w, channels), dtype=np.uint8).squeeze(
            -1 if channels == 1 else ()
        )
        im = Image.fromarray(raw)
        expected = np.repeat(raw[..., None], 3, 2) if mode == "L" else raw[..., :3]
    buffer = io.BytesIO()
    im.save(buffer, fmt)
    out = read_image(buffer.getvalue(), name=f"x.{fmt.lower()}")
    assert out.dtype == torch.uint8 and out.shape == (3, h, w)
    assert np.array_equal(out.permute(1, 2, 0).numpy(), expected)


@settings(max_examples=80, deadline=None, database=None)
@given(
    labels=st.one_of(
        arrays(np.uint8, array_shapes(min_dims=2, max_dims=2, max_side=16)),
        arrays(
            np.uint16,
            array_shapes(min_dims=2, max_dims=2, max_side=16),
            elements=st.one_of(st.integers(0, 40), st.just(255), st.integers(0, 65535)),
        ),
    ),
    num_classes=st.integers(1, 40),
    palette=st.booleans(),
)
def test_fuzz_mask_values_checked(labels: np.ndarray, num_classes: int, palette: bool) -> None:
    """read_mask + check_pair raise exactly when a value is outside [0, C) ∪ {255}."""
    if palette and labels.dtype == np.uint8:
        im = Image.fromarray(labels, "L").convert("P")
        im.putpalette([v for c in voc_colormap(256) for v in c])
    else:
        im = Image.fromarray(labels)
    buffer = io.BytesIO()
    im.save(buffer, "PNG")
    mask = read_mask(buffer.getvalue(), name="m.png")
    assert mask.tolist() == labels.astype(np.int64).tolist()
    image = torch.zeros(3, *labels.shape, dtype=torch.uint8)
    outside = bool(((labels >= num_classes) & (labels != IGNORE_INDEX)).any())
    if outside:
        with pytest.raises(DataError, match=r"mask file m\.png has labels"):
            check_pair(image, mask, num_classes, IGNORE_INDEX, "i.png", "m.png")
    else:
        check_pair(image, mask, num_classes, IGNORE_INDEX, "i.png", "m.png")
