"""Tiny models for the service tests (imported by test_serve*.py)."""

from __future__ import annotations

import threading

import torch
from torch import nn

from fcnseg.models import SegmentationModel


class Pointwise(SegmentationModel):
    """Per-pixel classifier: each class wins somewhere in a random image."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 1)
        self.preprocess = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * 5


class Gate(SegmentationModel):
    """A model that blocks until released: holds the one inference slot."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.preprocess = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        assert self.release.wait(30)
        return torch.zeros(x.shape[0], 2, *x.shape[-2:])
