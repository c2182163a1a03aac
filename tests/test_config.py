"""Configs: typed sections, errors that name the key, overrides, env variables, shipped files."""

from __future__ import annotations

from pathlib import Path

import pytest

from fcnseg.config import ConfigError, load_config, shipped_configs


def test_config_unknown_key_is_named(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  iterationz: 5\n")
    with pytest.raises(ConfigError, match=r"train.*unknown key\(s\) \['iterationz'\]"):
        load_config(f)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=fast", r"train\.lr: expected a number"),
        ("train.iterations=2.5", r"train\.iterations: expected an integer"),
        ("data.hflip=3", r"data\.hflip: expected true or false"),
        ("data.crop_size=[1, 2, 3]", r"data\.crop_size must be \[height, width\]"),
        ("model.mode=tf", r"model\.mode = 'tf'; choose one of"),
        ("train.schedule=cosine", r"train\.schedule"),
        ("model.at_once=true", r"at_once applies to fcn8s only"),
        ("train.iterations=0", r"train\.iterations must be >= 1"),
        ("nokey", r"expected key=value"),
    ],
)
def test_config_bad_values_name_the_key(override: str, message: str) -> None:
    extra = ["model.name=fcn16s"] if "at_once" in override else []
    with pytest.raises(ConfigError, match=message):
        load_config("fcn8s_resnet18_synthetic", [*extra, override])


def test_config_overrides_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FCNSEG_SHARED", "/data/shared")
    cfg = load_config(
        "fcn8s_vgg16_camvid-360x480",
        ["train.lr=0.5", "data.batch_size=2", "data.options={a: 1}", "model.init_from=null"],
    )
    assert cfg.train.lr == 0.5 and cfg.data.batch_size == 2 and cfg.data.options == {"a": 1}
    assert cfg.data.root == "/data/shared/data/camvid"
    monkeypatch.delenv("FCNSEG_SHARED")
    assert load_config("fcn8s_vgg16_camvid-360x480").data.root == "../shared/data/camvid"


def test_config_every_shipped_config_is_valid(tmp_path: Path) -> None:
    """Every shipped config loads, validates, and round-trips through its resolved dump."""
    names = shipped_configs()
    assert {"fcn8s_vgg16_camvid-360x480", "fcn32s_vgg16_voc-sbd", "fcn8s_vgg16_horse",
            "fcn8s_resnet18_synthetic", "fcn16s_vgg16_voc-sbd", "fcn8s_vgg16_voc-sbd",
            "fcn8s-atonce_vgg16_voc-sbd"} <= set(names)  # fmt: skip
    for name in names:
        cfg = load_config(name)
        cfg.dump(tmp_path / f"{name}.yaml")
        assert load_config(tmp_path / f"{name}.yaml") == cfg
    paper = load_config("fcn32s_vgg16_voc-sbd")
    assert (paper.train.lr, paper.train.momentum, paper.train.loss_reduction) == (
        1e-10,
        0.99,
        "sum",
    )
    assert load_config("fcn16s_vgg16_voc-sbd").model.init_from == "runs/fcn32s_vgg16_voc-sbd"
    assert load_config("fcn8s-atonce_vgg16_voc-sbd").model.at_once


def test_config_missing_file_lists_shipped() -> None:
    with pytest.raises(ConfigError, match="fcn8s_resnet18_synthetic"):
        load_config("no-such-config.yaml")
