"""A small FCN whose random predictions vary across classes (imported by test_precision.py and
test_quantize.py): with the score layers' default init one class wins everywhere, which would
let any label-agreement check pass trivially."""

from __future__ import annotations

from pathlib import Path

import torch

from fcnseg.checkpoint import save_checkpoint
from fcnseg.models import fcn8s


def varied_fcn8s_checkpoint(
    path: Path, classes: list[str], palette: list[list[int]], seed: int = 0
) -> Path:
    """An FCN-8s/ResNet-18 checkpoint at ``path`` with random score layers centred over the
    classes (seed 0 on the synthetic scenes: three classes win ≥ 10 % of the pixels each)."""
    torch.manual_seed(seed)
    model = fcn8s(backbone="resnet18", num_classes=len(classes))
    with torch.no_grad():
        for layer in (model.score_fr, *model.scorers.values()):
            layer.weight.normal_(0, 0.1)
            layer.weight -= layer.weight.mean(0, keepdim=True)
    spec = {"name": "fcn8s", "backbone": "resnet18", "num_classes": len(classes), "mode": "exact"}
    return save_checkpoint(
        path, model, model_spec=spec, classes=classes, palette=palette, ignore_index=255
    )
