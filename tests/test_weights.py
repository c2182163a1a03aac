"""Backbone weights: files, ``"imagenet"`` offline, loading into every backbone, preprocessing."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.testing import assert_close
from torchvision import models

import fcnseg.weights as weights_mod
from fcnseg.models import build_backbone, fcn8s
from fcnseg.weights import (
    IMAGENET_TORCHVISION,
    Preprocess,
    WeightsFileError,
    WeightsUnavailableError,
    load_backbone_weights,
    read_state_dict,
)

#: The shared VGG16 file's normalisation (Caffe release: RGB, 0–255, mean only).
CAFFE_MEAN = (123.68, 116.779, 103.939)
#: torchvision ``vgg16().features`` indices of conv1_1 … conv5_3.
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG16_POOLS = ("pool1", "pool2", "pool3", "pool4", "pool5")

StateDict = dict[str, torch.Tensor]


# --- helpers ----------------------------------------------------------------------------


@contextmanager
def _fcnseg_logs(level: int = logging.INFO) -> Iterator[list[logging.LogRecord]]:
    """Records of the ``fcnseg`` logger (usable in module-scoped fixtures, unlike caplog)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("fcnseg")
    handler, old_level = Collect(level), logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _warnings(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.levelno == logging.WARNING]


def _model_state(name: str, seed: int) -> StateDict:
    """A torchvision-format state dict of the full classifier ``models.<name>`` with random
    values in [0.5, 1.5): none equals a fresh init's (whose zero biases and unit BatchNorm
    statistics would hide a failed load), and variances stay positive.

    The model is built on the meta device: only its keys and shapes are needed, and skipping
    torchvision's init saves seconds for VGG16.
    """
    kwargs: dict[str, Any] = {"init_weights": False} if name == "googlenet" else {}
    with torch.device("meta"):
        net = getattr(models, name)(weights=None, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    return {
        key: torch.rand(value.shape, generator=gen) + 0.5
        if value.is_floating_point()
        else torch.zeros(value.shape, dtype=value.dtype)
        for key, value in net.state_dict().items()
    }


def _imagenet_pre(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_TORCHVISION.mean).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_TORCHVISION.std).view(1, 3, 1, 1)
    return (x - mean) / std


