"""Load the reference FCN weights (converted Caffe models) by their original layer names.

The reference nets name their layers ``conv1_1 … conv5_3, fc6, fc7, score_fr, score_pool4,
score_pool3, upscore2, upscore_pool4`` and ``upscore`` / ``upscore16`` / ``upscore8``. Converted
state dicts use ``<layer>.weight`` / ``<layer>.bias`` (or Caffe's blob order ``<layer>.0`` /
``<layer>.1``); fc6 may be stored as a 7×7 convolution or flattened.

The reference nets were trained on Caffe's input: BGR channel order, values 0–255, the ILSVRC
mean subtracted (:data:`CAFFE_PREPROCESS`). Loading their weights installs that as
``model.preprocess``, so ``model(model.preprocess(rgb))`` is what the reference computed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from fcnseg.models.fcn import FCN
from fcnseg.weights import Preprocess, read_state_dict

__all__ = ["CAFFE_PREPROCESS", "caffe_key_map", "caffe_preprocess", "convert_caffe_state",
           "load_caffe_weights"]  # fmt: skip

log = logging.getLogger("fcnseg")

#: The reference nets' input, as their model pages state it ("BGR channel order, with the
#: per-channel mean subtracted: B 104.00698793 G 116.66876762 R 122.67891434"), on 0–255; no std.
CAFFE_PREPROCESS: dict[str, Any] = {
    "mean": [104.00698793, 116.66876762, 122.67891434],
    "std": [1.0, 1.0, 1.0],
    "input_range": 255.0,
    "channel_order": "BGR",
}


def caffe_preprocess() -> Preprocess:
    """A :class:`~fcnseg.weights.Preprocess` of :data:`CAFFE_PREPROCESS` (RGB in, Caffe out)."""
    return Preprocess.from_dict(CAFFE_PREPROCESS)


# (reference layer, VGG16 stage, index of the conv inside torchvision's ``features``)
_VGG_CONVS = [
    ("conv1_1", "pool1", 0),
    ("conv1_2", "pool1", 2),
    ("conv2_1", "pool2", 5),
    ("conv2_2", "pool2", 7),
    ("conv3_1", "pool3", 10),
    ("conv3_2", "pool3", 12),
    ("conv3_3", "pool3", 14),
    ("conv4_1", "pool4", 17),
    ("conv4_2", "pool4", 19),
    ("conv4_3", "pool4", 21),
    ("conv5_1", "pool5", 24),
    ("conv5_2", "pool5", 26),
    ("conv5_3", "pool5", 28),
]


def caffe_key_map(model: FCN) -> dict[str, str]:
    """Reference layer name → this model's parameter prefix."""
    if model.backbone.name != "vgg16":
        raise ValueError(f"reference FCN weights exist for VGG16 only, not {model.backbone.name}")
    mapping = {name: f"backbone.stages.{stage}.{idx}" for name, stage, idx in _VGG_CONVS}
    mapping |= {"fc6": "backbone.stages.fc6.0", "fc7": "backbone.stages.fc7.0"}
    mapping["score_fr"] = "score_fr"
    for name in model.scorers:
        mapping[name] = f"scorers.{name}"
    for name in model.upsamplers:
        mapping[name] = f"upsamplers.{name}"
    for name in ("upscore", "upscore16", "upscore8", "upscore32"):
        mapping[name] = "upscore"
    return mapping


def _split(key: str) -> tuple[str, str]:
    layer, _, blob = key.rpartition(".")
    blob = {"0": "weight", "1": "bias"}.get(blob, blob)
    return layer, blob


def convert_caffe_state(
    model: FCN, state: dict[str, torch.Tensor], *, strict: bool = True
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Reference-named tensors renamed and reshaped to ``model``'s state dict keys; returns
    ``(converted, reference keys used)``. ``model`` may live on the meta device (only its
    names and shapes are read).

    Reshapes when element counts agree (fc6 flattened ↔ 7×7). Upsampling weights in the
    reference are full C×C filters with zeros off the diagonal; fcnseg's are per-class, so the
    diagonal is taken (a warning says if anything off-diagonal was lost). ``strict`` raises on
    keys that match no layer.
    """
    mapping = caffe_key_map(model)
    own = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    used, unknown = [], []
    for key, value in state.items():
        layer, blob = _split(key)
        target = f"{mapping[layer]}.{blob}" if layer in mapping else ""
        if target not in own:
            unknown.append(key)
            continue
        dest = own[target]
        value = value.to(dest.dtype)
        if layer.startswith("upscore") and value.dim() == 4 and value.shape[1] == dest.shape[0]:
            diag = torch.arange(value.shape[0])
            full = value
            value = full[diag, diag].unsqueeze(1)
            off = full.clone()
            off[diag, diag] = 0
            if off.abs().max() > 0:
                log.warning("%s: dropped non-zero cross-class upsampling weights", key)
        if value.numel() != dest.numel():
            raise ValueError(
                f"{key}: shape {tuple(value.shape)} does not fit {target} {tuple(dest.shape)} "
                f"(num_classes={model.num_classes}?)"
            )
        converted[target] = value.reshape(dest.shape)
        used.append(key)
    if unknown and strict:
        raise ValueError(
            f"keys not in the reference FCN layout of this model: {unknown[:8]}"
            f"{' …' if len(unknown) > 8 else ''}"
        )
    return converted, used


def load_caffe_weights(
    model: FCN, source: dict[str, torch.Tensor] | str | Path, *, strict: bool = True
) -> list[str]:
    """Copy reference-named tensors into ``model`` (any mode) and set ``model.preprocess`` to
    the reference's input (:data:`CAFFE_PREPROCESS`); returns the reference keys used.

    Conversion as :func:`convert_caffe_state`; ``strict`` raises on keys that match no layer.
    """
    state = source if isinstance(source, dict) else read_state_dict(source)[0]
    converted, used = convert_caffe_state(model, state, strict=strict)
    own = model.state_dict()
    with torch.no_grad():
        for target, value in converted.items():
            own[target].copy_(value)
    model.set_preprocess(caffe_preprocess())
    log.info("loaded %d reference tensors; preprocess: BGR, 0-255, ILSVRC mean", len(used))
    return used
