"""The one forward pass: preprocess → memory format → mixed precision → model.

Training, evaluation, prediction and the benchmarks all call :func:`forward`, so an image is fed
to a network the same way everywhere (the normalisation its weights expect, channels_last when
asked, autocast when asked).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["autocast", "forward"]


def autocast(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager:
    """Mixed precision: ``"bf16"`` on CUDA and CPU, ``"fp16"`` on CUDA; a no-op otherwise
    (``None``, or fp16 asked of a CPU)."""
    if amp == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if amp == "fp16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def forward(
    model: nn.Module,
    images: torch.Tensor,
    *,
    channels_last: bool = False,
    amp: str | None = None,
    valid: bool = False,
) -> torch.Tensor:
    """Logits of ``images`` (B×3×H×W, uint8 or float in [0, 1], on the model's device).

    ``model`` may be wrapped (``DistributedDataParallel``): its ``module`` supplies the
    preprocessing, the wrapper runs the forward pass. Returns whatever dtype autocast gives;
    callers that need float32 call ``.float()``. ``valid=True`` calls ``model(x, valid=True)``:
    the bare network on tiles that carry the context of
    :meth:`~fcnseg.models.SegmentationModel.training_context`.
    """
    net = getattr(model, "module", model)
    x = net.preprocess(images)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, amp):
        return model(x, valid=True) if valid else model(x)