def _images(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The same 2×3×5×7 picture as uint8 (0–255) and as float in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    u8 = torch.randint(0, 256, (2, 3, 5, 7), generator=gen, dtype=torch.uint8)
    return u8, u8.float() / 255.0


# --- the shared VGG16 (Caffe release, features only, float16, 0–255 metadata) ---------------


@pytest.fixture(scope="module")
def shared_vgg16_file(vgg16_shared_weights: Path) -> tuple[StateDict, dict[str, str]]:
    with safe_open(str(vgg16_shared_weights), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())  # noqa: SIM118


@pytest.fixture(scope="module")
def shared_vgg16_fcn(vgg16_shared_weights: Path) -> tuple[nn.Module, list[logging.LogRecord]]:
    """FCN-8s built from the shared file (one VGG16 build for the whole module section)."""
    with _fcnseg_logs() as records:
        model = fcn8s(backbone="vgg16", num_classes=11, backbone_weights=vgg16_shared_weights)
    return model, records


def test_shared_vgg16_file_is_as_documented(shared_vgg16_file):
    state, meta = shared_vgg16_file
    assert sorted(state) == sorted(
        f"features.{i}.{p}" for i in VGG16_CONVS for p in ("weight", "bias")
    )
    assert {t.dtype for t in state.values()} == {torch.float16}
    assert sum(t.numel() for t in state.values()) == 14_714_688
    assert json.loads(meta["mean"]) == list(CAFFE_MEAN)
    assert json.loads(meta["std"]) == [1.0, 1.0, 1.0]
    assert meta["input_range"] == "0-255"
    assert meta["channel_order"] == "RGB"


def test_shared_vgg16_loads_every_conv_exactly(shared_vgg16_file, shared_vgg16_fcn):
    state, _ = shared_vgg16_file
    model, _ = shared_vgg16_fcn
    stages = model.backbone.stages
    seen = {}
    for pool in VGG16_POOLS:
        # Stage slices keep torchvision's indices: stages.pool2 holds features.5 … features.9.
        for name, tensor in stages[pool].state_dict().items():
            seen[f"features.{name}"] = tensor
    assert sorted(seen) == sorted(state), "stages must hold exactly features.0 … features.28"
    for key, value in state.items():
        assert seen[key].dtype == torch.float32, key
        assert torch.equal(seen[key], value.float()), f"{key} differs from the file"
    # Spot-check the index mapping explicitly: conv1_1 is features.0, conv3_1 features.10.
    assert stages.pool1[0] is stages.pool1._modules["0"]
    assert torch.equal(stages.pool1[0].weight, state["features.0.weight"].float())
    assert torch.equal(stages.pool3._modules["10"].weight, state["features.10.weight"].float())
    assert torch.equal(stages.pool5._modules["28"].bias, state["features.28.bias"].float())


def test_shared_vgg16_warns_fc6_fc7_start_random(shared_vgg16_fcn):
    model, records = shared_vgg16_fcn
    warnings = _warnings(records)
    random_fc = [w for w in warnings if "classifier" in w and "random" in w]
    assert len(random_fc) == 1, warnings
    assert "vgg16-imagenet-features.safetensors" in random_fc[0]
    # The file has normalisation metadata: no fallback warning.
    assert not [w for w in warnings if "normalisation metadata" in w], warnings
    # fc6/fc7 really are torchvision's random init (normal, std 0.01, zero bias).
    for stage, shape in (("fc6", (4096, 512, 7, 7)), ("fc7", (4096, 4096, 1, 1))):
        conv = model.backbone.stages[stage][0]
        assert tuple(conv.weight.shape) == shape
        assert 0.009 < conv.weight.std().item() < 0.011
        assert torch.count_nonzero(conv.bias) == 0


def test_shared_vgg16_preprocess_is_caffe_mean(shared_vgg16_fcn):
    model, _ = shared_vgg16_fcn
    pre = model.preprocess
    assert pre.to_dict() == {
        "mean": list(CAFFE_MEAN),
        "std": [1.0, 1.0, 1.0],
        "input_range": 255.0,
        "channel_order": "RGB",
    }
    u8, unit = _images()
    expected = u8.double() - torch.tensor(CAFFE_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    for images in (u8, unit):
        out = pre(images)
        assert out.dtype == torch.float32
        assert_close(out.double(), expected, rtol=0, atol=1e-4)
    # e.g. a mid-grey pixel (128, 128, 128) ends up 4.32, 11.221, 24.061
    grey = torch.full((1, 3, 1, 1), 128, dtype=torch.uint8)
    assert_close(pre(grey).flatten(), torch.tensor([4.32, 11.221, 24.061]), rtol=0, atol=1e-4)


# --- a full torchvision VGG16 state dict: fc6/fc7 convolutionalized ----------------------------


@pytest.fixture(scope="module")
def tv_vgg16(tmp_path_factory) -> tuple[StateDict, dict[str, Path]]:
    """torchvision ``vgg16(weights=None)`` state dict, saved once as .pth and .safetensors."""
    state = _model_state("vgg16", seed=16)
    folder = tmp_path_factory.mktemp("tv_vgg16")
    paths = {"pth": folder / "vgg16.pth", "safetensors": folder / "vgg16.safetensors"}
    torch.save(state, paths["pth"])
    save_file(state, str(paths["safetensors"]))  # no metadata
    return state, paths


def test_torchvision_vgg16_classifier_is_convolutionalized(tv_vgg16, caplog):
    state, paths = tv_vgg16
    with caplog.at_level(logging.WARNING, logger="fcnseg"):
        model = fcn8s(backbone="vgg16", num_classes=11, backbone_weights=paths["safetensors"])
    stages = model.backbone.stages
    fc6, fc7 = stages.fc6[0], stages.fc7[0]
    assert (fc6.kernel_size, fc7.kernel_size) == ((7, 7), (1, 1))
    assert torch.equal(fc6.weight, state["classifier.0.weight"].reshape(4096, 512, 7, 7))
    assert torch.equal(fc6.bias, state["classifier.0.bias"])
    assert torch.equal(fc7.weight, state["classifier.3.weight"].reshape(4096, 4096, 1, 1))
    assert torch.equal(fc7.bias, state["classifier.3.bias"])
    for i in VGG16_CONVS:
        pool = VGG16_POOLS[sum(i > j for j in (4, 9, 16, 23))]
        conv = stages[pool]._modules[str(i)]
        assert torch.equal(conv.weight, state[f"features.{i}.weight"]), i
        assert torch.equal(conv.bias, state[f"features.{i}.bias"]), i
    # One window of fc6-as-conv computes what classifier.0 (Linear) computes on it.
    with torch.no_grad():
        window = torch.randn(1, 512, 7, 7, generator=torch.Generator().manual_seed(1))
        fc6.padding = (0, 0)
        linear = window.flatten(1) @ state["classifier.0.weight"].T + state["classifier.0.bias"]
        assert_close(fc6(window).flatten(1), linear, rtol=1e-4, atol=1e-3)
        fc6.padding = (3, 3)

    messages = [r.getMessage() for r in caplog.records if r.name == "fcnseg"]
    fallback = [m for m in messages if "no normalisation metadata" in m]
    assert len(fallback) == 1 and str(paths["safetensors"]) in fallback[0], messages
    assert "0.485" in fallback[0] and "0.229" in fallback[0]
    assert not [m for m in messages if "random initialisation" in m], messages  # all present
    pre = model.preprocess
    assert pre.to_dict() == {
        "mean": list(IMAGENET_TORCHVISION.mean),
        "std": list(IMAGENET_TORCHVISION.std),
        "input_range": 1.0,
        "channel_order": "RGB",
    }
    u8, unit = _images()
    assert_close(pre(unit), _imagenet_pre(unit))
    assert_close(pre(u8), _imagenet_pre(unit))


def test_torchvision_vgg16_pth_reads_the_same(tv_vgg16, caplog):
    """The .pth holds the same state dict: once read, it goes through the very same loading
    as the .safetensors above (so one VGG16 build covers both formats)."""
    state, paths = tv_vgg16
    with caplog.at_level(logging.WARNING, logger="fcnseg"):
        loaded = load_backbone_weights(paths["pth"], "vgg16")
    assert loaded.source == str(paths["pth"])
    assert loaded.metadata == {}
    assert sorted(loaded.state_dict) == sorted(state)
    for key, value in state.items():
        assert loaded.state_dict[key].dtype == value.dtype, key
        assert torch.equal(loaded.state_dict[key], value), key
    assert (
        Preprocess.from_dict(loaded.preprocess).to_dict()
        == Preprocess(IMAGENET_TORCHVISION.mean, IMAGENET_TORCHVISION.std).to_dict()
    )
    fallback = [m for m in caplog.messages if "no normalisation metadata" in m]
    assert len(fallback) == 1 and str(paths["pth"]) in fallback[0], caplog.messages


# --- small torchvision state dicts (resnet18) for wrapping and error tests ------------------


@pytest.fixture(scope="module")
def resnet18_state() -> StateDict:
    return _model_state("resnet18", seed=18)


@pytest.fixture(scope="module")
def resnet18_pth(resnet18_state, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("r18") / "resnet18.pth"
    torch.save(resnet18_state, path)
    return path


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_pth_is_unwrapped(resnet18_state, tmp_path, wrapper):
    path = tmp_path / "checkpoint.pth"
    torch.save({wrapper: resnet18_state, "epoch": 7}, path)
    state, meta = read_state_dict(path)
    assert meta == {}
    assert sorted(state) == sorted(resnet18_state)
    for key, value in resnet18_state.items():
        assert torch.equal(state[key], value), key
    if wrapper == "state_dict":  # what the loader sees is the same either way: build once
        backbone = build_backbone("resnet18", weights=load_backbone_weights(path, "resnet18"))
        assert torch.equal(backbone.stages.stem[0].weight, resnet18_state["conv1.weight"])
        assert torch.equal(backbone.stages.stem[1].running_var, resnet18_state["bn1.running_var"])


def test_float16_pth_is_cast_to_float32(resnet18_state, tmp_path):
    path = tmp_path / "half.pth"
    torch.save(
        {k: v.half() if v.is_floating_point() else v for k, v in resnet18_state.items()}, path
    )
    state, _ = read_state_dict(path)
    assert state["conv1.weight"].dtype == torch.float32
    assert state["bn1.num_batches_tracked"].dtype == torch.int64
    assert torch.equal(state["conv1.weight"], resnet18_state["conv1.weight"].half().float())


# --- errors name the file and the problem ---------------------------------------------------


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope" / "vgg16.safetensors"
    with pytest.raises(WeightsFileError, match="does not exist") as info:
        fcn8s(backbone="vgg16", num_classes=11, backbone_weights=path)
    assert str(path) in str(info.value)
    with pytest.raises(WeightsFileError) as info:
        load_backbone_weights(str(path), "vgg16")
    assert str(path) in str(info.value)


@pytest.fixture(scope="module")
def resnet18_safetensors(resnet18_state, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("r18st") / "resnet18.safetensors"
    save_file(resnet18_state, str(path))
    return path


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("garbage.safetensors", "garbage"),
        ("garbage.pth", "garbage"),
        ("garbage.pt", "empty"),
        ("truncated.safetensors", "truncated_safetensors"),
        ("truncated.pth", "truncated_pth"),
    ],
)
def test_unreadable_file_is_a_value_error_naming_it(
    tmp_path, resnet18_pth, resnet18_safetensors, name, content
):
    path = tmp_path / name
    if content == "garbage":
        path.write_bytes(b"\x89not a weights file\x00" * 50)
    elif content == "empty":
        path.write_bytes(b"")
    else:
        source = resnet18_safetensors if content == "truncated_safetensors" else resnet18_pth
        data = source.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable") as info:
        load_backbone_weights(path, "resnet18")
    assert str(path) in str(info.value)


def test_pth_without_tensors_is_rejected(tmp_path):
    path = tmp_path / "notes.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(ValueError, match="does not contain a state dict") as info:
        read_state_dict(path)
    assert str(path) in str(info.value)


def test_other_backbones_weights_name_unexpected_keys(resnet18_pth):
    with pytest.raises(ValueError, match="unexpected keys") as info:
        fcn8s(backbone="vgg16", num_classes=11, backbone_weights=resnet18_pth)
    message = str(info.value)
    assert str(resnet18_pth) in message
    assert "vgg16" in message
    assert "'bn1.bias'" in message  # sorted: the first unexpected resnet18 keys are listed
    assert "features.0.weight" in message  # what was expected instead


def test_wrong_shape_names_the_key(resnet18_state, tmp_path):
    state = dict(resnet18_state)
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    path = tmp_path / "bad_shape.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"layer2\.0\.conv1\.weight") as info:
        fcn8s(backbone="resnet18", num_classes=3, backbone_weights=path)
    message = str(info.value)
    assert str(path) in message
    assert "(128, 64, 5, 5)" in message and "(128, 64, 3, 3)" in message


def test_missing_required_tensors_are_named(resnet18_state, tmp_path):
    state = {k: v for k, v in resnet18_state.items() if not k.startswith("layer3.1.conv2.")}
    path = tmp_path / "incomplete.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="lacks 1 resnet18 tensors") as info:
        fcn8s(backbone="resnet18", num_classes=3, backbone_weights=path)
    assert "layer3.1.conv2.weight" in str(info.value)
    assert str(path) in str(info.value)


def test_missing_classifier_is_optional_with_a_warning(resnet18_state, tmp_path, caplog):
    path = tmp_path / "features.safetensors"
    save_file({k: v for k, v in resnet18_state.items() if not k.startswith("fc.")}, str(path))
    with caplog.at_level(logging.WARNING, logger="fcnseg"):
        backbone = build_backbone("resnet18", weights=load_backbone_weights(path, "resnet18"))
    assert torch.equal(
        backbone.stages.layer4[1].conv2.weight, resnet18_state["layer4.1.conv2.weight"]
    )
    assert any("fc.*" in m and "random" in m for m in caplog.messages), caplog.messages


# --- "imagenet": torch hub cache, or a fast, instructive failure offline --------------------


@pytest.fixture
def hub_dir(tmp_path) -> Iterator[Path]:
    """An empty torch hub dir for the duration of a test."""
    old = torch.hub.get_dir()
    new = tmp_path / "hub"
    new.mkdir()
    torch.hub.set_dir(str(new))
    try:
        yield new
    finally:
        torch.hub.set_dir(old)


def _release_url(backbone: str) -> str:
    return weights_mod._torchvision_weights(backbone).url


def _cache_file(hub: Path, backbone: str) -> Path:
    return hub / "checkpoints" / os.path.basename(urlparse(_release_url(backbone)).path)


def test_imagenet_offline_fails_fast_with_instructions(hub_dir, monkeypatch):
    calls: list[tuple[Any, ...]] = []

    def unreachable(address: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(address)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    url = _release_url("resnet18")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        load_backbone_weights("imagenet", "resnet18")
    assert time.monotonic() - start < 5.0
    assert calls == [("download.pytorch.org", 443)]
    message = str(info.value)
    assert url in message
    assert "backbone_weights" in message
    assert str(_cache_file(hub_dir, "resnet18")) in message
    assert "Network is unreachable" in message
    # The model builders surface the same error before building anything.
    with pytest.raises(WeightsUnavailableError, match="backbone_weights"):
        fcn8s(backbone="resnet18", num_classes=3, backbone_weights="imagenet")


def test_imagenet_offline_hanging_lookup_is_bounded(monkeypatch):
    """``create_connection``'s timeout does not cover DNS; a lookup that never answers must not
    block the caller past the check's own deadline."""
    release = threading.Event()

    def hangs(address: Any, *args: Any, **kwargs: Any) -> Any:
        release.wait(30)
        raise OSError("name resolution gave up")

    monkeypatch.setattr(socket, "create_connection", hangs)
    url = _release_url("resnet18")
    start = time.monotonic()
    try:
        with pytest.raises(WeightsUnavailableError, match=r"within 0\.2 s") as info:
            weights_mod._check_online(url, timeout=0.2)
    finally:
        release.set()
    assert time.monotonic() - start < 3.0
    assert url in str(info.value)


def test_imagenet_unknown_backbone_is_a_value_error():
    with pytest.raises(ValueError, match="unknown backbone 'vgg19'"):
        load_backbone_weights("imagenet", "vgg19")


def _no_network_expected(address: Any, *args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"a cached 'imagenet' load must not connect ({address!r})")


def test_imagenet_from_hub_cache_resnet18(hub_dir, resnet18_state, monkeypatch):
    monkeypatch.setattr(socket, "create_connection", _no_network_expected)
    cached = _cache_file(hub_dir, "resnet18")
    assert cached.name == "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(resnet18_state, cached)

    loaded = load_backbone_weights("imagenet", "resnet18")
    assert "torchvision" in loaded.source
    assert torch.equal(
        loaded.state_dict["layer1.0.bn1.running_mean"], resnet18_state["layer1.0.bn1.running_mean"]
    )
    model = fcn8s(backbone="resnet18", num_classes=3, backbone_weights="imagenet")
    assert torch.equal(model.backbone.stages.stem[0].weight, resnet18_state["conv1.weight"])
    assert model.preprocess.to_dict() == {
        "mean": list(IMAGENET_TORCHVISION.mean),
        "std": list(IMAGENET_TORCHVISION.std),
        "input_range": 1.0,
        "channel_order": "RGB",
    }
    u8, unit = _images(3)
    assert_close(model.preprocess(unit), _imagenet_pre(unit))
    assert_close(model.preprocess(u8), _imagenet_pre(unit))


def test_imagenet_from_hub_cache_googlenet_feeds_its_transform_input(hub_dir, monkeypatch):
    """torchvision's GoogLeNet ImageNet weights are used with ``transform_input=True``: the
    model re-maps its ImageNet-normalised input to ``(x − 0.5) / 0.5`` before conv1, so that
    is the normalisation the weights were trained on, not torchvision's usual mean/std."""
    monkeypatch.setattr(socket, "create_connection", _no_network_expected)
    state = _model_state("googlenet", seed=22)
    assert any(k.startswith("aux1.") for k in state)  # the release's file has aux heads too
    cached = _cache_file(hub_dir, "googlenet")
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)

    # (Loading such a state dict into the backbone is covered below; no build needed here.)
    loaded = load_backbone_weights("imagenet", "googlenet")
    assert "torchvision" in loaded.source
    assert sorted(loaded.state_dict) == sorted(state)
    assert torch.equal(loaded.state_dict["conv1.conv.weight"], state["conv1.conv.weight"])
    pre = Preprocess.from_dict(loaded.preprocess)
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.5, 0.5, 0.5)
    assert pre.input_range == 1.0
    # Numerically what torchvision's pretrained GoogLeNet computes from the same picture.
    reference = models.GoogLeNet(transform_input=True, aux_logits=False, init_weights=False)
    u8, unit = _images(4)
    expected = reference._transform_input(_imagenet_pre(unit))
    assert_close(pre(unit), expected, rtol=1e-5, atol=1e-5)
    assert_close(pre(u8), expected, rtol=1e-5, atol=1e-5)
    assert_close(pre(unit), unit * 2 - 1)


# --- full torchvision classifiers load into the other backbones ------------------------------


def _conv(bb: nn.Module, path: str) -> torch.Tensor:
    return bb.get_submodule(path).weight


@pytest.mark.parametrize(
    ("name", "first", "first_key", "last", "last_key"),
    [
        (
            "googlenet",
            "stages.stem.0.conv",
            "conv1.conv.weight",
            "stages.inception5.2.branch4.1.conv",
            "inception5b.branch4.1.conv.weight",
        ),
        (
            "resnet18",
            "stages.stem.0",
            "conv1.weight",
            "stages.layer4.1.conv2",
            "layer4.1.conv2.weight",
        ),
        (
            "mobilenet_v3_large",
            "stages.stride4.0.0",
            "features.0.0.weight",
            "stages.stride32.16.0",
            "features.16.0.weight",
        ),
        ("alexnet", "stages.pool1.0", "features.0.weight", "stages.pool5.10", "features.10.weight"),
    ],
)
def test_full_classifier_state_dict_loads_into_backbone(
    tmp_path, caplog, name, first, first_key, last, last_key
):
    state = _model_state(name, seed=len(name))
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path))
    with caplog.at_level(logging.WARNING, logger="fcnseg"):
        backbone = build_backbone(name, weights=load_backbone_weights(path, name))
    assert torch.equal(_conv(backbone, first), state[first_key])
    assert torch.equal(_conv(backbone, last), state[last_key])
    assert not [m for m in caplog.messages if "random initialisation" in m], caplog.messages
    fallback = [m for m in caplog.messages if "no normalisation metadata" in m]
    assert len(fallback) == 1, caplog.messages
    expected = (0.5, 0.5, 0.5) if name == "googlenet" else IMAGENET_TORCHVISION.mean
    assert backbone.preprocess.mean == expected
    assert str(expected) in fallback[0]  # the warning states what is actually used
    if name == "googlenet":
        assert any(k.startswith(("aux1.", "aux2.")) for k in state)  # present, and ignored
    if name == "alexnet":  # fc6 (6×6) / fc7 convolutionalized like VGG16's
        assert torch.equal(
            backbone.stages.fc6[1].weight, state["classifier.1.weight"].reshape(4096, 256, 6, 6)
        )
        assert torch.equal(
            backbone.stages.fc7[1].weight, state["classifier.4.weight"].reshape(4096, 4096, 1, 1)
        )


