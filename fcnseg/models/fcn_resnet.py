"""torchvision's FCN (``fcn_resnet50`` / ``fcn_resnet101``) as an fcnseg model.

The architecture is torchvision's own, built from its pieces: a ResNet with its last two stages
dilated instead of strided (``replace_stride_with_dilation=[False, True, True]``, output stride
8), :class:`torchvision.models.segmentation.fcn.FCNHead` on ``layer4`` (3×3 conv → BN → ReLU →
dropout 0.1 → 1×1 conv), optionally a second ``FCNHead`` on ``layer3`` (``aux``), and the
logits resized bilinearly to the input's size. :class:`FCNResNet` *is* a torchvision
:class:`~torchvision.models.segmentation.FCN`, so its parameter names are torchvision's
(``backbone.*``, ``classifier.*``, ``aux_classifier.*``) and a torchvision state dict loads
as it is (:func:`load_torchvision_state_dict` adds a readable error).

The auxiliary head is for loading torchvision's weights and for inspection
(:meth:`FCNResNet.forward_scores`); training uses the main head alone (torchvision's reference
adds 0.5 × the auxiliary loss, which fcnseg's Trainer does not).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision import models
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import FCN as TorchvisionFCN
from torchvision.models.segmentation.fcn import FCNHead

from fcnseg.models.backbones import _load
from fcnseg.models.base import SegmentationModel
from fcnseg.models.registry import register_model
from fcnseg.weights import IMAGENET_TORCHVISION, Preprocess, load_backbone_weights

__all__ = ["RESNETS", "FCNResNet", "fcn_resnet", "load_torchvision_state_dict"]

#: The ResNet builders by depth.
RESNETS: dict[int, Callable[..., models.ResNet]] = {50: models.resnet50, 101: models.resnet101}


class FCNResNet(SegmentationModel, TorchvisionFCN):
    """torchvision's FCN on a dilated ResNet (see the module docstring and :func:`fcn_resnet`).

    ``forward(images)``: normalised images N×3×H×W (see :attr:`preprocess`) → logits of the
    main head, N×``num_classes``×H×W, for any H, W ≥ 1.
    """

    def __init__(self, resnet: models.ResNet, num_classes: int, *, aux: bool = False) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        layers = {"layer4": "out", "layer3": "aux"} if aux else {"layer4": "out"}
        width = resnet.fc.in_features  # layer4's channels (2048); layer3 has half
        TorchvisionFCN.__init__(
            self,
            IntermediateLayerGetter(resnet, return_layers=layers),
            FCNHead(width, num_classes),
            FCNHead(width // 2, num_classes) if aux else None,
        )
        self.num_classes = num_classes
        self.aux = aux
        self.preprocess = Preprocess(IMAGENET_TORCHVISION.mean, IMAGENET_TORCHVISION.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The main head's logits at the input's size (the auxiliary head is not run)."""
        scores = self.classifier(self.backbone(images)["out"])
        return F.interpolate(scores, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def forward_scores(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """torchvision's output: ``{"out": main logits}``, plus ``"aux"`` (the ``layer3`` head's
        logits, also at the input's size) when the model has the auxiliary head."""
        return dict(TorchvisionFCN.forward(self, images))


def load_torchvision_state_dict(
    model: FCNResNet, state_dict: Mapping[str, torch.Tensor]
) -> FCNResNet:
    """Load a torchvision ``fcn_resnet50``/``fcn_resnet101`` state dict into ``model`` (same
    keys, no mapping); returns ``model``.

    Keys must match exactly, except that ``aux_classifier.*`` tensors are dropped when the
    model has no auxiliary head (torchvision's COCO weights carry one). Any other missing or
    unexpected key, or a shape that differs (depth, number of classes), is a ``ValueError``
    naming them.
    """
    own = model.state_dict()
    state = {
        k: v for k, v in state_dict.items() if model.aux or not k.startswith("aux_classifier.")
    }
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    problems = []
    if missing:
        problems.append(f"missing keys {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_some(unexpected)}")
    if not problems:
        problems = [
            f"{k} has shape {tuple(v.shape)}, the model's is {tuple(own[k].shape)}"
            for k, v in state.items()
            if v.shape != own[k].shape
        ][:3]
    if problems:
        raise ValueError(
            f"the state dict does not fit fcn_resnet (depth {_depth(model)}, "
            f"{model.num_classes} classes, aux={model.aux}): {'; '.join(problems)}"
        )
    model.load_state_dict(state)
    return model


def _some(keys: list[str], n: int = 5) -> str:
    return f"{keys[:n]}{f' and {len(keys) - n} more' if len(keys) > n else ''}"


def _depth(model: FCNResNet) -> int:
    blocks = sum(len(getattr(model.backbone, f"layer{i}")) for i in range(1, 5))
    return 3 * blocks + 2  # three convolutions per bottleneck, plus conv1 and fc


@register_model("fcn_resnet")
def fcn_resnet(
    *,
    num_classes: int,
    depth: int = 50,
    aux: bool = False,
    backbone_weights: str | Path | None = None,
) -> FCNResNet:
    """torchvision's ``fcn_resnet50`` (``depth=50``) or ``fcn_resnet101`` (``depth=101``).

    Args:
        num_classes: number of output classes.
        depth: 50 or 101 (the ResNet).
        aux: add torchvision's auxiliary ``FCNHead`` on ``layer3`` (to load weights that have
            it, and to read its output through :meth:`FCNResNet.forward_scores`).
        backbone_weights: ``"imagenet"`` (torchvision's ResNet release) or a torchvision ResNet
            state dict file (``.safetensors``/``.pth``); ``None`` for random initialisation.
            Whole-model torchvision weights go through :func:`load_torchvision_state_dict`.

    ``model.preprocess`` is torchvision's ImageNet normalisation (or the weights file's own).
    """
    if depth not in RESNETS:
        raise ValueError(f"fcn_resnet: depth must be one of {sorted(RESNETS)}, got {depth!r}")
    name = f"resnet{depth}"
    weights = None if backbone_weights is None else load_backbone_weights(backbone_weights, name)
    resnet = RESNETS[depth](weights=None, replace_stride_with_dilation=[False, True, True])
    _load(resnet, weights, optional=("fc.",), backbone=name)
    model = FCNResNet(resnet, num_classes, aux=aux)
    if weights is not None:
        model.set_preprocess(Preprocess.from_dict(weights.preprocess))
    return model
