"""Use the FCN weights people already have: published files by name, or a local file.

A name (:data:`PRETRAINED`, e.g. ``torchvision/fcn_resnet50_coco``, ``reference/fcn8s_voc``)
is downloaded once into torch's hub cache (``torch.hub.get_dir()/checkpoints``) and checked
against its publisher's checksum; offline, it fails within seconds saying which file to fetch
from where. A local file is read in whichever registered layout its tensor names are in
(:data:`LAYOUTS`); its model comes from the registry entry of the same file name, else from
its tensors (classes from the score layer's shape). An fcnseg checkpoint is used as it is.

    model = load_pretrained("reference/fcn8s_voc")      # model.preprocess: BGR, 0-255, mean
    ckpt = pretrained_state("path/to/fcn8s_from_caffe.pth")  # weights + spec + classes …
    predictor = Predictor.from_pretrained("torchvision/fcn_resnet50_coco")
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fcnseg.checkpoint import Checkpoint, load_checkpoint
from fcnseg.choices import unknown_choice
from fcnseg.data.palettes import VOC_CLASSES, VOC_PALETTE, default_palette
from fcnseg.download import DownloadError, OfflineError, check_reachable, download, hub_file
from fcnseg.models.pretrained import catalog as _catalog  # noqa: F401 (registers the entries)
from fcnseg.models.pretrained.layouts import check_fits
from fcnseg.models.pretrained.registry import (
    LAYOUTS,
    PRETRAINED,
    Layout,
    PretrainedWeights,
    Published,
    detect_layout,
    register_layout,
    register_pretrained,
)
from fcnseg.models.registry import model_spec
from fcnseg.weights import WeightsUnavailableError, read_state_dict

__all__ = [
    "LAYOUTS",
    "PRETRAINED",
    "Layout",
    "PretrainedWeights",
    "Published",
    "cached_file",
    "fetch",
    "load_pretrained",
    "pretrained_state",
    "register_layout",
    "register_pretrained",
]

log = logging.getLogger("fcnseg")

#: What a registry name looks like (``source/name``), as opposed to a file path.
_NAME = re.compile(r"[\w.-]+/[\w.-]+")
_WEIGHTS_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".ckpt")


def cached_file(entry: PretrainedWeights) -> Path:
    """Where ``entry``'s file lives once downloaded (:func:`fcnseg.download.hub_file`)."""
    return hub_file(entry.filename)


def fetch(entry: PretrainedWeights, *, progress: bool = True, timeout: float = 3.0) -> Path:
    """``entry``'s file: from the hub cache, else downloaded (progress bar, resumed if a
    partial file is there, checked against the published checksum). Offline, raises
    :class:`~fcnseg.weights.WeightsUnavailableError` within about ``timeout`` seconds, naming
    the file, its URL and checksum, and how to use a copy fetched elsewhere."""
    dest = cached_file(entry)
    if dest.is_file():
        return dest
    try:
        check_reachable(entry.url, timeout=timeout)
        log.warning("downloading %s (%s) to %s", entry.name, entry.url, dest)
        return download(entry.url, dest, entry.checksum, size=entry.size_bytes, progress=progress)
    except OfflineError as err:
        raise WeightsUnavailableError(
            f"{entry.name}: {err}. Without a network, fetch {entry.filename} from {entry.url} "
            f"on a connected machine (checksum: {entry.checksum}), then pass the copy: "
            f"--weights path/to/{entry.filename} (Python: load_pretrained('path/to/"
            f"{entry.filename}')), or put it at {dest}"
        ) from err
    except DownloadError as err:
        note = f" ({entry.note})" if entry.note else ""
        raise WeightsUnavailableError(
            f"{entry.name}: {err}{note}. A copy fetched by hand works too: --weights "
            f"path/to/{entry.filename} (checksum: {entry.checksum})"
        ) from err