# --- Preprocess ---------------------------------------------------------------------------


def test_preprocess_from_json_string_metadata():
    meta = {
        "mean": "[123.68, 116.779, 103.939]",
        "std": "[1.0, 1.0, 1.0]",
        "input_range": "0-255",
        "channel_order": "RGB",
        "source": "something unrelated",
    }
    pre = Preprocess.from_dict(meta)
    assert pre.mean == CAFFE_MEAN
    assert pre.std == (1.0, 1.0, 1.0)
    assert pre.input_range == 255.0
    assert pre.channel_order == "RGB"
    assert (
        Preprocess.from_dict({"mean": "[0.5, 0.5, 0.5]", "input_range": "0-1"}).input_range == 1.0
    )
    assert Preprocess.from_dict({"mean": [1, 2, 3], "input_range": "255"}).input_range == 255.0
    defaults = Preprocess.from_dict({})
    assert (defaults.mean, defaults.std) == (IMAGENET_TORCHVISION.mean, IMAGENET_TORCHVISION.std)


def test_preprocess_to_dict_round_trips():
    pre = Preprocess(
        (103.939, 116.779, 123.68), (58.4, 57.1, 57.4), input_range=255, channel_order="BGR"
    )
    as_dict = pre.to_dict()
    assert Preprocess.from_dict(as_dict).to_dict() == as_dict
    # Through JSON strings, as stored in a safetensors header.
    as_strings = {k: json.dumps(v) for k, v in as_dict.items()}
    assert Preprocess.from_dict(as_strings).to_dict() == as_dict


