"""Initialising a model from trained weights of another class count, or of a coarser FCN.

A layer is *class-dependent* when the shape of one of its tensors changes with ``num_classes``
(the FCNs' score layers and upsamplers, U-Net's 1×1 head). :func:`class_layers` finds them from
the model's builder alone, building its spec on the meta device with another class count and
comparing shapes, so a newly registered model needs no code for it.

:func:`load_for_finetuning` loads every tensor from the trained weights. A class-dependent layer
that the weights lack (the staged recipe's new skip: FCN-16s from FCN-32s) or hold at another
shape (another class count: 21 VOC classes → 2) keeps the model's fresh initialisation, whatever
that is: zero score layers and bilinear upsamplers for the FCNs (the paper's), the paper's
Gaussian for U-Net's head. Any other missing, extra or reshaped tensor is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fcnseg.models.registry import build_model

__all__ = ["class_layers", "load_for_finetuning"]

log = logging.getLogger("fcnseg")

#: How many offending tensors an error message names.
_SHOWN = 3


def _layer(tensor: str) -> str:
    """The submodule a state-dict entry belongs to (``"score_fr.weight"`` → ``"score_fr"``)."""
    return tensor.rpartition(".")[0] or tensor


def class_layers(spec: Mapping[str, Any]) -> list[str]:
    """The submodules of the model built from ``spec`` that hold a tensor whose shape depends on
    ``num_classes``, by name (FCN-32s: ``["score_fr", "upscore"]``)."""
    n = int(spec["num_classes"])
    with torch.device("meta"):  # no memory, no init work
        own, other = (
            {k: v.shape for k, v in build_model(dict(spec, num_classes=c)).state_dict().items()}
            for c in (n, n + 1)
        )
    return sorted({_layer(k) for k, shape in own.items() if other.get(k) != shape})


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


@torch.no_grad()
def load_for_finetuning(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], spec: Mapping[str, Any]
) -> dict[str, str]:
    """Copy ``state_dict`` into ``model`` (built from ``spec``), leaving the class-dependent
    layers (:func:`class_layers`) the weights lack or hold at another shape at their fresh
    initialisation.

    Returns those reset layers, each with why (``"not in the weights"`` or the two shapes).
    Raises ``ValueError`` (one line) when anything else does not fit: a tensor missing, extra
    or of another shape outside the class-dependent layers — another backbone, say.
    """
    own = model.state_dict()
    layers = class_layers(spec)
    reset: dict[str, str] = {}
    for layer in layers:
        keys = [k for k in own if _layer(k) == layer]
        if any(k not in state_dict for k in keys):
            reset[layer] = "not in the weights"
            continue
        wrong = [k for k in keys if state_dict[k].shape != own[k].shape]
        if wrong:
            k = wrong[0]
            reset[layer] = f"{k} {_shape(state_dict[k])} in the weights, {_shape(own[k])} here"
    load = [k for k in own if _layer(k) not in reset]
    problems = [f"missing {k}" for k in load if k not in state_dict]
    problems += [
        f"{k} {_shape(state_dict[k])} in the weights, {_shape(own[k])} here"
        for k in load
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    problems += [f"unexpected {k}" for k in state_dict if k not in own]
    if problems:
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        raise ValueError(
            f"the weights do not fit {type(model).__name__} outside its class-dependent layers "
            f"({', '.join(layers)}): {'; '.join(problems[:_SHOWN])}{more}"
        )
    for k in load:
        own[k].copy_(state_dict[k])
    return reset
