"""Classification networks from torchvision, cut into the named stages FCN's skips need.

Each builder constructs torchvision's own definition, loads a torchvision-format state dict into
it (so weights files map one to one), then regroups its layers into stages. VGG16 and AlexNet
keep their fully connected layers fc6/fc7, convolutionalized (with dropout), as in the paper;
GoogLeNet, ResNet and MobileNetV3 drop the global pooling and classifier (the paper's treatment
of GoogLeNet).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchvision import models

from fcnseg.choices import unknown_choice
from fcnseg.models.geometry import Grid, trace
from fcnseg.models.surgery import convolutionalize
from fcnseg.weights import BackboneWeights, Preprocess, _imagenet_preprocess

__all__ = ["BACKBONES", "Backbone", "build_backbone"]

log = logging.getLogger("fcnseg")


class Backbone(nn.Module):
    """Ordered named stages; ``forward`` returns every stage's output in a dict.

    ``out`` names the deepest stage (stride 32, the input of ``score_fr``), ``skips`` the
    stride-16 and stride-8 stages that FCN-16s / FCN-8s fuse (VGG16: ``pool4``, ``pool3``).
    """

    def __init__(
        self,
        name: str,
        stages: OrderedDict[str, nn.Module],
        *,
        out: str,
        skips: tuple[str, str],
        channels: dict[str, int],
        preprocess: Preprocess,
    ) -> None:
        super().__init__()
        self.name = name
        self.stages = nn.ModuleDict(stages)
        self.out = out
        self.skips = skips
        self.channels = channels
        self.preprocess = preprocess

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features: dict[str, torch.Tensor] = {}
        for name, stage in self.stages.items():
            x = stage(x)
            features[name] = x
        return features

    def grids(self) -> dict[str, Grid]:
        """Coordinate grid (stride, offset, receptive field) of every stage's output."""
        grids: dict[str, Grid] = {}
        grid = Grid()
        for name, stage in self.stages.items():
            grid = trace(stage, grid)
            grids[name] = grid
        return grids


def _load(
    model: nn.Module,
    weights: BackboneWeights | None,
    *,
    optional: tuple[str, ...],
    ignore: tuple[str, ...] = (),
    backbone: str,
) -> None:
    """Load ``weights`` into a torchvision ``model``; keys starting with ``optional`` may be
    absent (they keep their random init and the log says so), ``ignore`` keys are dropped."""
    if weights is None:
        return
    state = {k: v for k, v in weights.state_dict.items() if not k.startswith(ignore)}
    own = model.state_dict()
    unexpected = sorted(k for k in state if k not in own)
    if unexpected:
        raise ValueError(
            f"{weights.source} does not look like torchvision {backbone} weights: unexpected keys "
            f"{unexpected[:5]}{' …' if len(unexpected) > 5 else ''} (expected e.g. "
            f"{list(own)[:3]})"
        )
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ValueError(
                f"{weights.source}: {key} has shape {tuple(value.shape)}, torchvision {backbone} "
                f"expects {tuple(own[key].shape)}"
            )
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    required = [k for k in missing if not k.startswith(optional)]
    if required:
        raise ValueError(
            f"{weights.source} lacks {len(required)} {backbone} tensors, e.g. {required[:5]}"
        )
    model.load_state_dict(state, strict=False)
    absent = sorted({k.split(".")[0] + ".*" for k in missing})
    if absent:
        fc = " (fc6/fc7)" if backbone in ("vgg16", "alexnet") else ""
        log.warning(
            "%s has no %s tensors%s; those layers start from random initialisation",
            weights.source,
            ", ".join(absent),
            fc,
        )
    log.info("loaded %d tensors from %s", len(state), weights.source)


def _preprocess(weights: BackboneWeights | None, backbone: str) -> Preprocess:
    meta = weights.preprocess if weights is not None else _imagenet_preprocess(backbone)
    return Preprocess.from_dict(meta)


def _fc_stage(conv: nn.Conv2d, dropout: float, *, dropout_first: bool) -> nn.Sequential:
    layers: list[nn.Module] = [conv, nn.ReLU(inplace=True)]
    drop = nn.Dropout(dropout)
    layers = [drop, *layers] if dropout_first else [*layers, drop]
    return nn.Sequential(*layers)


