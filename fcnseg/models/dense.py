"""Dense prediction without upsampling: shift-and-stitch and filter rarefaction (FCN §3.2).

A net with output stride ``f`` sees the image on a coarse grid.  The FCN paper (Long, Shelhamer,
Darrell, CVPR 2015, §3.2) discusses two ways of getting a *dense* (stride-1) output from it
without any upsampling layer:

* **Shift-and-stitch** (the OverFeat trick, :func:`shift_and_stitch`): run the net on the
  ``f**2`` copies of the input shifted by ``(dy, dx) in [0, f)**2`` and interlace the coarse
  outputs.  This costs ``f**2`` forward passes.
* **Filter rarefaction** (:func:`rarefy`): set a pooling/conv layer's stride to 1 and dilate
  every later filter by the removed stride (the *à trous* trick).  One forward pass computes the
  very same dense output -- for an unpadded ("valid") net, exactly equal wherever both are
  defined -- because each later filter now reads the same samples it read on the coarse grid.

Both keep each filter's receptive field but forbid it from seeing information at a finer scale
than its original design; simply shrinking the net's subsampling instead lets filters see finer
detail but shrinks their receptive fields and costs more.  Either way resolution is traded
against receptive field and computation, which is why FCN chose learned upsampling
(backwards-strided convolution) fused with skip layers instead.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["ShiftAndStitch", "rarefy", "shift_and_stitch"]

# Layers that act per pixel: unaffected by a denser input grid, so rarefy passes them through.
# (BatchNorm and Dropout are deterministic per pixel only in eval mode, where equality holds.)
_ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Dropout,
    nn.Dropout2d,
    nn.BatchNorm2d,
)


def shift_and_stitch(net: nn.Module, x: torch.Tensor, factor: int) -> torch.Tensor:
    """Dense output of ``net`` (output stride ``factor``) by shift-and-stitch: ``factor**2`` passes.

    For each shift ``(dy, dx) in [0, factor)**2`` the input shifted up/left,
    ``x[..., dy:, dx:]``, goes through ``net`` and is interlaced::

        dense[..., y*factor + dy, x*factor + dx] = net(x[..., dy:, dx:])[..., y, x]

    Defined region: with ``n_dy`` the output height of ``net(x[..., dy:, :])`` (and ``m_dx``
    the width of ``net(x[..., :, dx:])``), the result has height ``min_dy(factor*n_dy + dy)`` and
    width ``min_dx(factor*m_dx + dx)`` -- the largest top-left region in which every
    interlaced pixel exists (the right/bottom rows some shifts lack are cropped).  For an
    unpadded net with receptive field ``k`` this is ``H - k + 1`` (by ``W - k + 1``): pixel
    ``(i, j)`` is the net's response to the window ``x[..., i:i+k, j:j+k]``, exactly the
    output of :func:`rarefy` ``(net)``.  For padded nets the shifted inputs are re-padded, so
    the two agree only away from the top/left borders.
    """
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive int, got {factor!r}")
    if factor == 1:
        return net(x)
    outs = {(dy, dx): net(x[..., dy:, dx:]) for dy in range(factor) for dx in range(factor)}
    height = min(factor * o.shape[-2] + dy for (dy, _), o in outs.items())
    width = min(factor * o.shape[-1] + dx for (_, dx), o in outs.items())
    if height <= 0 or width <= 0:
        raise ValueError(f"input of size {tuple(x.shape[-2:])} too small for shift-and-stitch")
    ref = outs[0, 0]
    dense = ref.new_empty((*ref.shape[:-2], height, width))
    for (dy, dx), out in outs.items():
        rows = math.ceil((height - dy) / factor)
        cols = math.ceil((width - dx) / factor)
        dense[..., dy:height:factor, dx:width:factor] = out[..., :rows, :cols]
    return dense


class ShiftAndStitch(nn.Module):
    """Wrap ``net`` (output stride ``factor``) so its output is dense; see :func:`shift_and_stitch`.

    Costs ``factor**2`` forward passes of ``net``; :func:`rarefy` gives the same result in one.
    """

    def __init__(self, net: nn.Module, factor: int) -> None:
        super().__init__()
        if not isinstance(factor, int) or factor < 1:
            raise ValueError(f"factor must be a positive int, got {factor!r}")
        self.net = net
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shift_and_stitch(self.net, x, self.factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _stride(layer: nn.Module) -> tuple[int, int] | None:
    """Stride of a conv/pool layer (pools default to their kernel size); None for others."""
    if isinstance(layer, nn.Conv2d):
        return _pair(layer.stride)
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        return _pair(layer.stride if layer.stride is not None else layer.kernel_size)
    return None


def _mul(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return (a[0] * b[0], a[1] * b[1])


def _rarefy_layer(
    layer: nn.Module, name: str, acc: tuple[int, int], remove: bool
) -> tuple[nn.Module, tuple[int, int]]:
    """Rarefy one (already copied) layer; return it and the updated dilation factor."""
    if isinstance(layer, nn.Sequential):
        return layer, _rarefy_seq(layer, name, acc, remove_all=remove, at=None)
    if isinstance(layer, _ELEMENTWISE):
        return layer, acc
    if isinstance(layer, nn.Conv2d):
        stride = _stride(layer)
        layer.dilation = _mul(_pair(layer.dilation), acc)
        if not isinstance(layer.padding, str):  # 'same'/'valid' adapt to the new dilation
            layer.padding = _mul(_pair(layer.padding), acc)
            if layer.padding_mode != "zeros":
                layer._reversed_padding_repeated_twice = [
                    p for p in reversed(layer.padding) for _ in range(2)
                ]
        if remove:
            layer.stride = (1, 1)
            acc = _mul(acc, stride)
        return layer, acc
    if isinstance(layer, nn.MaxPool2d):
        if layer.return_indices:
            raise ValueError(f"rarefy: {name} ({layer}) returns indices; unsupported")
        kernel = _pair(layer.kernel_size)
        stride = _stride(layer)
        padding = _mul(_pair(layer.padding), acc)
        layer.dilation = _mul(_pair(layer.dilation), acc)
        layer.stride = (1, 1) if remove else stride
        new_acc = _mul(acc, stride) if remove else acc
        if all(2 * p <= k for p, k in zip(padding, kernel, strict=True)):
            layer.padding = padding
            return layer, new_acc
        # PyTorch caps implicit pooling padding at kernel_size / 2; pad with -inf explicitly.
        if layer.ceil_mode and layer.stride != (1, 1):
            raise ValueError(f"rarefy: {name} ({layer}) needs explicit padding with ceil_mode")
        layer.padding = (0, 0)
        pad = nn.ConstantPad2d((padding[1], padding[1], padding[0], padding[0]), -math.inf)
        return nn.Sequential(pad, layer), new_acc
    if isinstance(layer, nn.AvgPool2d):
        if acc != (1, 1) and _pair(layer.kernel_size) != (1, 1):
            raise ValueError(
                f"rarefy: {name} ({layer}) would need dilation {acc}, which nn.AvgPool2d "
                "lacks; replace it by a depthwise conv with constant weights"
            )
        stride = _stride(layer)
        if remove:
            layer.stride = (1, 1)
            acc = _mul(acc, stride)
        return layer, acc
    raise ValueError(
        f"rarefy: unsupported layer {name} ({type(layer).__name__}): only Conv2d, MaxPool2d, "
        "AvgPool2d, nested Sequential and elementwise layers can be rarefied"
    )


def _rarefy_seq(
    seq: nn.Sequential, prefix: str, acc: tuple[int, int], *, remove_all: bool, at: int | None
) -> tuple[int, int]:
    """Rarefy ``seq`` in place, starting from dilation factor ``acc``; return the final factor."""
    for i, layer in enumerate(seq):
        remove = remove_all or i == at
        seq[i], acc = _rarefy_layer(layer, f"{prefix}[{i}]", acc, remove)
    return acc


def rarefy(net: nn.Sequential, *, at: int | None = None) -> nn.Sequential:
    """Copy of ``net`` with strides removed and later filters dilated (filter rarefaction, à trous).

    Setting a layer's stride ``s`` to 1 makes its output ``s`` times denser; every later
    conv/pool then gets dilation and padding multiplied by ``s`` so it reads the same samples
    as before, while keeping its own stride.  Removing several strides compounds: a layer's
    dilation is multiplied by the product of all strides removed before it.  Same-padded convs
    stay same-padded.  One forward pass then yields what :func:`shift_and_stitch` gets from
    ``f**2`` passes (``f`` = product of removed strides) -- identical for unpadded nets; with
    padding, identical on the coarse grid (``rarefy(net)(x)[..., ::f, ::f] == net(x)``) and
    away from the borders.

    By default every stride is removed (output stride 1).  ``at`` selects a single top-level
    index whose stride is removed; the other strides are kept.  Supports ``nn.Conv2d``,
    ``nn.MaxPool2d``, ``nn.AvgPool2d`` (only where no dilation is needed: PyTorch's has none),
    nested ``nn.Sequential`` and elementwise layers (activations, Dropout, Identity, BatchNorm2d
    -- equal in eval mode).  Raises ``ValueError`` naming any other layer.
    """
    if not isinstance(net, nn.Sequential):
        raise ValueError(f"rarefy expects an nn.Sequential, got {type(net).__name__}")
    if at is not None:
        if not -len(net) <= at < len(net):
            raise ValueError(f"at={at} out of range for a Sequential of {len(net)} layers")
        at %= len(net)
        if _stride(net[at]) in (None, (1, 1)):
            raise ValueError(f"rarefy: net[{at}] ({net[at]}) is not a strided conv/pool layer")
    out = copy.deepcopy(net)
    _rarefy_seq(out, "net", (1, 1), remove_all=at is None, at=at)
    return out