def test_weights_file_metadata_sets_preprocess(resnet18_state, tmp_path, caplog):
    pre = Preprocess((1.0, 2.0, 3.0), (4.0, 5.0, 6.0), input_range=255, channel_order="BGR")
    path = tmp_path / "with_meta.safetensors"
    save_file(
        resnet18_state, str(path), metadata={k: json.dumps(v) for k, v in pre.to_dict().items()}
    )
    with caplog.at_level(logging.WARNING, logger="fcnseg"):
        loaded = load_backbone_weights(path, "resnet18")
    assert loaded.preprocess == pre.to_dict()
    assert not [m for m in caplog.messages if "normalisation metadata" in m]


def test_bgr_flips_channels():
    mean = (10.0, 20.0, 30.0)
    bgr = Preprocess(mean, (2.0, 4.0, 8.0), input_range=255, channel_order="BGR")
    u8, unit = _images(5)
    out = bgr(u8)
    x = u8.double()
    for c, src in enumerate((2, 1, 0)):  # output channel c is input channel 2 - c
        assert_close(
            out[:, c].double(), (x[:, src] - mean[c]) / (2.0, 4.0, 8.0)[c], rtol=0, atol=1e-4
        )
    rgb = Preprocess(mean, (2.0, 4.0, 8.0), input_range=255)
    assert not torch.allclose(rgb(u8), out)
    assert_close(bgr(unit), out)


