"""torchvision's FCN-ResNet as an fcnseg model: a torchvision state dict gives torchvision's
outputs (both heads, odd sizes), and the model goes through the registry, checkpoints, ONNX
export, the Predictor and the Trainer like any other."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.segmentation import (
    FCN_ResNet50_Weights,
    FCN_ResNet101_Weights,
    fcn_resnet50,
    fcn_resnet101,
)

from fcnseg.checkpoint import load_checkpoint, save_checkpoint
from fcnseg.models import build_model, load_torchvision_state_dict, model_spec
from fcnseg.weights import IMAGENET_TORCHVISION, WeightsUnavailableError

#: Max |fcnseg − torchvision| / max |torchvision| on the logits (measured: 0, the same ops).
RTOL = 1e-5


def _randomise_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """BatchNorm statistics and affine parameters away from (0, 1): loading that forgot them
    (or an eval-mode BN behaving as train-mode) would show in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def _torchvision(depth: int = 50, num_classes: int = 5, aux: bool = True) -> nn.Module:
    torch.manual_seed(0)
    factory = fcn_resnet50 if depth == 50 else fcn_resnet101
    net = factory(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux)
    return _randomise_bn(net).eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def pair() -> tuple[nn.Module, nn.Module]:
    """torchvision's fcn_resnet50 (5 classes, aux) and fcnseg's model loaded from it."""
    tv = _torchvision()
    ours = build_model({"name": "fcn_resnet", "num_classes": 5, "depth": 50, "aux": True})
    return tv, load_torchvision_state_dict(ours, tv.state_dict()).eval()


@pytest.mark.parametrize("shape", [(2, 3, 97, 131), (2, 3, 250, 333)])
def test_torchvision_weights_give_torchvision_outputs(pair: Any, shape: tuple[int, ...]) -> None:
    """Both heads equal torchvision's at odd sizes."""
    tv, ours = pair
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = tv(x)
        got = ours.forward_scores(x)
    assert set(got) == {"out", "aux"}
    for key in ("out", "aux"):
        assert got[key].shape == (shape[0], 5, *shape[-2:])
        assert _rel(got[key], want[key]) <= RTOL, key