def vgg16(
    *, mode: str = "exact", weights: BackboneWeights | None = None, width: float = 1.0
) -> Backbone:
    """VGG16 (configuration D): stages pool1 … pool5, fc6 (7×7 conv), fc7 (1×1 conv).

    ``mode="exact"``: fc6 is zero-padded by 3 so every input size works without padding the
    image. ``mode="caffe"``: the reference layout, conv1_1 padded by 100 and fc6 unpadded. Both
    use ceil-mode pooling as Caffe did. ``width`` scales every channel count (for geometry
    experiments and fast tests; weights need ``width=1``).
    """
    if width == 1.0:
        net = models.vgg16(weights=None)
    else:
        # Same layout and init as torchvision's VGG, without first building its 102M-parameter
        # classifier only to replace it.
        cfg: list[Any] = [v if v == "M" else max(1, round(v * width)) for v in models.vgg.cfgs["D"]]
        hidden = max(1, round(4096 * width))
        net = nn.Module()
        net.features = models.vgg.make_layers(cfg)
        net.classifier = nn.Sequential(
            nn.Linear(cfg[-2] * 49, hidden),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(hidden, 1000),
        )
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
    _load(net, weights, optional=("classifier.",), backbone="vgg16")
    f = net.features
    for m in f:
        if isinstance(m, nn.MaxPool2d):
            m.ceil_mode = True
    if mode == "caffe":
        f[0].padding = (100, 100)
    c5 = f[28].out_channels
    fc6 = convolutionalize(net.classifier[0], (c5, 7, 7))
    fc6.padding = (3, 3) if mode == "exact" else (0, 0)
    fc7 = convolutionalize(net.classifier[3], (net.classifier[3].in_features, 1, 1))
    stages = OrderedDict(
        pool1=f[0:5],
        pool2=f[5:10],
        pool3=f[10:17],
        pool4=f[17:24],
        pool5=f[24:31],
        fc6=_fc_stage(fc6, 0.5, dropout_first=False),
        fc7=_fc_stage(fc7, 0.5, dropout_first=False),
    )
    channels = {
        "pool1": f[2].out_channels,
        "pool2": f[7].out_channels,
        "pool3": f[14].out_channels,
        "pool4": f[21].out_channels,
        "pool5": c5,
        "fc6": fc6.out_channels,
        "fc7": fc7.out_channels,
    }
    return Backbone(
        "vgg16",
        stages,
        out="fc7",
        skips=("pool4", "pool3"),
        channels=channels,
        preprocess=_preprocess(weights, "vgg16"),
    )


def alexnet(*, mode: str = "exact", weights: BackboneWeights | None = None) -> Backbone:
    """AlexNet (torchvision's one-tower variant): pool1, pool2, pool5, fc6 (6×6 conv), fc7.

    fc6 is padded by 3 so any input size works (its even kernel shifts the grid by half a cell,
    which the geometry accounts for).
    """
    net = models.alexnet(weights=None)
    _load(net, weights, optional=("classifier.",), backbone="alexnet")
    f = net.features
    for m in f:
        if isinstance(m, nn.MaxPool2d):  # Caffe's pooling (as VGG16 here): no pixel dropped
            m.ceil_mode = True
    fc6 = convolutionalize(net.classifier[1], (f[10].out_channels, 6, 6))
    fc6.padding = (3, 3)
    fc7 = convolutionalize(net.classifier[4], (4096, 1, 1))
    stages = OrderedDict(
        pool1=f[0:3],
        pool2=f[3:6],
        pool5=f[6:13],
        fc6=_fc_stage(fc6, 0.5, dropout_first=True),
        fc7=_fc_stage(fc7, 0.5, dropout_first=True),
    )
    channels = {"pool1": 64, "pool2": 192, "pool5": 256, "fc6": 4096, "fc7": 4096}
    return Backbone(
        "alexnet",
        stages,
        out="fc7",
        skips=("pool2", "pool1"),
        channels=channels,
        preprocess=_preprocess(weights, "alexnet"),
    )


