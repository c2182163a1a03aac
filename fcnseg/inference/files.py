"""``fcnseg predict``: images from files, folders and globs to label maps, overlays, panels
and probabilities on disk."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
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


class _Decoded(torch.utils.data.Dataset):
    """Images decoded where the DataLoader puts the work (its workers with ``--workers``):
    ``(index, image)``, or ``(index, message)`` for a file that cannot be read."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | str]:
        from fcnseg.data.base import DataError
        from fcnseg.data.io import read_image

        try:
            return i, read_image(self.paths[i])
        except DataError as err:
            return i, str(err)


def _read_groups(
    chunks: Sequence[Sequence[Path]], failures: list[tuple[Path, str]], workers: int = 0
) -> Iterator[list[tuple[Path, torch.Tensor]]]:
    """The images of each chunk, decoded by ``workers`` DataLoader processes ahead of the model
    (0: in this process), as runs of consecutive images of one size; unreadable files are
    recorded in ``failures`` and skipped. A batch never spans two chunks, so which images share
    a batch — and so every result, to the last bit — does not depend on what came before."""
    paths = [path for chunk in chunks for path in chunk]
    chunk_of = [k for k, chunk in enumerate(chunks) for _ in chunk]
    size = max(map(len, chunks), default=1)
    loader = torch.utils.data.DataLoader(
        _Decoded(paths), batch_size=None, num_workers=workers,
        prefetch_factor=2 * size if workers else None,
    )  # fmt: skip
    group: list[tuple[Path, torch.Tensor]] = []
    chunk = -1
    for i, image in loader:
        if isinstance(image, str):
            failures.append((paths[i], image))
            continue
        if group and (chunk_of[i] != chunk or group[0][1].shape != image.shape):
            yield group
            group = []
        group.append((paths[i], image))
        chunk = chunk_of[i]
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
    workers: int = 0,
    overwrite: bool = False,
    overlays: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> list[Path]:
    """``fcnseg predict``: for every image write ``NAME.png`` (palette PNG of class indices),
    ``NAME_overlay.png`` (unless not ``overlays``: colour overlay with legend; the background
    untinted unless ``tint_background``) and, on request, ``NAME_probs.npy`` (C×H×W float16) and
    ``NAME_panel.png`` (``panels``: image | prediction; image | ground truth | prediction
    where the ``masks`` folder holds a mask of the same stem, read as class indices; ``masks``
    implies ``panels``). Returns the label-map paths written by this call.

    Under torchrun each of ``world_size`` processes takes its share of the sorted inputs
    (:func:`~fcnseg.inference.shard.shard`). Images are decoded by ``workers`` DataLoader
    processes, consecutive images of one size go through
    :meth:`Predictor.probabilities_batch` ``batch_size`` at a time (tiled inference image by
    image), and files are written by a background thread, each atomically, with a record per
    image in ``OUT/manifest-rank{R}.jsonl`` (:mod:`fcnseg.inference.outputs`). Images whose
    outputs are all present are skipped unless ``overwrite``, so a rerun after a crash picks up
    where it stopped. A file that cannot be read is skipped, recorded in the manifest and
    appended to ``failures`` as ``(path, message)``; so is a mask that does not fit its image
    (its panel is not written). An image without a mask gets a warning."""
    from tqdm import tqdm

    from fcnseg.inference.outputs import OutputWriter, PredictOutputs
    from fcnseg.inference.shard import check_unique_names, shard

    if workers < 0:
        raise ValueError(f"--workers must be 0 (decode in turn) or more, got {workers}")
    options = options or InferenceOptions()
    out = Path(out_dir)
    failures = failures if failures is not None else []
    paths = expand_inputs(inputs)
    check_unique_names(paths)
    mask_files = _mask_index(masks)
    panels = panels or masks is not None
    mine = shard(paths, rank, world_size)
    writer = OutputWriter(out, rank, PredictOutputs(save_probabilities, panels, overlays))
    batch = 1 if options.tile else max(1, batch_size)
    # Batches are fixed chunks of this rank's list: a chunk with any output missing is run
    # again whole, so a resumed run batches (and computes) exactly as an uninterrupted one.
    chunks = [mine[i : i + batch] for i in range(0, len(mine), batch)]
    if not overwrite:
        chunks = [c for c in chunks if not all(writer.complete(p) for p in c)]
    todo = sum(map(len, chunks))
    if todo < len(mine):
        log.info("%d of %d images already predicted in %s: skipped (--overwrite to redo them)",
                 len(mine) - todo, len(mine), out)  # fmt: skip
    written: list[Path] = []
    desc = "predict" if world_size == 1 else f"predict (rank {rank}/{world_size})"
    unread: list[tuple[Path, str]] = []
    try:
        bar = tqdm(total=todo, desc=desc, disable=not progress or rank != 0)
        for group in _read_groups(chunks, unread, workers):
            start = time.perf_counter()
            images = [image for _, image in group]
            probs = predictor.probabilities_batch(torch.stack(images), options)
            seconds = (time.perf_counter() - start) / len(group)
            for (path, image), p in zip(group, probs, strict=True):
                save = _saver(predictor, image, p.numpy(), mask_files.get(path.stem), masks,
                              tint_background)  # fmt: skip
                record = {"input": str(path), "size": list(image.shape[-2:]),
                          "seconds": round(seconds, 4)}  # fmt: skip
                writer.submit(path, save, record)
                written.append(out / f"{path.stem}.png")
            for path, message in unread:
                writer.log({"input": str(path), "error": message})
            failures += unread
            bar.update(len(group) + len(unread))
            unread.clear()
        for path, message in unread:  # unreadable files after the last group
            writer.log({"input": str(path), "error": message})
        failures += unread
        bar.update(len(unread))
        bar.close()
    except BaseException:
        with contextlib.suppress(Exception):  # the first error (or Ctrl-C) is the one to report
            writer.close()
        raise
    writer.close()
    failures += [(Path(r["mask"]), r["panel_error"]) for r in writer.failed if "panel_error" in r]
    return written


def _saver(
    predictor: Predictor,
    image: torch.Tensor,
    probs: np.ndarray,
    mask_path: Path | None,
    masks: str | Path | None,
    tint_background: bool,
) -> Callable[[dict[str, Path]], dict]:
    """Writes one image's files at the temporary paths it is given; returns the manifest's
    extra fields (class histogram; a panel's error)."""
    from fcnseg.data.base import DataError
    from fcnseg.inference.outputs import histogram
    from fcnseg.viz import save_label_png, save_overlay

    def save(tmp: dict[str, Path]) -> dict:
        labels = probs.argmax(0)
        extra: dict = {"classes": histogram(labels, predictor.classes)}
        for name, file in tmp.items():
            if name.endswith("_probs.npy"):
                np.save(file, probs.astype(np.float16))
            elif name.endswith("_overlay.png"):
                save_overlay(file, image.permute(1, 2, 0).numpy(), labels, predictor.palette,
                             predictor.classes, tint_background=tint_background)  # fmt: skip
            elif name.endswith("_panel.png"):
                if masks is not None and mask_path is None:
                    log.warning("no mask %s.* in %s: its panel has no ground truth",
                                name[: -len("_panel.png")], masks)  # fmt: skip
                try:
                    _save_panel(file, image, torch.from_numpy(labels), mask_path, predictor)
                except DataError as err:
                    extra.update(panel_error=str(err), mask=str(mask_path))
            else:
                save_label_png(file, labels, predictor.palette)
        return extra

    return save
