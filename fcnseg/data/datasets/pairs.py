"""Image/mask file pairs: the shared machinery of the file datasets (finding and pairing files
by stem, validating them, reading a pair, k-fold splits)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torchvision import tv_tensors

from fcnseg.data.base import DataError, SegmentationDataset, Transform, as_mask
from fcnseg.data.io import (
    IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    LabelMap,
    PathLike,
    check_pair,
    format_values,
    read_image,
    read_mask,
)

__all__ = [
    "PairedFileDataset",
    "Sample",
    "check_samples",
    "kfold_indices",
    "natural_key",
    "pair_by_stem",
    "require_root",
    "scan_stems",
]

_LOSSY = (".jpg", ".jpeg")


class Sample(NamedTuple):
    """One dataset entry: its id (file stem) and the two files."""

    id: str
    image: Path
    mask: Path


def natural_key(text: str) -> tuple[Any, ...]:
    """Sort key that orders ``"2" < "10"`` (digit runs compared as numbers)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def require_root(root: PathLike | None, dataset: str) -> Path:
    """``root`` as a ``Path``; :class:`DataError` if it is missing or not a folder."""
    if root is None:
        raise DataError(
            f"{dataset} needs a root folder (root=None was given): set data.root, e.g. "
            "--set data.root=/path/to/data"
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.is_file() else "is not an existing folder"
        raise DataError(
            f"{dataset} root {path} {what}: point data.root (or data.val_root) at the data set's "
            "folder, e.g. --set data.root=/path/to/data"
        )
    return path


def scan_stems(folder: Path, extensions: Sequence[str], what: str) -> dict[str, Path]:
    """``{stem: file}`` for the files in ``folder`` with one of ``extensions`` (case-insensitive;
    hidden files skipped). Two files with one stem (``a.jpg`` and ``a.png``) are an error."""
    if not folder.is_dir():
        raise DataError(f"{what} folder {folder} does not exist")
    found: dict[str, Path] = {}
    clashes: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in extensions or not path.is_file():
            continue
        if path.stem in found:
            clashes.append(f"{found[path.stem].name} / {path.name}")
        found[path.stem] = path
    if clashes:
        raise DataError(f"{what} folder {folder} has several files per stem: {clashes[:5]}")
    return found


def check_samples(samples: Sequence[Sample], source: PathLike) -> list[Sample]:
    """Raise :class:`DataError` (naming ``source``, the list file or folder) if ``samples`` is
    empty or names files that do not exist; the message lists (a few of) the missing ids."""
    if not samples:
        raise DataError(f"split is empty: {source} lists no samples")
    no_image = [s for s in samples if not s.image.is_file()]
    no_mask = [s for s in samples if not s.mask.is_file()]
    problems = []
    if no_image:
        ids = format_values([s.id for s in no_image])
        problems.append(f"{len(no_image)} without an image in {no_image[0].image.parent}: {ids}")
    if no_mask:
        ids = format_values([s.id for s in no_mask])
        problems.append(f"{len(no_mask)} without a mask in {no_mask[0].mask.parent}: {ids}")
    if problems:
        raise DataError(f"{source} names missing files — " + "; ".join(problems))
    return list(samples)


def pair_by_stem(
    image_dir: Path,
    mask_dir: Path,
    *,
    ids: Iterable[str] | None = None,
    source: PathLike | None = None,
    image_extensions: Sequence[str] = IMAGE_EXTENSIONS,
    mask_extensions: Sequence[str] = MASK_EXTENSIONS,
) -> list[Sample]:
    """Pair the files of two folders by stem, in natural order of the stems.

    Without ``ids`` every file must have its partner (else :class:`DataError` listing the
    unmatched stems). With ``ids`` (from list file ``source``) only those are taken, and each must
    have both files (else the missing ids are listed).
    """
    images = scan_stems(image_dir, image_extensions, "image")
    masks = scan_stems(mask_dir, mask_extensions, "mask")
    if ids is not None:  # stems without a file get a non-existent path: check_samples lists them
        samples = [Sample(i, images.get(i, image_dir / i), masks.get(i, mask_dir / i)) for i in ids]
        return check_samples(samples, source if source is not None else "the id list")
    only_images = sorted(images.keys() - masks.keys(), key=natural_key)
    only_masks = sorted(masks.keys() - images.keys(), key=natural_key)
    if only_images or only_masks:
        problems = []
        if only_images:
            problems.append(
                f"{len(only_images)} image(s) in {image_dir} without a mask in {mask_dir}: "
                f"{format_values(only_images)}"
            )
            lossy = [s for s in only_images if any((mask_dir / (s + e)).exists() for e in _LOSSY)]
            if lossy:
                problems[-1] += " (JPEG masks are lossy and not accepted: store masks as PNG)"
        if only_masks:
            problems.append(
                f"{len(only_masks)} mask(s) in {mask_dir} without an image in {image_dir}: "
                f"{format_values(only_masks)}"
            )
        raise DataError("unmatched image/mask files: " + "; ".join(problems))
    if not images:
        raise DataError(
            f"split is empty: no images ({', '.join(image_extensions)}) in {image_dir} "
            f"and no masks in {mask_dir}"
        )
    return [Sample(s, images[s], masks[s]) for s in sorted(images, key=natural_key)]


class PairedFileDataset(SegmentationDataset):
    """Base class of the file datasets: ``samples`` (id, image file, mask file), read with
    :func:`read_image` / :meth:`read_mask`, remapped by ``label_map`` (raw value → class, if set)
    and checked with :func:`check_pair` on every load."""

    label_map: LabelMap | None = None

    def __init__(self, samples: Sequence[Sample], transforms: Transform | None = None) -> None:
        super().__init__(transforms)
        self.samples: list[Sample] = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def name(self, index: int) -> str:
        return self.samples[index].id

    def read_mask(self, path: Path) -> torch.Tensor:
        """Raw mask values (int64, H×W); subclasses override for other formats (SBD ``.mat``)."""
        return read_mask(path)

    def load_mask(self, index: int) -> torch.Tensor:
        """Mask ``index`` as class labels (remapped by ``label_map``), without its image."""
        sample = self.samples[index]
        labels = self.read_mask(sample.mask)
        return self.label_map(labels, sample.mask) if self.label_map is not None else labels

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        sample = self.samples[index]
        image = read_image(sample.image)
        labels = self.load_mask(index)
        check_pair(image, labels, self.num_classes, self.ignore_index, sample.image, sample.mask)
        return image, as_mask(labels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples, {self.num_classes} classes)"


def kfold_indices(
    n: int, folds: int, fold: int, seed: int | None = None
) -> tuple[list[int], list[int]]:
    """``(train, val)`` indices of fold ``fold`` of ``folds``-fold cross-validation over ``n``
    samples: the samples (in order, or in a permutation seeded with ``seed``) are cut into
    ``folds`` contiguous blocks (``numpy.array_split``: the first ``n % folds`` one longer);
    block ``fold`` is ``val``, the others ``train``. Both lists are sorted.

    Contiguous blocks in order suit data whose neighbours look alike (EM slices): a block keeps
    them on one side. A seed shuffles first (independent images)."""
    import numpy as np

    if folds < 2 or folds > n:
        raise DataError(f"folds must be between 2 and the {n} samples, got {folds}")
    if not 0 <= fold < folds:
        raise DataError(f"fold must be in 0..{folds - 1}, got {fold}")
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    val = sorted(np.array_split(order, folds)[fold].tolist())
    held = set(val)
    return [i for i in range(n) if i not in held], val