def _checkpoint(
    path: Path,
    state: dict[str, torch.Tensor],
    layout: Layout,
    spec: dict[str, Any],
    entry: PretrainedWeights | None,
) -> Checkpoint:
    converted = layout.convert(state, spec)
    check_fits(converted, spec, str(path))
    n = spec["num_classes"]
    if entry is not None:
        classes, palette = list(entry.classes), entry.palette
        metrics = {"published": asdict(entry.published)} if entry.published else {}
        ignore_index, preprocess = entry.ignore_index, entry.preprocess
    else:
        voc = n == len(VOC_CLASSES)
        classes = list(VOC_CLASSES) if voc else [f"class {i}" for i in range(n)]
        palette = VOC_PALETTE if voc else default_palette(n)
        metrics, ignore_index, preprocess = {}, 255, layout.preprocess
    return Checkpoint(
        path=path,
        state_dict=converted,
        model=spec,
        classes=classes,
        palette=[list(c) for c in palette],
        ignore_index=ignore_index,
        preprocess=dict(preprocess),
        metrics=metrics,
    )


def _complete(spec: dict[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in spec.items() if k != "name"}
    return model_spec(spec["name"], **rest)


def _from_file(path: Path) -> Checkpoint:
    state, meta = read_state_dict(path)
    if meta.get("format") == '"fcnseg-checkpoint-1"':
        return load_checkpoint(path)
    layout = detect_layout(state, str(path))
    entry = next((e for e in PRETRAINED.values() if e.filename == path.name), None)
    if entry is not None and entry.layout == layout.name:
        log.info("%s: %s layout, the file of %s", path, layout.name, entry.name)
        return _checkpoint(path, state, layout, _complete(entry.model), entry)
    spec = layout.spec(state)
    log.warning(
        "%s: detected the %s layout (%s) → %s with %d classes (from the score layer); "
        "class names %s",
        path,
        layout.name,
        layout.description,
        spec["name"],
        spec["num_classes"],
        "of PASCAL VOC" if spec["num_classes"] == len(VOC_CLASSES) else "'class 0', …",
    )
    return _checkpoint(path, state, layout, spec, None)


def pretrained_state(name_or_file: str | Path, *, progress: bool = True) -> Checkpoint:
    """The weights of a registered name or a local file, converted to fcnseg's model, as a
    :class:`~fcnseg.checkpoint.Checkpoint`: ``state_dict`` (fcnseg's names), ``model`` (the
    spec), ``classes``, ``palette``, ``preprocess``, ``ignore_index``, ``metrics``
    (``{"published": …}`` for registered weights) and ``path`` (the file read).

    ``Checkpoint.build_model()`` makes the model; for fine-tuning, load ``state_dict`` into a
    model of the same spec (or another class count, keeping the new score layers' init).
    """
    key = str(name_or_file)
    if key in PRETRAINED:
        entry = PRETRAINED[key]
        path = fetch(entry, progress=progress)
        state, _ = read_state_dict(path)
        return _checkpoint(path, state, LAYOUTS[entry.layout], _complete(entry.model), entry)
    path = Path(key).expanduser()
    if not path.exists() and _NAME.fullmatch(key) and path.suffix not in _WEIGHTS_SUFFIXES:
        raise ValueError(
            unknown_choice("pretrained weights", key, sorted(PRETRAINED), label="names")
            + " (or a weights file)"
        )
    return _from_file(path)


def load_pretrained(
    name_or_file: str | Path, *, device: str | torch.device = "cpu", progress: bool = True
) -> nn.Module:
    """The model of :func:`pretrained_state` on ``device`` (``"auto"``: CUDA when available),
    in eval mode, with ``model.preprocess`` set to what its weights expect and the class names
    and palette attached as ``model.classes`` / ``model.palette``."""
    ckpt = pretrained_state(name_or_file, progress=progress)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = ckpt.build_model().to(device).eval()
    model.classes = list(ckpt.classes)
    model.palette = [list(c) for c in ckpt.palette]
    return model