def googlenet(*, mode: str = "exact", weights: BackboneWeights | None = None) -> Backbone:
    """GoogLeNet (Inception v1) without its average pooling and classifier (the paper's choice):
    stem (stride 8), inception3 (8), inception4 (16), inception5 (32)."""
    net = models.googlenet(weights=None, aux_logits=False, init_weights=True)
    _load(net, weights, optional=("fc.",), ignore=("aux1.", "aux2."), backbone="googlenet")
    stages = OrderedDict(
        stem=nn.Sequential(net.conv1, net.maxpool1, net.conv2, net.conv3, net.maxpool2),
        inception3=nn.Sequential(net.inception3a, net.inception3b),
        inception4=nn.Sequential(
            net.maxpool3,
            net.inception4a,
            net.inception4b,
            net.inception4c,
            net.inception4d,
            net.inception4e,
        ),
        inception5=nn.Sequential(net.maxpool4, net.inception5a, net.inception5b),
    )
    channels = {"stem": 192, "inception3": 480, "inception4": 832, "inception5": 1024}
    return Backbone(
        "googlenet",
        stages,
        out="inception5",
        skips=("inception4", "inception3"),
        channels=channels,
        preprocess=_preprocess(weights, "googlenet"),
    )


def _resnet(
    name: str, factory: Callable[..., models.ResNet], weights: BackboneWeights | None
) -> Backbone:
    net = factory(weights=None)
    _load(net, weights, optional=("fc.",), backbone=name)
    stages = OrderedDict(
        stem=nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
        layer1=net.layer1,
        layer2=net.layer2,
        layer3=net.layer3,
        layer4=net.layer4,
    )
    expansion = 4 if isinstance(net.layer1[0], models.resnet.Bottleneck) else 1
    channels = {"stem": 64} | {f"layer{i}": 64 * 2 ** (i - 1) * expansion for i in range(1, 5)}
    return Backbone(
        name,
        stages,
        out="layer4",
        skips=("layer3", "layer2"),
        channels=channels,
        preprocess=_preprocess(weights, name),
    )


def resnet18(*, mode: str = "exact", weights: BackboneWeights | None = None) -> Backbone:
    """ResNet-18: stem (stride 4), layer1 (4), layer2 (8), layer3 (16), layer4 (32)."""
    return _resnet("resnet18", models.resnet18, weights)


def resnet50(*, mode: str = "exact", weights: BackboneWeights | None = None) -> Backbone:
    """ResNet-50: stem (stride 4), layer1 (4), layer2 (8), layer3 (16), layer4 (32)."""
    return _resnet("resnet50", models.resnet50, weights)


def mobilenet_v3_large(*, mode: str = "exact", weights: BackboneWeights | None = None) -> Backbone:
    """MobileNetV3-Large features cut at each stride: stride4, stride8, stride16, stride32."""
    net = models.mobilenet_v3_large(weights=None)
    _load(net, weights, optional=("classifier.",), backbone="mobilenet_v3_large")
    f = net.features
    stages = OrderedDict(stride4=f[0:4], stride8=f[4:7], stride16=f[7:13], stride32=f[13:])
    channels = {"stride4": 24, "stride8": 40, "stride16": 112, "stride32": 960}
    return Backbone(
        "mobilenet_v3_large",
        stages,
        out="stride32",
        skips=("stride16", "stride8"),
        channels=channels,
        preprocess=_preprocess(weights, "mobilenet_v3_large"),
    )


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "vgg16": vgg16,
    "alexnet": alexnet,
    "googlenet": googlenet,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "mobilenet_v3_large": mobilenet_v3_large,
}

#: Backbones that have the reference's Caffe layout (``mode="caffe"``).
CAFFE_BACKBONES = ("vgg16",)


def build_backbone(
    name: str, *, mode: str = "exact", weights: BackboneWeights | None = None, **kwargs: Any
) -> Backbone:
    """Backbone ``name`` (one of :data:`BACKBONES`) in ``mode`` with optional weights."""
    if name not in BACKBONES:
        raise ValueError(unknown_choice("backbone", name, sorted(BACKBONES)))
    if mode not in ("exact", "caffe"):
        raise ValueError(unknown_choice("mode", mode, ("exact", "caffe")))
    if mode == "caffe" and name not in CAFFE_BACKBONES:
        raise ValueError(
            f"mode='caffe' is VGG16-only (the reference's Caffe layout); backbone {name!r} "
            "has none: use mode='exact', or backbone 'vgg16'"
        )
    return BACKBONES[name](mode=mode, weights=weights, **kwargs)
