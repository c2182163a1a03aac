"""In-network upsampling: transposed convolution initialised to bilinear interpolation."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["bilinear_deconv", "bilinear_kernel", "deconv_geometry"]


def deconv_geometry(factor: int, *, half_pixel: bool | None = None) -> tuple[int, int, int]:
    """``(kernel, stride, padding)`` of an upsampling layer by ``factor``.

    The rule is ``kernel = 2f - f % 2``, ``stride = f``, ``padding = ceil((f - 1) / 2)``; its
    output is exactly ``f·n`` for ``n`` inputs. ``half_pixel`` picks the kernel parity
    explicitly: an even kernel (2f) places input ``i`` at output ``f·i + (f - 1)/2`` (half-pixel
    grids such as VGG's 2×2 pools), an odd kernel (2f − 1) at an integer position (grids of
    stride-2 convolutions with odd kernels: ResNet, MobileNet). ``None`` follows the rule.
    """
    if factor < 1:
        raise ValueError(f"upsampling factor must be >= 1, got {factor}")
    if half_pixel is None:
        half_pixel = factor % 2 == 0
    kernel = 2 * factor if half_pixel else 2 * factor - 1
    return kernel, factor, math.ceil((factor - 1) / 2)


def bilinear_kernel(size: int) -> torch.Tensor:
    """``size``×``size`` bilinear interpolation filter (the reference's ``upsample_filt``)."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float64)
    filt = 1 - (og - centre).abs() / factor
    return (filt[:, None] * filt[None, :]).float()


def bilinear_deconv(
    channels: int,
    factor: int,
    *,
    learnable: bool = False,
    half_pixel: bool | None = None,
    padding: int | None = None,
) -> nn.ConvTranspose2d:
    """Per-channel transposed convolution upsampling by ``factor``, initialised to bilinear.

    Kernel ``2f - f % 2``, stride ``f``, padding ``ceil((f - 1) / 2)`` (override with
    ``padding``), no bias. Channels never mix: the layer is grouped (one filter per channel), so
    even a learned layer stays a per-class interpolation. Away from the borders it realises
    ``F.interpolate(mode="bilinear", align_corners=False)`` (the half-pixel convention: output
    ``j`` samples input coordinate ``(j + 0.5)/f - 0.5``). ``learnable=False`` freezes it.
    """
    kernel, stride, default_padding = deconv_geometry(factor, half_pixel=half_pixel)
    layer = nn.ConvTranspose2d(
        channels,
        channels,
        kernel_size=kernel,
        stride=stride,
        padding=default_padding if padding is None else padding,
        groups=channels,
        bias=False,
    )
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(kernel).expand_as(layer.weight))
    layer.weight.requires_grad_(learnable)
    return layer
