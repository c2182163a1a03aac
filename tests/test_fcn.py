"""FCN-32s/16s/8s: output size for any input, gradients, golden outputs, tracing, parameter
counts and the at-once skip scaling."""

from __future__ import annotations

import copy
import functools
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.models import FCN, Backbone, build_backbone, fcn8s, fcn16s, fcn32s
from fcnseg.models.backbones import BACKBONES

BUILDERS: dict[str, Callable[..., FCN]] = {"fcn32s": fcn32s, "fcn16s": fcn16s, "fcn8s": fcn8s}
SKIPS = {"fcn32s": 0, "fcn16s": 1, "fcn8s": 2}
OTHER_BACKBONES = [b for b in BACKBONES if b != "vgg16"]
GOLDEN_DIR = Path(__file__).parent / "golden"


def _randomise_scores(model: FCN) -> FCN:
    """Replace the reference's zero-initialised score layers by random ones (non-trivial output,
    gradients reach the backbone)."""
    with torch.no_grad():
        for layer in (model.score_fr, *model.scorers.values()):
            nn.init.normal_(layer.weight, std=layer.in_channels**-0.5)
            nn.init.normal_(layer.bias, std=0.1)
    return model


@functools.cache
def _vgg_backbone(mode: str) -> Backbone:
    """VGG16 with 1/32 of the channels (the paper's geometry at a fraction of the cost), built
    once per mode from seed 0; callers get copies."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_backbone("vgg16", mode=mode, width=1 / 32)


def _scaled_vgg(skips: int, mode: str, num_classes: int = 3, **kwargs: Any) -> FCN:
    """FCN on a fresh copy of the channel-scaled VGG16 with random score layers."""
    backbone = copy.deepcopy(_vgg_backbone(mode))
    return _randomise_scores(FCN(backbone, num_classes, skips=skips, mode=mode, **kwargs))


@functools.cache
def _cached_scaled_vgg(skips: int, mode: str) -> FCN:
    """Eval-mode FCN-32s/16s/8s heads, all on the same (shared, read-only) scaled backbone."""
    head = FCN(_vgg_backbone(mode), 3, skips=skips, mode=mode)
    return _randomise_scores(head).eval()


@functools.cache
def _cached_model(builder: str, backbone: str) -> FCN:
    return _randomise_scores(BUILDERS[builder](backbone=backbone, num_classes=4)).eval()


@pytest.fixture(scope="module", autouse=True)
def _free_cached_models() -> Iterator[None]:
    """Drop the cached models (AlexNet and ResNet-50 heads weigh ~1 GB) after this module."""
    yield
    for cached in (_vgg_backbone, _cached_scaled_vgg, _cached_model):
        cached.cache_clear()


@pytest.fixture(scope="module")
def vgg_fcn8s() -> FCN:
    """The paper's FCN-8s: full-width VGG16, 21 classes (built once per module)."""
    return _randomise_scores(fcn8s(backbone="vgg16", num_classes=21)).eval()


def _forward(model: FCN, height: int, width: int, batch: int = 1) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(batch, 3, height, width))


# --------------------------------------------------------------------------------------------
# Output size == input size.
# --------------------------------------------------------------------------------------------

