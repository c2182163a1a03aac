"""FCN-32s, FCN-16s and FCN-8s: score, upsample in-network, fuse skips, crop by geometry."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.models.backbones import Backbone, build_backbone
from fcnseg.models.base import SegmentationModel
from fcnseg.models.geometry import Grid, alignment, deconv, min_input_size
from fcnseg.models.registry import register_model
from fcnseg.models.upsample import bilinear_deconv
from fcnseg.weights import Preprocess, load_backbone_weights, read_state_dict

__all__ = ["FCN", "Fusion", "crop", "fcn8s", "fcn16s", "fcn32s"]

log = logging.getLogger("fcnseg")

#: The reference's fixed scaling of the skip inputs in "at-once" FCN-8s training.
AT_ONCE_SCALES = {"pool4": 0.01, "pool3": 0.0001}


def _nonneg(value: int | torch.Tensor) -> int | torch.Tensor:
    """``max(0, value)`` that stays a traced value when ``value`` is a size seen by the tracer."""
    return value.clamp_min(0) if isinstance(value, torch.Tensor) else max(0, value)


def crop(x: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """``x[..., top:top+height, left:left+width]``, replicate-padding any part outside ``x``.

    Within a built FCN ``top``/``left`` are never negative and the upsamplers reach as far as
    their kernels do, so the only padding left is AlexNet's: its conv1 (11×11, stride 4, floor
    rounding) drops up to 3 trailing pixels, whose strip is replicated. Under ``torch.jit.trace``
    the pad is always applied with its sizes recorded as data flow (no Python branch on sizes),
    so a traced model generalises to other input sizes.
    """
    h, w = x.shape[-2], x.shape[-1]
    pad_t, pad_l = max(0, -top), max(0, -left)
    pad_b, pad_r = _nonneg(top + height - h), _nonneg(left + width - w)
    if torch.jit.is_tracing() or pad_t or pad_l or pad_b or pad_r:
        x = F.pad(x, (pad_l, pad_r, pad_t, pad_b), mode="replicate")
        top, left = top + pad_t, left + pad_l
    return x[..., top : top + height, left : left + width]


@dataclass(frozen=True)
class Fusion:
    """How one skip is fused: which stage, its input scale, and the derived crop.

    ``offset`` is the index in the upsampled coarse score aligned with index 0 of the skip score.
    When ``offset >= 0`` the coarse score is cropped to the skip's extent; otherwise the skip is
    cropped (by ``-offset``) to the coarse score's extent, as the reference did.
    """

    stage: str
    scale: float
    offset: int


def _upsampler(
    channels: int, src: Grid, dst: Grid, *, caffe: bool, learnable: bool
) -> tuple[nn.ConvTranspose2d, Grid, int]:
    """Bilinear upsampling from ``src`` to the stride of ``dst`` and the crop aligning them.

    The kernel parity is chosen so the upsampled grid lands on ``dst`` exactly: even kernels suit
    half-pixel grids (VGG's 2×2 pools), odd ones grids of odd-kernel strided convolutions.
    """
    factor_frac = src.stride / dst.stride
    if factor_frac.denominator != 1:
        raise ValueError(f"stride {src.stride} is not a multiple of {dst.stride}")
    factor = int(factor_frac)
    parities = [True] if caffe else [factor % 2 == 0, factor % 2 != 0]
    for half_pixel in parities:
        layer = bilinear_deconv(
            channels,
            factor,
            learnable=learnable,
            half_pixel=half_pixel,
            padding=0 if caffe else None,
        )
        k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
        offset = alignment(deconv(src, k, s, p), dst)
        if offset.denominator != 1:
            continue
        if offset < 0 and not caffe:
            # Less padding makes the output start earlier, so ``dst`` index 0 is covered.
            p = max(0, p + int(offset))
            layer.padding = (p, p)
        if not caffe:
            # Padding trims both ends; give the bottom/right end back (``output_padding``) so the
            # output reaches as far past the last coarse cell as the kernel does.
            layer.output_padding = (min(p, s - 1),) * 2
        grid = deconv(src, k, s, p)
        return layer, grid, int(alignment(grid, dst))
    raise ValueError(f"cannot align an upsampling of {src} onto {dst} with a bilinear kernel")


class FCN(SegmentationModel):
    """Fully convolutional network: backbone → 1×1 score → skips fused by sum → upsample → crop.

    ``forward(images)`` takes normalised images N×3×H×W (see :attr:`preprocess`) and returns
    logits N×C×H×W for any H, W ≥ 1. Every crop offset is derived from the layer geometry.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        skips: int = 0,
        at_once: bool = False,
        mode: str = "exact",
        learnable_upsampling: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if skips not in (0, 1, 2):
            raise ValueError(f"skips must be 0 (32s), 1 (16s) or 2 (8s), got {skips}")
        self.backbone = backbone
        self.preprocess = backbone.preprocess
        self.num_classes = num_classes
        self.mode = mode
        self.at_once = at_once
        self.min_size = 1 if mode == "caffe" else min_input_size(backbone)
        caffe = mode == "caffe"
        grids = backbone.grids()
        grid = grids[backbone.out]
        # The reference initialises every score layer to zero (Caffe's default filler).
        self.score_fr = self._score(backbone.channels[backbone.out])
        self.fusions: list[Fusion] = []
        self.upsamplers = nn.ModuleDict()
        self.scorers = nn.ModuleDict()
        for name, stage in zip(("pool4", "pool3")[:skips], backbone.skips[:skips], strict=True):
            up, up_grid, offset = _upsampler(
                num_classes, grid, grids[stage], caffe=caffe, learnable=learnable_upsampling
            )
            up_name = "upscore2" if name == "pool4" else "upscore_pool4"
            self.upsamplers[up_name] = up
            self.scorers[f"score_{name}"] = self._score(backbone.channels[stage])
            scale = AT_ONCE_SCALES[name] if at_once else 1.0
            self.fusions.append(Fusion(stage, scale, offset))
            grid = grids[stage] if offset >= 0 else up_grid
        self.upscore, out_grid, offset = _upsampler(
            num_classes, grid, Grid(), caffe=caffe, learnable=False
        )
        self.out_offset = offset
        self.score_grid = grid
        self.output_grid = out_grid

    def _score(self, channels: int) -> nn.Conv2d:
        layer = nn.Conv2d(channels, self.num_classes, kernel_size=1)
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
        return layer

    def set_preprocess(self, preprocess: Preprocess) -> None:
        """Use ``preprocess`` for the model and its backbone (they share one)."""
        self.preprocess = preprocess
        self.backbone.preprocess = preprocess

    @property
    def crops(self) -> dict[str, int]:
        """Derived crop offsets, named like the reference's crop layers."""
        names = ["score_pool4c", "score_pool3c"]
        out = {names[i]: abs(f.offset) for i, f in enumerate(self.fusions)}
        out["score"] = self.out_offset
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_scores(images)["out"]

    def forward_scores(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every score map on the way, named like the reference's blobs: ``score_fr``,
        ``upscore2`` / ``fuse_pool4``, ``upscore_pool4`` / ``fuse_pool3``, and ``out``."""
        height, width = images.shape[-2], images.shape[-1]
        x = images
        if self.min_size > 1:
            # Grow to the smallest size every layer accepts; bottom/right padding moves no grid.
            # (Sizes stay traced values under torch.jit.trace: no Python branch on them.)
            pad_h, pad_w = _nonneg(self.min_size - height), _nonneg(self.min_size - width)
            if torch.jit.is_tracing() or pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h))
        features = self.backbone(x)
        score = self.score_fr(features[self.backbone.out])
        scores = {"score_fr": score}
        for fusion, (up_name, up), scorer in zip(
            self.fusions, self.upsamplers.items(), self.scorers.values(), strict=True
        ):
            coarse = up(score)
            skip = features[fusion.stage]
            if fusion.scale != 1.0:
                skip = skip * fusion.scale
            skip = scorer(skip)
            if fusion.offset >= 0:
                o = fusion.offset
                coarse = crop(coarse, o, o, skip.shape[-2], skip.shape[-1])
            else:
                o = -fusion.offset
                skip = crop(skip, o, o, coarse.shape[-2], coarse.shape[-1])
            score = coarse + skip
            scores[up_name] = coarse
            scores["fuse_pool4" if up_name == "upscore2" else "fuse_pool3"] = score
        out = self.upscore(score)
        scores["out"] = crop(out, self.out_offset, self.out_offset, height, width)
        return scores

    @torch.no_grad()
    def init_from(self, source: nn.Module | str | Path) -> list[str]:
        """Copy every same-named, same-shaped tensor from a coarser FCN (or its state dict file).

        This is the staged recipe: FCN-16s starts from a trained FCN-32s, FCN-8s from FCN-16s;
        the new skip score layers keep their zero init, so the fused net starts out computing
        exactly what its parent did at stride 16/8. Returns the names copied.
        """
        state = source.state_dict() if isinstance(source, nn.Module) else read_state_dict(source)[0]
        own = self.state_dict()
        copied = [k for k, v in state.items() if k in own and own[k].shape == v.shape]
        if not any(k.startswith("backbone.") for k in copied):
            raise ValueError(
                f"init_from: {source if not isinstance(source, nn.Module) else 'module'} shares no "
                "backbone tensors with this model (different backbone?)"
            )
        for k in copied:
            own[k].copy_(state[k])
        skipped = sorted(set(own) - set(copied))
        log.info("init_from: copied %d tensors; kept init for %s", len(copied), skipped)
        return copied


def _build(
    skips: int,
    *,
    backbone: str,
    num_classes: int,
    backbone_weights: str | Path | None,
    at_once: bool,
    mode: str,
    learnable_upsampling: bool,
    init_from: nn.Module | str | Path | None,
) -> FCN:
    weights = (
        None if backbone_weights is None else load_backbone_weights(backbone_weights, backbone)
    )
    net = build_backbone(backbone, mode=mode, weights=weights)
    model = FCN(
        net,
        num_classes,
        skips=skips,
        at_once=at_once,
        mode=mode,
        learnable_upsampling=learnable_upsampling,
    )
    if init_from is not None:
        model.init_from(init_from)
    return model


@register_model("fcn32s")
def fcn32s(
    *,
    backbone: str = "vgg16",
    num_classes: int,
    backbone_weights: str | Path | None = None,
    mode: str = "exact",
    learnable_upsampling: bool = True,
) -> FCN:
    """FCN-32s: the backbone's stride-32 score upsampled 32× in one step.

    Args:
        backbone: one of ``vgg16`` (the paper), ``alexnet``, ``googlenet``, ``resnet18``,
            ``resnet50``, ``mobilenet_v3_large``.
        num_classes: number of output classes.
        backbone_weights: a torchvision-format state dict (``.safetensors``/``.pth``, with or
            without the classifier) or ``"imagenet"``; ``None`` for random initialisation.
        mode: ``"exact"`` (crops from geometry, no input padding) or ``"caffe"`` (the
            reference's pad-100 layout; VGG16 only).
        learnable_upsampling: learn the intermediate 2× upsamplers (the paper); the final
            upsampler is always fixed bilinear.
    """
    return _build(
        0,
        backbone=backbone,
        num_classes=num_classes,
        backbone_weights=backbone_weights,
        at_once=False,
        mode=mode,
        learnable_upsampling=learnable_upsampling,
        init_from=None,
    )


@register_model("fcn16s")
def fcn16s(
    *,
    backbone: str = "vgg16",
    num_classes: int,
    backbone_weights: str | Path | None = None,
    mode: str = "exact",
    learnable_upsampling: bool = True,
    init_from: nn.Module | str | Path | None = None,
) -> FCN:
    """FCN-16s: adds the stride-16 skip (pool4): zero-initialised 1×1 score, 2× upsample, sum.

    ``init_from`` takes a trained FCN-32s (module or state dict file). Other arguments as
    :func:`fcn32s`.
    """
    return _build(
        1,
        backbone=backbone,
        num_classes=num_classes,
        backbone_weights=backbone_weights,
        at_once=False,
        mode=mode,
        learnable_upsampling=learnable_upsampling,
        init_from=init_from,
    )


@register_model("fcn8s")
def fcn8s(
    *,
    backbone: str = "vgg16",
    num_classes: int,
    backbone_weights: str | Path | None = None,
    at_once: bool = False,
    mode: str = "exact",
    learnable_upsampling: bool = True,
    init_from: nn.Module | str | Path | None = None,
) -> FCN:
    """FCN-8s: adds the stride-8 skip (pool3) on top of FCN-16s.

    ``at_once=True`` is the reference's all-at-once variant: the skip inputs are scaled by
    0.01 (pool4) and 0.0001 (pool3) so that training all layers together is stable.
    ``init_from`` takes a trained FCN-16s. Other arguments as :func:`fcn32s`.
    """
    return _build(
        2,
        backbone=backbone,
        num_classes=num_classes,
        backbone_weights=backbone_weights,
        at_once=at_once,
        mode=mode,
        learnable_upsampling=learnable_upsampling,
        init_from=init_from,
    )
