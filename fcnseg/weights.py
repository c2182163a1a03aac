"""Backbone weights: reading state dicts with their metadata, and the preprocessing they need.

A weights file says how its network must be fed (range, mean, std, channel order); the model
built from it carries that as ``model.preprocess`` so a user never has to remember a mean.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from fcnseg.download import OfflineError, WeightsUnavailableError, check_reachable, hub_file

__all__ = [
    "IMAGENET_TORCHVISION",
    "BackboneWeights",
    "Preprocess",
    "WeightsFileError",
    "WeightsUnavailableError",
    "load_backbone_weights",
    "read_state_dict",
]

log = logging.getLogger("fcnseg")


class WeightsFileError(ValueError):
    """A weights file named by the user is missing or is not a state dict (a config mistake)."""


class Preprocess(nn.Module):
    """Normalisation a backbone's weights expect.

    Input: RGB images as float in [0, 1] (or uint8 in [0, 255]), shape N×3×H×W. Output:
    ``(x · input_range − mean) / std`` in the channel order of the weights. ``mean`` and ``std``
    are in the units of ``input_range`` (e.g. 0–255 for Caffe VGG weights).
    """

    def __init__(
        self,
        mean: tuple[float, float, float],
        std: tuple[float, float, float] = (1.0, 1.0, 1.0),
        *,
        input_range: float = 1.0,
        channel_order: str = "RGB",
    ) -> None:
        super().__init__()
        if channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.input_range = float(input_range)
        self.channel_order = channel_order
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected N×3×H×W RGB images, got shape {tuple(images.shape)}")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images
        if self.channel_order == "BGR":
            x = x.flip(1)
        return (x * self.input_range - self._mean.to(x.dtype)) / self._std.to(x.dtype)

    def to_dict(self) -> dict[str, Any]:
        """Metadata form, as stored in weights and checkpoint files."""
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "input_range": self.input_range,
            "channel_order": self.channel_order,
        }

    @classmethod
    def from_dict(cls, meta: dict[str, Any]) -> Preprocess:
        """Parse metadata (values may be JSON strings, as in safetensors headers)."""

        def value(key: str, default: Any) -> Any:
            raw = meta.get(key, default)
            if isinstance(raw, str):
                try:
                    return json.loads(raw)
                except json.JSONDecodeError:
                    return raw
            return raw

        rng = value("input_range", 1.0)
        if isinstance(rng, str):  # "0-255" / "0-1"
            rng = float(rng.split("-")[-1])
        # Without any normalisation keys, torchvision's; a mean without a std means std 1.
        has_mean = "mean" in meta
        default_std = (1.0, 1.0, 1.0) if has_mean else IMAGENET_TORCHVISION.std
        return cls(
            tuple(value("mean", IMAGENET_TORCHVISION.mean)),
            tuple(value("std", default_std)),
            input_range=float(rng),
            channel_order=str(value("channel_order", "RGB")),
        )

    def extra_repr(self) -> str:
        return (
            f"mean={self.mean}, std={self.std}, input_range={self.input_range:g}, "
            f"channel_order={self.channel_order}"
        )


@dataclass(frozen=True)
class _Norm:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


#: torchvision's ImageNet normalisation (inputs in 0–1).
IMAGENET_TORCHVISION = _Norm((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass
class BackboneWeights:
    """A backbone state dict in torchvision layout, with where it came from and how to feed it."""

    state_dict: dict[str, torch.Tensor]
    preprocess: dict[str, Any]
    source: str
    metadata: dict[str, str] = field(default_factory=dict)


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a ``.safetensors`` or ``.pth``/``.pt`` state dict (float16 cast to float32).

    Returns ``(state_dict, metadata)``; a ``.pth`` holding ``{"state_dict": …}`` or
    ``{"model": …}`` is unwrapped. A missing file is a :class:`WeightsFileError`.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise WeightsFileError(
            f"weights file {path} {what} (expected a torchvision-format state dict, "
            ".safetensors or .pth)"
        )
    metadata: dict[str, str] = {}
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "pt") as f:
                metadata = dict(f.metadata() or {})
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        except (SafetensorError, OSError, ValueError) as err:
            raise WeightsFileError(f"{path} is not a readable safetensors file: {err}") from err
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for corrupt pickles
            why = "not tensors only, or no PyTorch file" if "weights_only" in str(err) else err
            raise WeightsFileError(f"{path} is not a readable PyTorch state dict: {why}") from err
        for key in ("state_dict", "model"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise WeightsFileError(f"{path} does not contain a state dict of tensors")
        state = obj
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return state, metadata


def _hub_cached(url: str) -> Path:
    return hub_file(os.path.basename(urlparse(url).path))


def _check_online(url: str, timeout: float = 3.0) -> None:
    """Fail within about ``timeout`` seconds, saying how to supply the file, when ``url``'s
    server cannot be reached."""
    try:
        check_reachable(url, timeout)
    except OfflineError as err:
        raise WeightsUnavailableError(
            f"cannot download ImageNet weights from {url} ({err}). fcnseg needs a weights "
            "file when offline: "
            f"download {url} on a connected machine and either pass "
            f"backbone_weights='/path/to/{os.path.basename(urlparse(url).path)}' or copy it to "
            f"{_hub_cached(url)}."
        ) from err


def _torchvision_weights(backbone: str) -> Any:
    from torchvision import models

    releases = {
        "vgg16": models.VGG16_Weights.IMAGENET1K_V1,
        "alexnet": models.AlexNet_Weights.IMAGENET1K_V1,
        "googlenet": models.GoogLeNet_Weights.IMAGENET1K_V1,
        "resnet18": models.ResNet18_Weights.IMAGENET1K_V1,
        "resnet50": models.ResNet50_Weights.IMAGENET1K_V2,
        "resnet101": models.ResNet101_Weights.IMAGENET1K_V2,
        "mobilenet_v3_large": models.MobileNet_V3_Large_Weights.IMAGENET1K_V1,
    }
    if backbone not in releases:
        from fcnseg.choices import unknown_choice

        raise ValueError(unknown_choice("backbone", backbone, sorted(releases)))
    return releases[backbone]


def _imagenet_preprocess(backbone: str) -> dict[str, Any]:
    if backbone == "googlenet":
        # torchvision's GoogLeNet weights are fed through ``transform_input``, which maps the
        # ImageNet-normalised input to (x − 0.5) / 0.5: that is what the weights really expect.
        return Preprocess((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).to_dict()
    return Preprocess(IMAGENET_TORCHVISION.mean, IMAGENET_TORCHVISION.std).to_dict()


def load_backbone_weights(spec: str | Path, backbone: str) -> BackboneWeights:
    """Resolve ``backbone_weights``: a file path, or ``"imagenet"`` (torchvision's release).

    ``"imagenet"`` uses torch's hub cache when the file is there; otherwise it downloads, and
    fails within seconds with instructions when the network is unreachable.
    """
    if isinstance(spec, str) and spec == "imagenet":
        weights = _torchvision_weights(backbone)
        cached = _hub_cached(weights.url)
        if cached.is_file():
            state, _ = read_state_dict(cached)
        else:
            _check_online(weights.url)
            state = weights.get_state_dict(progress=True)
        return BackboneWeights(
            state_dict=state,
            preprocess=_imagenet_preprocess(backbone),
            source=f"torchvision {weights}",
        )
    path = Path(spec)
    state, metadata = read_state_dict(path)
    if metadata.get("mean") or metadata.get("input_range"):
        preprocess = Preprocess.from_dict(metadata).to_dict()
    else:
        preprocess = _imagenet_preprocess(backbone)
        log.warning(
            "%s carries no normalisation metadata; assuming torchvision's ImageNet release "
            "for %s (0-1 range, mean %s, std %s)",
            path,
            backbone,
            tuple(preprocess["mean"]),
            tuple(preprocess["std"]),
        )
    return BackboneWeights(
        state_dict=state, preprocess=preprocess, source=str(path), metadata=metadata
    )
