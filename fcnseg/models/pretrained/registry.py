"""What a published weights file is (:class:`PretrainedWeights`) and how a layout of tensor
names becomes an fcnseg model (:class:`Layout`), each in a registry by name.

A new source of weights plugs in with :func:`register_pretrained` (a named, downloadable file)
and, for a new naming of the tensors, :func:`register_layout`; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from fcnseg.download import Checksum

__all__ = [
    "LAYOUTS",
    "PRETRAINED",
    "Layout",
    "PretrainedWeights",
    "Published",
    "detect_layout",
    "register_layout",
    "register_pretrained",
]

State = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Published:
    """A score the source publishes for the weights (percent), and where it says so."""

    mean_iu: float
    dataset: str
    source: str
    pixel_accuracy: float | None = None


@dataclass(frozen=True)
class PretrainedWeights:
    """A published weights file: where it is, how to check it, and what model it makes.

    ``checksum``: the digest the source publishes (torchvision: the SHA-256 prefix in the file
    name; pytorch-fcn: an MD5). ``layout``: the :data:`LAYOUTS` entry that converts its tensors.
    ``model``: the fcnseg model spec. ``origin``: what the file was converted from, if it was.
    ``size_mb``: the published file size (MB), ``size_bytes`` the exact one when known (a
    download of another size is reported as truncated).
    """

    name: str
    url: str
    checksum: Checksum
    filename: str
    layout: str
    model: dict[str, Any]
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    preprocess: dict[str, Any]
    published: Published | None
    licence: str
    page: str
    origin: str = ""
    size_mb: float | None = None
    size_bytes: int | None = None
    ignore_index: int = 255
    #: Shown when the download fails (e.g. how a host wants large files fetched).
    note: str = ""


@dataclass(frozen=True)
class Layout:
    """A naming of FCN tensors and how it becomes an fcnseg model.

    ``detect(state)``: whether a state dict is in this layout. ``spec(state)``: the fcnseg model
    spec of a file outside the registry, read from its tensors (classes from the score layer's
    shape). ``convert(state, spec)``: the tensors under the model's own names.
    ``preprocess``: the input these weights expect.
    """

    name: str
    description: str
    detect: Callable[[State], bool]
    spec: Callable[[State], dict[str, Any]]
    convert: Callable[[dict[str, torch.Tensor], dict[str, Any]], dict[str, torch.Tensor]]
    preprocess: dict[str, Any] = field(default_factory=dict)


#: Published weights by name (``source/model_dataset``).
PRETRAINED: dict[str, PretrainedWeights] = {}
#: Tensor layouts by name.
LAYOUTS: dict[str, Layout] = {}


def register_pretrained(entry: PretrainedWeights) -> PretrainedWeights:
    """Make ``entry`` loadable by its name (``load_pretrained(entry.name)``, ``--weights``)."""
    if entry.name in PRETRAINED:
        raise ValueError(f"pretrained weights {entry.name!r} are already registered")
    if len(entry.classes) != len(entry.palette) or entry.model.get("num_classes") != len(
        entry.classes
    ):
        raise ValueError(f"{entry.name}: classes, palette and model.num_classes disagree")
    PRETRAINED[entry.name] = entry
    return entry


def register_layout(layout: Layout) -> Layout:
    """Make files in ``layout`` loadable (detected by ``layout.detect``)."""
    if layout.name in LAYOUTS:
        raise ValueError(f"layout {layout.name!r} is already registered")
    LAYOUTS[layout.name] = layout
    return layout


def detect_layout(state: State, source: str) -> Layout:
    """The one registered layout ``state`` is in; a ``ValueError`` naming ``source`` and the
    known layouts when none (or several) match."""
    found = [layout for layout in LAYOUTS.values() if layout.detect(state)]
    if len(found) == 1:
        return found[0]
    known = "; ".join(f"{lay.name}: {lay.description}" for lay in LAYOUTS.values())
    keys = list(state)[:4]
    what = "matches several layouts" if found else "is in no known layout"
    raise ValueError(f"{source} {what} (keys {keys}…); fcnseg reads {known}")
