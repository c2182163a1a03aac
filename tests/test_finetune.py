"""Fine-tuning from trained weights onto another class count: everything that does not depend on
the class count is loaded, the class-dependent layers keep the model's fresh init (FCN: zero
score layers, bilinear upsamplers; U-Net: its head) and are named in the log; any other mismatch
is refused in one line. Staged training and same-class init_from are unchanged."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg import checkpoint as ckpt
from fcnseg.config import load_config
from fcnseg.engine import build
from fcnseg.engine.trainer import Trainer
from fcnseg.models import build_model, fcn16s, fcn32s, model_spec, unet
from fcnseg.models.finetune import class_layers, load_for_finetuning

CONFIG = "fcn8s_resnet18_synthetic"
TINY = [
    "data.options={num_images: 8, size: [48, 64]}",
    "data.batch_size=2",
    "data.val_batch_size=4",
    "train.iterations=2",
    "train.eval_every=2",
    "train.checkpoint_every=2",
]
FCN8S_CLASS_LAYERS = [
    "score_fr",
    "scorers.score_pool3",
    "scorers.score_pool4",
    "upsamplers.upscore2",
    "upsamplers.upscore_pool4",
    "upscore",
]


def _in(layers: list[str], key: str) -> bool:
    return key.rpartition(".")[0] in layers


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained FCN-8s/ResNet-18 run on the synthetic shapes (6 classes)."""
    run = tmp_path_factory.mktemp("parent") / "run"
    Trainer(load_config(CONFIG, TINY), run, progress=False).train()
    return run