SIZES = [(1, 1), (1, 17), (17, 1), (2, 3), (31, 33), (97, 101), (500, 500), (1000, 1000)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("mode", ["exact", "caffe"])
@pytest.mark.parametrize("builder", list(BUILDERS))
def test_output_matches_input_size_vgg16(builder: str, mode: str, size: tuple[int, int]) -> None:
    """Every builder in both modes returns N×C×H×W logits for H×W from 1×1 to 1000×1000
    (channel-scaled VGG16: same layers, strides, paddings, crops as the full one)."""
    model = _cached_scaled_vgg(SKIPS[builder], mode)
    batch = 2 if size[0] * size[1] < 10_000 else 1
    out = _forward(model, *size, batch=batch)
    assert out.shape == (batch, 3, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(1, 1), (31, 33)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_output_matches_input_size_full_vgg16(vgg_fcn8s: FCN, size: tuple[int, int]) -> None:
    """The full-width FCN-8s (VGG16, 21 classes) keeps the input size too."""
    out = _forward(vgg_fcn8s, *size)
    assert out.shape == (1, 21, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backbone", OTHER_BACKBONES)
@pytest.mark.parametrize("builder", list(BUILDERS))
def test_output_matches_input_size_other_backbones(builder: str, backbone: str) -> None:
    """Every other backbone × builder keeps odd input sizes, including 1×1 and sizes below
    AlexNet's (63) and GoogLeNet's (15) minimum input."""
    model = _cached_model(builder, backbone)
    for size in [(1, 1), (1, 17), (2, 3), (31, 33), (67, 45), (97, 101)]:
        out = _forward(model, *size)
        assert out.shape == (1, 4, *size), size
        assert torch.isfinite(out).all(), size


# --------------------------------------------------------------------------------------------
# Forward / backward.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("learnable", [True, False], ids=["learnable", "fixed"])
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_forward_backward(backbone: str, learnable: bool) -> None:
    """FCN-8s trains end to end: a cross-entropy loss on a batch of 2 at 67×45 gives finite
    gradients that reach the first backbone conv, score_fr and the skip scorers; the two 2×
    upsamplers learn only with learnable_upsampling=True; the final upscore never does."""
    torch.manual_seed(0)
    model = _randomise_scores(
        fcn8s(backbone=backbone, num_classes=5, learnable_upsampling=learnable)
    ).train()
    images = torch.randn(2, 3, 67, 45)
    target = torch.randint(0, 5, (2, 67, 45))
    logits = model(images)
    assert logits.shape == (2, 5, 67, 45)
    loss = F.cross_entropy(logits, target)
    assert torch.isfinite(loss)
    loss.backward()

    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        else:
            assert p.grad is None, name

    first_conv = next(m for m in model.backbone.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad.abs().sum() > 0
    assert model.score_fr.weight.grad.abs().sum() > 0
    assert set(model.scorers) == {"score_pool4", "score_pool3"}
    for scorer in model.scorers.values():
        assert scorer.weight.grad.abs().sum() > 0
    assert set(model.upsamplers) == {"upscore2", "upscore_pool4"}
    for up in model.upsamplers.values():
        assert up.weight.requires_grad is learnable
        if learnable:
            assert up.weight.grad.abs().sum() > 0
        else:
            assert up.weight.grad is None
    assert model.upscore.weight.requires_grad is False
    assert model.upscore.weight.grad is None


# --------------------------------------------------------------------------------------------
# Golden outputs.
# --------------------------------------------------------------------------------------------


def _check_golden(name: str, actual: torch.Tensor) -> None:
    """Compare ``actual`` with ``tests/golden/<name>.pt`` (``FCNSEG_UPDATE_GOLDEN=1``: rewrite)."""
    path = GOLDEN_DIR / f"{name}.pt"
    if os.environ.get("FCNSEG_UPDATE_GOLDEN") == "1":
        GOLDEN_DIR.mkdir(exist_ok=True)
        torch.save({"logits": actual.detach().clone(), "torch": str(torch.__version__)}, path)
        return
    if not path.exists():
        pytest.fail(
            f"golden file {path} is missing: run `FCNSEG_UPDATE_GOLDEN=1 pytest "
            f"tests/test_fcn.py -k golden` to create it (and check the change is intended)"
        )
    stored = torch.load(path, weights_only=True)
    expected = stored["logits"]
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    torch.testing.assert_close(
        actual,
        expected,
        rtol=1e-4,
        atol=1e-5,
        msg=lambda m: f"{name} differs from {path} (written with torch {stored['torch']}): {m}",
    )


GOLDEN_CASES: dict[str, Callable[[], FCN]] = {
    "fcn32s_resnet18": lambda: fcn32s(backbone="resnet18", num_classes=5),
    "fcn16s_resnet18": lambda: fcn16s(backbone="resnet18", num_classes=5),
    "fcn8s_resnet18": lambda: fcn8s(backbone="resnet18", num_classes=5),
    # The scaled VGG16 backbone is built from seed 0 too (see _vgg_backbone).
    "fcn8s_vgg16w32_exact": lambda: FCN(
        copy.deepcopy(_vgg_backbone("exact")), 5, skips=2, mode="exact"
    ),
    "fcn8s_vgg16w32_caffe": lambda: FCN(
        copy.deepcopy(_vgg_backbone("caffe")), 5, skips=2, mode="caffe"
    ),
}


@pytest.mark.parametrize("name", list(GOLDEN_CASES))
def test_golden_output(name: str) -> None:
    """Seeded model and input at 45×37: the full logits match the stored golden values, so any
    change to layers, crops, upsampling or fusion order shows up as a numeric diff."""
    torch.manual_seed(0)
    model = _randomise_scores(GOLDEN_CASES[name]()).eval()
    images = torch.randn(2, 3, 45, 37, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (2, 5, 45, 37)
    _check_golden(name, logits)


# --------------------------------------------------------------------------------------------
# TorchScript.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: fcn8s(backbone="resnet18", num_classes=4), id="resnet18"),
        # AlexNet needs 63 pixels: the input padding below that must be traced as data flow.
        pytest.param(lambda: fcn8s(backbone="alexnet", num_classes=4), id="alexnet"),
        pytest.param(lambda: _scaled_vgg(2, "caffe", 4), id="vgg16w32-caffe"),
    ],
)
def test_torchscript_trace_generalises(make: Callable[[], FCN]) -> None:
    """torch.jit.trace at one size records the crops and paddings as data flow (no TracerWarning
    about Python values), so the traced model matches eager at other odd sizes."""
    torch.manual_seed(0)
    model = _randomise_scores(make()).eval()
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(model, torch.randn(1, 3, 67, 45))
    tracer_warnings = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert not tracer_warnings, [str(w.message) for w in tracer_warnings]
    for size in [(45, 37), (33, 51), (80, 71), (1, 1)]:
        images = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected, actual = model(images), traced(images)
        assert actual.shape == expected.shape == (1, 4, *size)
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Parameter counts.
# --------------------------------------------------------------------------------------------


def _count(model: nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _conv(c_in: int, c_out: int, k: int, *, bias: bool = True) -> int:
    """Parameters of a k×k convolution c_in → c_out: c_out·c_in·k² weights (+ c_out biases)."""
    return c_out * c_in * k * k + (c_out if bias else 0)


# FCN-8s/VGG16, 21 classes, derived layer by layer from the architecture.
C = 21
VGG16_CONVS = [  # (c_in, c_out) of the thirteen 3×3 convolutions, stage by stage
    (3, 64), (64, 64),                    # conv1_1, conv1_2        1,792 + 36,928
    (64, 128), (128, 128),                # conv2_1, conv2_2       73,856 + 147,584
    (128, 256), (256, 256), (256, 256),   # conv3_1..3            295,168 + 2 × 590,080
    (256, 512), (512, 512), (512, 512),   # conv4_1..3          1,180,160 + 2 × 2,359,808
    (512, 512), (512, 512), (512, 512),   # conv5_1..3          3 × 2,359,808
]  # fmt: skip
VGG16_CONV_PARAMS = sum(_conv(i, o, 3) for i, o in VGG16_CONVS)  # 14,714,688
FC6 = _conv(512, 4096, 7)  # fc6 as a 7×7 convolution: 102,760,448 + 4,096 = 102,764,544
FC7 = _conv(4096, 4096, 1)  # fc7 as a 1×1 convolution: 16,777,216 + 4,096 = 16,781,312
SCORE_FR = _conv(4096, C, 1)  # 86,016 + 21 = 86,037
SCORE_POOL4 = _conv(512, C, 1)  # 10,752 + 21 = 10,773
SCORE_POOL3 = _conv(256, C, 1)  # 5,376 + 21 = 5,397
# Upsamplers are per-class (grouped) bilinear transposed convolutions without bias: C·k²
# weights, not the reference's C²·k² (mostly zero). upscore2 and upscore_pool4 (×2, k = 4) are
# learnable; the final ×8 upscore (k = 16) is a frozen parameter (requires_grad=False).
UPSCORE2 = UPSCORE_POOL4 = C * 4 * 4  # 336 each
UPSCORE8 = C * 16 * 16  # 5,376, frozen
TRAINABLE = (
    VGG16_CONV_PARAMS + FC6 + FC7 + SCORE_FR + SCORE_POOL4 + SCORE_POOL3 + UPSCORE2 + UPSCORE_POOL4
)  # 134,363,423
TOTAL = TRAINABLE + UPSCORE8  # 134,368,799


def test_parameter_count_fcn8s_vgg16(vgg_fcn8s: FCN) -> None:
    """FCN-8s on VGG16 with 21 classes has 134,368,799 parameters (≈134M, the paper's size),
    each layer's share derived from the architecture above."""
    assert VGG16_CONV_PARAMS == 14_714_688 and FC6 == 102_764_544 and FC7 == 16_781_312
    assert (TRAINABLE, TOTAL) == (134_363_423, 134_368_799)
    total, trainable = _count(vgg_fcn8s)
    print(f"\nfcn8s/vgg16, 21 classes: {total:,} parameters ({trainable:,} trainable)")
    assert (total, trainable) == (TOTAL, TRAINABLE)
    # ...and layer by layer: each named tensor group holds exactly its derived share.
    groups: dict[str, int] = {}
    for name, p in vgg_fcn8s.named_parameters():
        stage = name.split(".")[2] if name.startswith("backbone.") else name.rsplit(".", 1)[0]
        key = "conv" if stage.startswith("pool") else stage
        groups[key] = groups.get(key, 0) + p.numel()
    assert groups == {
        "conv": VGG16_CONV_PARAMS,
        "fc6": FC6,
        "fc7": FC7,
        "score_fr": SCORE_FR,
        "scorers.score_pool4": SCORE_POOL4,
        "scorers.score_pool3": SCORE_POOL3,
        "upsamplers.upscore2": UPSCORE2,
        "upsamplers.upscore_pool4": UPSCORE_POOL4,
        "upscore": UPSCORE8,
    }
    frozen = [n for n, p in vgg_fcn8s.named_parameters() if not p.requires_grad]
    assert frozen == ["upscore.weight"]
    assert not [n for n, _ in vgg_fcn8s.named_buffers() if "upscore" in n]
    # The meta-device construction used for the table below counts the same.
    with torch.device("meta"):
        meta = fcn8s(backbone="vgg16", num_classes=21)
    assert _count(meta) == (total, trainable)


def test_parameter_count_table() -> None:
    """Parameter counts of every builder × backbone at 21 classes (built on the meta device;
    the frozen bilinear upsamplers count as parameters but not as trainable ones)."""
    lines = [f"{'backbone':<20}{'builder':<8}{'total':>14}{'trainable':>14}"]
    counts = {}
    for backbone in BACKBONES:
        for name, builder in BUILDERS.items():
            with torch.device("meta"):
                model = builder(backbone=backbone, num_classes=21)
            counts[backbone, name] = _count(model)
            total, trainable = counts[backbone, name]
            lines.append(f"{backbone:<20}{name:<8}{total:>14,}{trainable:>14,}")
    print("\n" + "\n".join(lines))
    for backbone in BACKBONES:
        t32, t16, t8 = (counts[backbone, n][1] for n in BUILDERS)
        # Each skip adds a 1×1 scorer and a learnable 2× upsampler: trainable counts grow.
        assert t32 < t16 < t8
    assert counts["vgg16", "fcn8s"] == (TOTAL, TRAINABLE)  # derived above


# --------------------------------------------------------------------------------------------
# At-once FCN-8s.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("at_once", [True, False], ids=["at_once", "staged"])
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda at_once: fcn8s(backbone="resnet18", num_classes=3, at_once=at_once),
            id="resnet18",
        ),
        pytest.param(lambda at_once: _scaled_vgg(2, "exact", at_once=at_once), id="vgg16w32"),
    ],
)
def test_at_once_scales_skip_inputs(make: Callable[[bool], FCN], at_once: bool) -> None:
    """at_once=True feeds score_pool4 with pool4 × 0.01 and score_pool3 with pool3 × 0.0001
    (the reference's all-at-once FCN-8s); at_once=False feeds them the stage outputs as is."""
    model = make(at_once).eval()
    stage4, stage3 = model.backbone.skips
    features: dict[str, torch.Tensor] = {}
    inputs: dict[str, torch.Tensor] = {}
    model.backbone.register_forward_hook(lambda _m, _a, out: features.update(out))
    for key, scorer in model.scorers.items():
        scorer.register_forward_pre_hook(lambda _m, args, key=key: inputs.__setitem__(key, args[0]))
    with torch.no_grad():
        model(torch.randn(1, 3, 45, 37))
    scale4, scale3 = (0.01, 0.0001) if at_once else (1.0, 1.0)
    assert torch.equal(inputs["score_pool4"], features[stage4] * scale4)
    assert torch.equal(inputs["score_pool3"], features[stage3] * scale3)
    assert features[stage4].abs().sum() > 0 and features[stage3].abs().sum() > 0