@pytest.mark.parametrize("shape", [(2, 1, 4, 4), (3, 4, 4), (1, 4, 4, 4)])
def test_preprocess_rejects_bad_shapes(shape):
    pre = Preprocess(IMAGENET_TORCHVISION.mean, IMAGENET_TORCHVISION.std)
    with pytest.raises(ValueError, match=r"N×3×H×W"):
        pre(torch.zeros(shape))


def test_preprocess_rejects_unknown_channel_order():
    with pytest.raises(ValueError, match="channel_order"):
        Preprocess((0.5, 0.5, 0.5), channel_order="RGBA")


def test_preprocess_is_not_part_of_the_state_dict():
    """Normalisation lives in metadata; checkpoints of a model must not carry it as tensors."""
    pre = Preprocess(CAFFE_MEAN)
    assert pre.state_dict() == {}
    assert pre(torch.zeros(1, 3, 1, 1, dtype=torch.float64)).dtype == torch.float64


# --- the conftest's network guard (every test above runs under it) ---------------------------


def test_network_guard_refuses_remote_hosts():
    import socket
    import urllib.request

    with pytest.raises(RuntimeError, match="tests must not use the network"):
        socket.create_connection(("download.pytorch.org", 443), timeout=1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(RuntimeError, match="tests must not use the network"):
            sock.connect(("192.0.2.1", 80))  # TEST-NET-1: would never answer anyway
        with pytest.raises(RuntimeError, match="tests must not use the network"):
            sock.connect_ex(("192.0.2.1", 80))
    with pytest.raises(RuntimeError, match="tests must not use the network"):
        urllib.request.urlopen("https://download.pytorch.org/models/resnet18-f37072fd.pth")


def test_network_guard_allows_loopback_and_unix_sockets(tmp_path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        for host in ("127.0.0.1", "localhost"):
            with socket.create_connection((host, port), timeout=5):
                server.accept()[0].close()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.connect(("127.0.0.1", port))
            server.accept()[0].close()
    if socket.has_ipv6:
        try:
            server6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
        except OSError:
            pass  # no IPv6 loopback on this machine
        else:
            with server6, socket.create_connection(("::1", server6.getsockname()[1]), timeout=5):
                server6.accept()[0].close()
    if hasattr(socket, "AF_UNIX"):
        path = str(tmp_path / "s.sock")
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(path)
            server.listen()
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(path)
                server.accept()[0].close()
