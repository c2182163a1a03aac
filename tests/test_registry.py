"""Models behind one registry: the spec comes from the builder's signature, configs and
checkpoints follow it, and resume / init_from compare every field of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fcnseg import checkpoint as ckpt
from fcnseg.config import ConfigError, load_config
from fcnseg.engine.trainer import Trainer
from fcnseg.models import (
    MODELS,
    SegmentationModel,
    build_model,
    model_spec,
    register_model,
    spec_differences,
)
from fcnseg.weights import Preprocess

TINY = [
    "data.options={num_images: 6, size: [40, 48]}",
    "data.batch_size=2",
    "data.val_batch_size=3",
    "train.iterations=2",
    "train.eval_every=2",
    "train.checkpoint_every=1",
]
UNET = "model={name: unet, in_channels: 3, base_width: 4, depth: 1, padding: valid}"


def test_spec_is_the_builders_signature() -> None:
    assert model_spec("unet", num_classes=2) == {
        "name": "unet", "num_classes": 2, "in_channels": 1, "base_width": 64, "depth": 4,
        "padding": "valid", "fuse": "concat", "dropout": 0.0,
    }  # fmt: skip
    spec = model_spec("fcn16s", num_classes=3, backbone_weights="imagenet")
    assert "backbone_weights" not in spec and "init_from" not in spec  # initialisation only
    assert spec["learnable_upsampling"] is True
    with pytest.raises(ValueError, match=r"fcn16s takes no argument\(s\) \['at_once'\]"):
        model_spec("fcn16s", num_classes=3, at_once=True)


def test_spec_differences_fill_defaults_and_skip_foreign_fields() -> None:
    old = {"name": "fcn8s", "backbone": "vgg16", "num_classes": 3}  # an older file: fewer keys
    assert spec_differences(old, model_spec("fcn8s", num_classes=3)) == []
    assert spec_differences(old, model_spec("fcn8s", num_classes=3, mode="caffe")) == [
        "mode: 'exact' vs 'caffe'"
    ]
    # FCN-16s vs FCN-8s: at_once exists in one only; the name is what staging changes
    assert (
        spec_differences(
            model_spec("fcn16s", num_classes=3),
            model_spec("fcn8s", num_classes=3),
            ignore=("name",),
        )
        == []
    )


def test_a_new_model_plugs_in_through_the_registry(tmp_path: Path) -> None:
    """Registering a builder is all it takes: the config accepts its arguments (type-checked
    from the signature), the Trainer trains it, the checkpoint rebuilds it."""

    class Linear(SegmentationModel):
        def __init__(self, num_classes: int, hidden: int) -> None:
            super().__init__()
            self.num_classes = num_classes
            self.preprocess = Preprocess((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
            self.net = nn.Sequential(
                nn.Conv2d(3, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, num_classes, 1)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    @register_model("pointwise_test")
    def pointwise_test(*, num_classes: int, hidden: int = 4) -> Linear:
        return Linear(num_classes, hidden)

    try:
        with pytest.raises(ConfigError, match=r"model\.hidden: expected an integer"):
            load_config("fcn8s_resnet18_synthetic", ["model={name: pointwise_test, hidden: x}"])
        cfg = load_config("fcn8s_resnet18_synthetic",
                          [*TINY, "model={name: pointwise_test, hidden: 5}"])  # fmt: skip
        result = Trainer(cfg, tmp_path / "run", progress=False).train()
        assert result.iteration == 2
        loaded = ckpt.load_checkpoint(tmp_path / "run")
        assert loaded.model == {"name": "pointwise_test", "num_classes": 6, "hidden": 5}
        model = loaded.build_model()
        assert model.net[0].out_channels == 5
    finally:
        MODELS.pop("pointwise_test")


def test_resume_compares_every_field_of_the_spec(tmp_path: Path) -> None:
    """``--resume --set model.padding=same`` on a valid U-Net run is refused, naming the field
    (the old check listed FCN fields only and let it through)."""
    cfg = load_config("fcn8s_resnet18_synthetic", [*TINY, UNET])
    Trainer(cfg, tmp_path / "run", progress=False).train(stop_at=1)
    for change, field in (("model.padding=same", "padding"), ("model.fuse=sum", "fuse"),
                          ("model.dropout=0.5", "dropout")):  # fmt: skip
        other = load_config("fcn8s_resnet18_synthetic", [*TINY, UNET, change])
        with pytest.raises(ckpt.CheckpointError, match=rf"does not match .*{field}: "):
            Trainer(other, tmp_path / "run", resume=True, progress=False)
    resumed = Trainer(cfg, tmp_path / "run", resume=True, progress=False)  # same spec: fine
    assert resumed.iteration == 1


def test_init_from_compares_the_spec(tmp_path: Path) -> None:
    """init_from: a parent of another backbone or mode is refused; FCN-32s → FCN-16s of the
    same family is the staged recipe."""
    base = [*TINY, "model.name=fcn32s"]
    Trainer(load_config("fcn8s_resnet18_synthetic", base), tmp_path / "p32",
            progress=False).train()  # fmt: skip
    child = [*TINY, "model.name=fcn16s", f"model.init_from={tmp_path / 'p32'}"]
    t = Trainer(load_config("fcn8s_resnet18_synthetic", child), tmp_path / "c16", progress=False)
    parent = ckpt.load_checkpoint(tmp_path / "p32").state_dict
    assert torch.equal(t.net.score_fr.weight, parent["score_fr.weight"])
    wrong = load_config("fcn8s_resnet18_synthetic", [*child, "model.learnable_upsampling=false"])
    with pytest.raises(
        ckpt.CheckpointError, match=r"learnable_upsampling: checkpoint True, this run False"
    ):
        Trainer(wrong, tmp_path / "c16b", progress=False)


def test_build_model_takes_a_spec() -> None:
    spec = model_spec("unet", num_classes=2, base_width=4, depth=1)
    model = build_model(spec)
    assert model.num_classes == 2 and model.depth == 1
    with pytest.raises(ValueError, match=r"unknown model 'fcn9s'"):
        build_model({"name": "fcn9s"})
