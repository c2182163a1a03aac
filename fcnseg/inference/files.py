"""``fcnseg predict``: images from files, folders and globs to label maps, overlays, panels
and probabilities on disk."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from fcnseg.inference.options import InferenceOptions
from fcnseg.inference.predictor import Predictor

__all__ = ["expand_inputs", "predict_paths"]

log = logging.getLogger("fcnseg")


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns → image paths, in order."""
    import glob

    from fcnseg.data.base import DataError
    from fcnseg.data.io import IMAGE_EXTENSIONS

    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            paths.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True))
            if not matches:
                raise DataError(f"input {item}: no such file, folder or matching files")
            paths += [m for m in matches if m.is_file()]
    if not paths:
        raise DataError(f"no images found in {list(map(str, inputs))}")
    return paths


def _read_groups(
    paths: Sequence[Path], batch_size: int, failures: list[tuple[Path, str]]
) -> Iterator[list[tuple[Path, torch.Tensor]]]:
    """Consecutive images of one size, up to ``batch_size`` at a time; unreadable files are
    recorded in ``failures`` and skipped."""
    from fcnseg.data.base import DataError
    from fcnseg.data.io import read_image

    group: list[tuple[Path, torch.Tensor]] = []
    for path in paths:
        try:
            image = read_image(path)
        except DataError as err:
            failures.append((path, str(err)))
            continue
        if group and (len(group) >= batch_size or group[0][1].shape != image.shape):
            yield group
            group = []
        group.append((path, image))
    if group:
        yield group


def _mask_index(folder: str | Path | None) -> dict[str, Path]:
    """The mask files of ``folder`` by stem (none without a folder)."""
    from fcnseg.data.base import DataError
    from fcnseg.data.io import IMAGE_EXTENSIONS

    if folder is None:
        return {}
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"masks folder {folder} does not exist")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
    return {f.stem: f for f in reversed(files)}  # the first in name order wins


def _save_panel(
    path: Path,
    image: torch.Tensor,
    labels: torch.Tensor,
    mask_path: Path | None,
    predictor: Predictor,
) -> None:
    """``image | prediction`` (``image | ground truth | prediction`` with a mask file) at
    ``path``; raises :class:`~fcnseg.data.base.DataError` for a mask that does not fit."""
    from fcnseg.data.base import DataError
    from fcnseg.data.io import LabelMap, read_mask
    from fcnseg.viz import save_panels

    if mask_path is None:
        row, titles = (image, labels), ("image", "prediction")
    else:
        mask = read_mask(mask_path)
        if predictor.mask_values is not None:  # read as the training read its masks
            table = LabelMap(predictor.mask_values, name="the training's mask_values")
            mask = table(mask, mask_path)
        if mask.shape != labels.shape:
            raise DataError(
                f"mask {mask_path} is {tuple(mask.shape)}, its image {tuple(labels.shape)}"
            )
        row, titles = (image, mask, labels), ("image", "ground truth", "prediction")
    try:
        save_panels(
            path,
            [row],
            predictor.palette,
            predictor.classes,
            predictor.ignore_index,
            titles=titles,
        )
    except ValueError as err:  # labels the palette does not cover
        raise DataError(f"mask {mask_path}: {err}") from err


def predict_paths(
    predictor: Predictor,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    options: InferenceOptions | None = None,
    save_probabilities: bool = False,
    batch_size: int = 4,
    progress: bool = True,
    failures: list[tuple[Path, str]] | None = None,
    panels: bool = False,
    masks: str | Path | None = None,
    tint_background: bool = False,
) -> list[Path]:
    """``fcnseg predict``: for every image write ``NAME.png`` (palette PNG of class indices),
    ``NAME_overlay.png`` (colour overlay with legend; the background untinted unless
    ``tint_background``) and, on request, ``NAME_probs.npy`` (C×H×W float16) and
    ``NAME_panel.png`` (``panels``: image | prediction; image | ground truth | prediction
    where the ``masks`` folder holds a mask of the same stem, read as class indices; ``masks``
    implies ``panels``). Returns the label-map paths.

    Consecutive images of one size go through :meth:`Predictor.probabilities_batch`
    ``batch_size`` at a time (tiled inference goes image by image). A file that cannot be read
    is skipped and appended to ``failures`` as ``(path, message)`` (pass a list to collect
    them), so one bad file loses no other image's result; so is a mask that does not fit its
    image (its panel is not written). An image without a mask gets a warning."""
    import numpy as np
    from tqdm import tqdm

    from fcnseg.data.base import DataError
    from fcnseg.viz import save_label_png, save_overlay

    options = options or InferenceOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    failures = failures if failures is not None else []
    paths = expand_inputs(inputs)
    mask_files = _mask_index(masks)
    panels = panels or masks is not None
    bad_masks: list[tuple[Path, str]] = []
    written = []
    bar = tqdm(total=len(paths), desc="predict", disable=not progress)
    for group in _read_groups(paths, 1 if options.tile else max(1, batch_size), failures):
        images = [image for _, image in group]
        batch = images[0][None] if len(images) == 1 else torch.stack(images)
        probs = predictor.probabilities_batch(batch, options)
        for (path, image), p in zip(group, probs, strict=True):
            labels = p.argmax(0).numpy()
            if save_probabilities:
                np.save(out / f"{path.stem}_probs.npy", p.half().numpy())
            label_path = out / f"{path.stem}.png"
            save_label_png(label_path, labels, predictor.palette)
            rgb = image.permute(1, 2, 0).numpy()
            save_overlay(out / f"{path.stem}_overlay.png", rgb, labels, predictor.palette,
                         predictor.classes, tint_background=tint_background)  # fmt: skip
            written.append(label_path)
            if not panels:
                continue
            mask_path = mask_files.get(path.stem)
            if masks is not None and mask_path is None:
                log.warning("no mask %s.* in %s: its panel has no ground truth", path.stem, masks)
            panel = out / f"{path.stem}_panel.png"
            try:
                _save_panel(panel, image, torch.from_numpy(labels), mask_path, predictor)
            except DataError as err:
                bad_masks.append((mask_path or path, str(err)))
        bar.update(len(group))
    bar.update(len(failures))
    bar.close()
    failures += bad_masks
    return written
