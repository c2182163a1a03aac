"""Net surgery: turn a classifier's fully connected layers into convolutions."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["convolutionalize", "transplant"]


def convolutionalize(linear: nn.Linear, in_shape: tuple[int, int, int]) -> nn.Conv2d:
    """The convolution computing ``linear`` on every ``in_shape``-sized window of a feature map.

    ``in_shape`` is ``(channels, height, width)`` of the flattened input the linear layer was
    trained on (PyTorch flattens channel-major, so the weight reshapes directly): VGG16's fc6
    (25088 → 4096 over 512×7×7) becomes a 7×7 convolution, fc7 (``in_shape=(4096, 1, 1)``) a 1×1.
    On an input of exactly ``in_shape`` the conv's single output equals the linear layer's; on a
    larger input it slides the classifier with the stride of the feature map.
    """
    channels, height, width = in_shape
    if channels * height * width != linear.in_features:
        raise ValueError(
            f"in_shape {in_shape} has {channels * height * width} elements but the linear layer "
            f"takes {linear.in_features} inputs"
        )
    conv = nn.Conv2d(
        channels,
        linear.out_features,
        kernel_size=(height, width),
        bias=linear.bias is not None,
    )
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(linear.out_features, channels, height, width))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    conv.to(device=linear.weight.device, dtype=linear.weight.dtype)
    return conv


def transplant(target: nn.Module, source: dict[str, torch.Tensor]) -> list[str]:
    """Copy every parameter of ``source`` whose name exists in ``target``, reshaping when the
    element count matches (the reference's ``surgery.transplant``). Returns the names copied."""
    own = target.state_dict()
    copied = []
    for name, value in source.items():
        if name not in own:
            continue
        if own[name].numel() != value.numel():
            raise ValueError(
                f"cannot transplant {name}: source has shape {tuple(value.shape)}, "
                f"target {tuple(own[name].shape)}"
            )
        own[name].copy_(value.reshape(own[name].shape))
        copied.append(name)
    return copied