def test_forward_is_the_main_head_at_output_stride_8(pair: Any) -> None:
    tv, ours = pair
    x = torch.randn(2, 3, 33, 41, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert _rel(ours(x), tv(x)["out"]) <= RTOL
        assert ours.backbone(x)["out"].shape[-2:] == (5, 6)  # ceil(33 / 8), ceil(41 / 8)


def test_a_changed_weight_changes_the_output(pair: Any) -> None:
    """Negative control: the comparison above can fail (one BN statistic in layer4 moved)."""
    tv, ours = pair
    x = torch.randn(1, 3, 33, 41, generator=torch.Generator().manual_seed(3))
    state = {k: v.clone() for k, v in ours.state_dict().items()}
    state["backbone.layer4.2.bn3.running_mean"] += 1.0
    other = build_model(model_spec("fcn_resnet", num_classes=5, aux=True)).eval()
    load_torchvision_state_dict(other, state)
    with torch.no_grad():
        assert _rel(other(x), tv(x)["out"]) > 1e-3
        assert _rel(ours(x), tv(x)["out"]) <= RTOL


def test_resnet101_gives_torchvision_outputs() -> None:
    tv = _torchvision(depth=101, num_classes=3)
    ours = load_torchvision_state_dict(
        build_model("fcn_resnet", num_classes=3, depth=101, aux=True), tv.state_dict()
    ).eval()
    x = torch.randn(2, 3, 45, 61, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want, got = tv(x), ours.forward_scores(x)
    assert _rel(got["out"], want["out"]) <= RTOL and _rel(got["aux"], want["aux"]) <= RTOL


def test_load_torchvision_state_dict_names_what_does_not_fit(pair: Any) -> None:
    tv, _ = pair
    state = tv.state_dict()
    # COCO weights carry an aux head: dropped for a model without one, same main output
    plain = load_torchvision_state_dict(build_model("fcn_resnet", num_classes=5), state).eval()
    x = torch.randn(1, 3, 40, 24)
    with torch.no_grad():
        assert _rel(plain(x), tv(x)["out"]) <= RTOL
        assert set(plain.forward_scores(x)) == {"out"}
    without_aux = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
    with pytest.raises(ValueError, match=r"aux=True\): missing keys \['aux_classifier\.0\.weight'"):
        load_torchvision_state_dict(build_model("fcn_resnet", num_classes=5, aux=True), without_aux)
    with pytest.raises(ValueError, match=r"3 classes.*classifier\.4\.weight has shape \(5, 512"):
        load_torchvision_state_dict(build_model("fcn_resnet", num_classes=3), state)
    with pytest.raises(ValueError, match=r"depth 101.*missing keys .* and \d+ more"):
        load_torchvision_state_dict(build_model("fcn_resnet", num_classes=5, depth=101), state)
    with pytest.raises(ValueError, match=r"unexpected keys \['extra'\]"):
        load_torchvision_state_dict(plain, {**state, "extra": torch.zeros(1)})


def test_spec_and_mistakes() -> None:
    assert model_spec("fcn_resnet", num_classes=4, backbone_weights="imagenet") == {
        "name": "fcn_resnet", "num_classes": 4, "depth": 50, "aux": False,
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"depth must be one of \[50, 101\], got 34"):
        build_model("fcn_resnet", num_classes=4, depth=34)
    model = build_model("fcn_resnet", num_classes=4)
    assert model.aux_classifier is None
    assert model.preprocess.mean == IMAGENET_TORCHVISION.mean
    assert model.preprocess.std == IMAGENET_TORCHVISION.std


@pytest.mark.parametrize("depth", [50, 101])
def test_parameter_count_is_torchvisions_release(depth: int) -> None:
    """21 classes with the aux head: the parameter count torchvision lists for its COCO
    weights; ``fcnseg summary fcn_resnet`` builds it (without aux)."""
    release = {50: FCN_ResNet50_Weights, 101: FCN_ResNet101_Weights}[depth].DEFAULT
    with torch.device("meta"):
        model = build_model("fcn_resnet", num_classes=21, depth=depth, aux=True)
    assert sum(p.numel() for p in model.parameters()) == release.meta["num_params"]
    if depth == 50:
        from fcnseg.cli import main

        assert main(["summary", "fcn_resnet", "--input", "40x56"]) == 0


def test_imagenet_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(address: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError(101, "Network is unreachable")

    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    monkeypatch.setattr(socket, "create_connection", unreachable)
    try:
        start = time.monotonic()
        for depth in (50, 101):
            with pytest.raises(WeightsUnavailableError, match=f"backbone_weights.*resnet{depth}"):
                build_model("fcn_resnet", num_classes=3, depth=depth, backbone_weights="imagenet")
        assert time.monotonic() - start < 10.0
    finally:
        torch.hub.set_dir(old)


def test_backbone_weights_file_loads_into_the_dilated_resnet(tmp_path: Path) -> None:
    torch.manual_seed(5)
    state = resnet50().state_dict()  # with fc.*, as torchvision's release
    torch.save(state, tmp_path / "r50.pth")
    model = build_model("fcn_resnet", num_classes=3, backbone_weights=tmp_path / "r50.pth")
    own = model.backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith("fc."))
    layer4 = model.backbone.layer4  # the weights fit the dilated convolutions
    assert layer4[0].conv2.stride == (1, 1) and layer4[1].conv2.dilation == (4, 4)


def _save(model: nn.Module, path: Path, **spec: Any) -> Path:
    return save_checkpoint(path, model, model_spec=model_spec("fcn_resnet", **spec),
                           classes=["bg", "a", "b"], palette=[[0, 0, 0], [9, 9, 9], [8, 8, 8]],
                           ignore_index=255)  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """An fcn_resnet (3 classes, aux) with torchvision's random weights, and its checkpoint."""
    model = load_torchvision_state_dict(
        build_model("fcn_resnet", num_classes=3, aux=True), _torchvision(num_classes=3).state_dict()
    ).eval()
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    return model, _save(model, path, num_classes=3, aux=True)


def test_checkpoint_and_predictor_round_trip(saved: Any) -> None:
    """A checkpoint rebuilds the model (aux head included) with the same outputs; the
    Predictor runs it."""
    from fcnseg.inference.predictor import Predictor

    model, path = saved
    loaded = load_checkpoint(path)
    assert loaded.model == {"name": "fcn_resnet", "num_classes": 3, "depth": 50, "aux": True}
    rebuilt = loaded.build_model().eval()
    x = torch.randn(2, 3, 37, 29)
    with torch.no_grad():
        want = model.forward_scores(x)
        got = rebuilt.forward_scores(x)
    assert all(torch.equal(got[k], want[k]) for k in ("out", "aux"))

    image = torch.rand(3, 30, 44)
    probs = Predictor.from_loaded(loaded, "cpu").probabilities(image)
    with torch.no_grad():
        expected = model(model.preprocess(image[None])).softmax(1)[0]
    torch.testing.assert_close(probs, expected, rtol=1e-4, atol=1e-5)  # channels_last rounding


@pytest.mark.slow  # the export takes ~20-30 s on 2 CPU threads
def test_onnx_export_matches_pytorch(saved: Any, tmp_path: Path) -> None:
    """The ONNX file matches PyTorch at sizes and a batch other than the export's sample."""
    onnxruntime = pytest.importorskip("onnxruntime")
    from fcnseg.export import export_model

    model, path = saved
    onnx_path = export_model(path, tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 45, 61), (2, 3, 23, 17)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x).numpy()
        out = session.run(None, {"images": x.numpy()})[0]
        assert out.shape == expected.shape
        assert np.abs(out - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


def test_trains_through_the_trainer(tmp_path: Path) -> None:
    from fcnseg.config import load_config
    from fcnseg.engine.trainer import Trainer

    overrides = [
        "model={name: fcn_resnet, depth: 50, backbone_weights: null}",
        "data.options={num_images: 4, size: [32, 32]}",
        "data.batch_size=2",
        "data.val_batch_size=2",
        "train.iterations=1",
        "train.eval_every=1",
        "train.checkpoint_every=1",
    ]
    cfg = load_config("fcn8s_resnet18_synthetic", overrides)
    result = Trainer(cfg, tmp_path / "run", progress=False).train()
    assert result.iteration == 1
    loaded = load_checkpoint(tmp_path / "run")
    assert loaded.model["name"] == "fcn_resnet" and loaded.model["aux"] is False
    assert os.path.getsize(loaded.path) > 0