def _two_class_folder(root: Path) -> list[str]:
    """A tiny own-data folder (background / horse, masks 0/1), train and val splits."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            mask = np.zeros((48, 64), np.uint8)
            mask[10:30, 20:50] = 1
            Image.fromarray(image).save(root / split / "images" / f"{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")
    return [
        "data.dataset=folder",
        f"data.root={root}",
        "data.options={meta: {classes: [background, horse]}}",
        "data.val_options={meta: {classes: [background, horse]}}",
    ]


def test_class_layers_follow_the_builder() -> None:
    assert class_layers(model_spec("fcn8s", backbone="resnet18", num_classes=3)) == (
        FCN8S_CLASS_LAYERS
    )
    assert class_layers(model_spec("fcn32s", backbone="resnet18", num_classes=3)) == [
        "score_fr",
        "upscore",
    ]
    assert class_layers(model_spec("unet", num_classes=2, base_width=4, depth=1)) == ["head"]


def test_init_from_onto_two_classes(
    parent: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """6 synthetic classes → 2 (background/horse): backbone equals the checkpoint's, the score
    layers are zero and the upsamplers bilinear (a fresh model's), the log names each reset
    layer, and training takes a step."""
    data = _two_class_folder(tmp_path / "horse")
    cfg = load_config(CONFIG, [*TINY, *data, f"model.init_from={parent}"])
    with caplog.at_level(logging.WARNING, logger="fcnseg"):
        t = Trainer(cfg, tmp_path / "child", progress=False)
    assert t.num_classes == 2
    trained = ckpt.load_checkpoint(parent).state_dict
    assert trained["score_fr.weight"].shape[0] == 6 and trained["score_fr.weight"].abs().max() > 0
    mine = t.net.state_dict()
    fresh = build_model(cfg.model.spec(2)).state_dict()
    backbone = [k for k in mine if not _in(FCN8S_CLASS_LAYERS, k)]
    assert any(k.startswith("backbone.") for k in backbone)
    for k in backbone:
        assert torch.equal(mine[k], trained[k]), k
    for k in mine:
        if _in(FCN8S_CLASS_LAYERS, k):
            assert torch.equal(mine[k], fresh[k]), k  # zero scores, bilinear upsamplers
    assert mine["score_fr.weight"].abs().max() == 0
    assert mine["upscore.weight"].abs().max() > 0
    message = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "6 classes, this run 2" in message
    for layer in FCN8S_CLASS_LAYERS:
        assert f"{layer} (" in message, layer
    assert "backbone" not in message
    t.train(stop_at=1)
    assert t.iteration == 1
    assert t.net.score_fr.weight.abs().max() > 0  # the reset layer learns


def test_init_from_another_backbone_is_still_refused(parent: Path, tmp_path: Path) -> None:
    data = _two_class_folder(tmp_path / "horse")
    cfg = load_config(
        CONFIG, [*TINY, *data, "model.backbone=mobilenet_v3_large", f"model.init_from={parent}"]
    )
    with pytest.raises(ckpt.CheckpointError) as err:
        Trainer(cfg, tmp_path / "child", progress=False)
    message = str(err.value)
    assert message.startswith("model.init_from: ") and "\n" not in message
    assert "backbone: checkpoint 'resnet18', this run 'mobilenet_v3_large'" in message


def test_same_classes_load_everything(
    parent: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Control: the same model and classes load every tensor, score layers included, and
    warn about nothing."""
    cfg = load_config(CONFIG, [*TINY, f"model.init_from={parent}"])
    with caplog.at_level(logging.INFO, logger="fcnseg"):
        t = Trainer(cfg, tmp_path / "child", progress=False)
    trained = ckpt.load_checkpoint(parent).state_dict
    mine = t.net.state_dict()
    assert mine.keys() == trained.keys()
    assert all(torch.equal(mine[k], trained[k]) for k in mine)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("initialising from" in r.getMessage() for r in caplog.records)


def test_init_weights_is_the_one_source(
    parent: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever ``init_weights`` resolves (a registry name, later) initialises the model."""
    loaded = ckpt.load_checkpoint(parent)
    seen = []

    def resolve(source: str) -> ckpt.Checkpoint:
        seen.append(source)
        return dataclasses.replace(loaded, path=Path(f"registry entry {source}"))

    monkeypatch.setattr(build, "init_weights", resolve)
    cfg = load_config(CONFIG, [*TINY, "model.init_from=local/fcn8s_synthetic"])
    net = build.build_train_model(cfg, 6)
    assert seen == ["local/fcn8s_synthetic"]
    assert torch.equal(net.state_dict()["score_fr.weight"], loaded.state_dict["score_fr.weight"])
    wrong = load_config(CONFIG, [*TINY, "model.init_from=x", "model.learnable_upsampling=false"])
    with pytest.raises(ckpt.CheckpointError, match=r"^model.init_from: registry entry x does not"):
        build.build_train_model(wrong, 6)


def _randomised(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Stand-in for training: every floating tensor random but fixed."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.normal_(0, 0.05)
    return model


def test_staged_recipe_through_the_same_loader() -> None:
    """FCN-16s from a trained FCN-32s (same classes): exactly what ``FCN.init_from`` gives; the
    new skip keeps its fresh init and is reported as not in the weights."""
    m32 = _randomised(fcn32s(backbone="resnet18", num_classes=3))
    spec = model_spec("fcn16s", backbone="resnet18", num_classes=3)
    child = build_model(spec)
    reset = load_for_finetuning(child, m32.state_dict(), spec)
    assert reset == {
        "scorers.score_pool4": "not in the weights",
        "upsamplers.upscore2": "not in the weights",
        # The final upsampler is 16× here, 32× there: fixed bilinear in both.
        "upscore": "upscore.weight [3, 1, 63, 63] in the weights, [3, 1, 31, 31] here",
    }
    reference = fcn16s(backbone="resnet18", num_classes=3)
    reference.init_from(m32)
    assert reference.state_dict().keys() == child.state_dict().keys()
    for k, v in child.state_dict().items():
        assert torch.equal(v, reference.state_dict()[k]), k


def test_staged_and_fewer_classes_at_once() -> None:
    """FCN-16s on 2 classes from an FCN-32s of 6: every class-dependent layer is reset."""
    trained = _randomised(fcn32s(backbone="resnet18", num_classes=6)).state_dict()
    spec = model_spec("fcn16s", backbone="resnet18", num_classes=2)
    reset = load_for_finetuning(build_model(spec), trained, spec)
    assert sorted(reset) == ["score_fr", "scorers.score_pool4", "upsamplers.upscore2", "upscore"]
    assert reset["score_fr"] == "score_fr.weight [6, 512, 1, 1] in the weights, [2, 512, 1, 1] here"


def test_mismatch_outside_class_layers_is_an_error() -> None:
    """Another backbone's weights (the spec check aside): one line naming the tensors."""
    other = fcn32s(backbone="vgg16", num_classes=6).state_dict()
    spec = model_spec("fcn32s", backbone="resnet18", num_classes=2)
    model = build_model(spec)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_for_finetuning(model, other, spec)
    message = str(err.value)
    assert (
        "\n" not in message and "outside its class-dependent layers (score_fr, upscore)" in message
    )
    assert "missing backbone." in message and "more)" in message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched
    # One reshaped backbone tensor is enough.
    trained = _randomised(fcn32s(backbone="resnet18", num_classes=6)).state_dict()
    key = next(k for k in trained if k.startswith("backbone.") and trained[k].ndim == 4)
    trained[key] = trained[key][:1]
    with pytest.raises(ValueError, match=rf"{key} \[1, "):
        load_for_finetuning(model, trained, spec)


def test_unet_head_is_reset() -> None:
    """U-Net on 3 classes → 2: every tensor but the 1×1 head's is loaded; the head is the
    fresh model's (same seed)."""
    trained = _randomised(unet(num_classes=3, base_width=4, depth=1)).state_dict()
    spec = model_spec("unet", num_classes=2, base_width=4, depth=1)
    torch.manual_seed(7)
    fresh = build_model(spec).state_dict()
    torch.manual_seed(7)
    model = build_model(spec)
    assert list(load_for_finetuning(model, trained, spec)) == ["head"]
    for k, v in model.state_dict().items():
        expected = fresh[k] if k.startswith("head.") else trained[k]
        assert torch.equal(v, expected), k


def test_unet_run_onto_two_classes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``model.init_from`` in a U-Net config (its builder has no such argument): 6 → 2 classes,
    the head reset and named."""
    unet_model = "model={name: unet, in_channels: 3, base_width: 4, depth: 1, padding: same}"
    Trainer(load_config(CONFIG, [*TINY, unet_model]), tmp_path / "p", progress=False).train()
    data = _two_class_folder(tmp_path / "horse")
    cfg = load_config(CONFIG, [*TINY, unet_model, *data, f"model.init_from={tmp_path / 'p'}"])
    with caplog.at_level(logging.WARNING, logger="fcnseg"):
        t = Trainer(cfg, tmp_path / "child", progress=False)
    trained = ckpt.load_checkpoint(tmp_path / "p").state_dict
    assert t.net.head.weight.shape[0] == 2
    for k, v in t.net.state_dict().items():
        assert k.startswith("head.") or torch.equal(v, trained[k]), k
    assert "6 classes, this run 2" in caplog.text
    assert "head (head.weight [6, 4, 1, 1]" in caplog.text
