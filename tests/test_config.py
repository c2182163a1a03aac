"""Configs: typed sections, errors that name the key, overrides, env variables, shipped files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

from fcnseg.config import ConfigError, load_config, resolve_config_path, shipped_configs
from fcnseg.weights import Preprocess


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
        ("model.mode=tf", r"model: unknown mode 'tf'; choices: exact, caffe"),
        ("model.backbone=resnet34", r"model: unknown backbone 'resnet34'; did you mean .*choices:"),
        ("model.widht=3", r"model: fcn8s has no argument\(s\) \['widht'\]; its arguments are"),
        ("model.learnable_upsampling=2", r"model\.learnable_upsampling: expected true or false"),
        ("train.schedule=cosine", r"train\.schedule"),
        ("model.at_once=true", r"model: fcn16s has no argument\(s\) \['at_once'\]"),
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
        "fcn8s_vgg16_camvid-360x480_gpu",
        ["train.lr=0.5", "data.batch_size=2", "data.options={a: 1}", "model.init_from=null"],
    )
    assert cfg.train.lr == 0.5 and cfg.data.batch_size == 2 and cfg.data.options == {"a": 1}
    assert cfg.data.root == "/data/shared/data/camvid"
    monkeypatch.delenv("FCNSEG_SHARED")
    assert load_config("fcn8s_vgg16_camvid-360x480_gpu").data.root == "../shared/data/camvid"


def test_config_every_shipped_config_is_valid(tmp_path: Path) -> None:
    """Every shipped config loads, validates, and round-trips through its resolved dump."""
    names = shipped_configs()
    assert {"fcn8s_vgg16_camvid-360x480_gpu", "fcn32s_vgg16_voc-sbd", "fcn8s_vgg16_horse",
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


# --- inheritance (`base:`) ------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_config_base_by_shipped_name(tmp_path: Path) -> None:
    """A child of a shipped config changes only what it says; the rest is the base's."""
    child = _write(
        tmp_path / "child.yaml",
        "base: fcn8s_resnet18_synthetic\nname: child\ntrain:\n  lr: 0.5\n",
    )
    cfg, base = load_config(child), load_config("fcn8s_resnet18_synthetic")
    assert (cfg.name, cfg.train.lr) == ("child", 0.5)
    assert cfg.train.optimizer == base.train.optimizer == "adam"
    assert (cfg.train.iterations, cfg.data, cfg.model) == (
        base.train.iterations,
        base.data,
        base.model,
    )
    # also as "name.yaml", and overrides apply after the merge
    _write(child, "base: fcn8s_resnet18_synthetic.yaml\ntrain:\n  lr: 0.5\n")
    assert load_config(child, ["train.lr=0.25"]).train.lr == 0.25


def test_config_base_by_relative_path_deep_merge_lists_and_null(tmp_path: Path) -> None:
    """Relative to the child's folder (not the working directory); nested mappings merge key by
    key, lists replace, null clears, and a base can have its own base."""
    _write(
        tmp_path / "bases" / "root.yaml",
        "name: root\n"
        "model: {name: fcn8s, backbone: resnet18, init_from: runs/previous}\n"
        "data:\n"
        "  dataset: synthetic\n"
        "  scale_range: [0.5, 2.0]\n"
        "  crop_size: [64, 64]\n"
        "  options: {size: [64, 64], length: 8}\n"
        "  val_options: {length: 4}\n"
        "train: {lr: 0.1, iterations: 7, class_weights: [1.0, 2.0]}\n",
    )
    _write(tmp_path / "bases" / "mid.yaml", "base: root.yaml\nname: mid\ntrain: {iterations: 9}\n")
    child = _write(
        tmp_path / "exp" / "child.yaml",
        "base: ../bases/mid.yaml\n"
        "model: {init_from: null}\n"
        "data:\n"
        "  scale_range: [1.0, 1.0]\n"
        "  crop_size: null\n"
        "  options: {length: 3}\n"
        "  val_options: null\n"
        "train: {class_weights: [3.0]}\n",
    )
    cfg = load_config(child)
    assert cfg.name == "mid"  # from the middle base
    assert (cfg.model.name, cfg.model.backbone) == ("fcn8s", "resnet18")  # merged section
    assert getattr(cfg.model, "init_from", None) is None  # null clears
    assert cfg.data.dataset == "synthetic"
    assert cfg.data.options == {"size": [64, 64], "length": 3}  # nested mapping merged
    assert cfg.data.val_options is None  # null over a mapping: back to its default
    assert cfg.data.scale_range == [1.0, 1.0] and cfg.data.crop_size is None
    assert cfg.train.class_weights == [3.0]  # a list replaces, never merges
    assert (cfg.train.lr, cfg.train.iterations) == (0.1, 9)


def test_config_base_absolute_path_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = _write(tmp_path / "b" / "base.yaml", "name: from-base\ntrain: {lr: 0.125}\n")
    child = _write(tmp_path / "c" / "child.yaml", f"base: {base}\n")
    assert load_config(child).name == "from-base"
    monkeypatch.setenv("MY_BASES", str(base.parent))
    _write(child, "base: ${MY_BASES}/base.yaml\ndata:\n  options:\n    x: ${MY_BASES:-none}\n")
    cfg = load_config(child)
    assert cfg.train.lr == 0.125 and cfg.data.options == {"x": str(base.parent)}


def test_config_resolved_dump_has_no_base(tmp_path: Path) -> None:
    """What a run writes (config.yaml) is the fully resolved config, loadable on its own."""
    cfg = load_config("fcn16s_vgg16_voc-sbd")
    out = tmp_path / "config.yaml"
    cfg.dump(out)
    dumped = yaml.safe_load(out.read_text())
    assert "base" not in dumped and dumped["train"]["lr"] == 1e-12
    assert dumped["model"]["learnable_upsampling"] is False
    assert load_config(out) == cfg


def test_config_base_cycle_is_named(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.yaml", "base: b.yaml\n")
    _write(tmp_path / "b.yaml", "base: ./a.yaml\n")
    with pytest.raises(
        ConfigError, match=r"inheritance cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"
    ):
        load_config(a)
    _write(a, "base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"inheritance cycle: .*a\.yaml -> .*a\.yaml"):
        load_config(a)


def test_config_base_missing_or_bad_is_named(tmp_path: Path) -> None:
    child = _write(tmp_path / "child.yaml", "base: no-such-base\n")
    with pytest.raises(ConfigError) as err:
        load_config(child)
    message = str(err.value)
    assert "child.yaml" in message and "'no-such-base' not found" in message
    assert "fcn32s_vgg16_voc-sbd" in message  # the shipped names
    _write(child, "base: [a, b]\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: base: expected a shipped config name"):
        load_config(child)
    # an error in a base's values names the chain it came through
    _write(tmp_path / "bad.yaml", "train: {lr: fast}\n")
    _write(child, "base: bad.yaml\n")
    with pytest.raises(ConfigError, match=r"child\.yaml \(base .*bad\.yaml\).*train\.lr"):
        load_config(child)


# --- the reference-solver (VOC) configs -----------------------------------------------------

#: The reference solver's base_lr per config (shelhamer/fcn.berkeleyvision.org, voc-*/
#: solver.prototxt), for Caffe VGG16 inputs in 0-255 with the loss summed over pixels.
VOC_REFERENCE = {
    "fcn32s_vgg16_voc-sbd": ("fcn32s", 1e-10, None, False, 100_000),
    "fcn16s_vgg16_voc-sbd": ("fcn16s", 1e-12, "runs/fcn32s_vgg16_voc-sbd", False, 100_000),
    "fcn8s_vgg16_voc-sbd": ("fcn8s", 1e-14, "runs/fcn16s_vgg16_voc-sbd", False, 100_000),
    "fcn8s-atonce_vgg16_voc-sbd": ("fcn8s", 1e-10, None, True, 300_000),
}
CAFFE_RATES = {1e-10, 1e-12, 1e-14}
#: The shared Caffe-range VGG16 file, relative to the shared folder (``../shared/README.md``).
VGG16_SHARED_WEIGHTS = Path("weights") / "vgg16-imagenet-features.safetensors"


def test_config_voc_staged_resolve_to_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """The staged VOC configs inherit from fcn32s and resolve to the reference's values."""
    monkeypatch.delenv("FCNSEG_SHARED", raising=False)
    monkeypatch.delenv("VOC_ROOT", raising=False)
    assert {n for n in shipped_configs() if "voc-sbd" in n} == set(VOC_REFERENCE)
    base = load_config("fcn32s_vgg16_voc-sbd")  # complete and trainable on its own
    for name, (model, lr, init_from, at_once, iterations) in VOC_REFERENCE.items():
        raw = yaml.safe_load(shipped_configs()[name].read_text())
        if name != "fcn32s_vgg16_voc-sbd":
            assert raw["base"] == "fcn32s_vgg16_voc-sbd" and len(raw) <= 5, name
        cfg = load_config(name)
        assert cfg.name == name and cfg.model.name == model
        assert (cfg.train.lr, getattr(cfg.model, "init_from", None)) == (lr, init_from)
        assert (getattr(cfg.model, "at_once", False), cfg.train.iterations) == (at_once, iterations)
        assert (cfg.model.backbone, cfg.model.mode) == ("vgg16", "caffe")
        assert cfg.data == base.data
        assert cfg.data.options == {"voc_root": "data/VOCdevkit/VOC2012"}  # ${…} expanded
        assert cfg.data.val_options == {
            "list_file": "data/VOCdevkit/VOC2012/ImageSets/Segmentation/seg11valid.txt"
        }
        t = cfg.train
        assert (t.optimizer, t.momentum, t.weight_decay, t.bias_lr_mult) == ("sgd", 0.99, 5e-4, 2.0)
        assert (t.schedule, t.loss_reduction, cfg.data.batch_size) == ("fixed", "sum", 1)


@pytest.mark.parametrize("name", sorted(VOC_REFERENCE))
def test_config_voc_fidelity(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Deconvolution of the reference is fixed (lr_mult 0), and its Caffe rates come with
    Caffe-range weights: the default backbone weights are the shared 0-255 VGG16 file, never
    torchvision's 0-1 ``imagenet`` release."""
    monkeypatch.delenv("FCNSEG_SHARED", raising=False)
    cfg = load_config(name)
    assert cfg.model.learnable_upsampling is False
    assert cfg.train.lr in CAFFE_RATES and cfg.train.loss_reduction == "sum"
    assert cfg.model.backbone_weights == "../shared/" + VGG16_SHARED_WEIGHTS.as_posix()
    monkeypatch.setenv("FCNSEG_SHARED", "/elsewhere")
    assert load_config(name).model.backbone_weights == "/elsewhere/" + (
        VGG16_SHARED_WEIGHTS.as_posix()
    )


def test_config_voc_weights_are_caffe_range(
    vgg16_shared_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file the VOC configs point at says (in its metadata) that it takes 0-255 inputs."""
    monkeypatch.setenv("FCNSEG_SHARED", str(vgg16_shared_weights.parents[1]))
    for name in VOC_REFERENCE:
        cfg = load_config(name)
        path = Path(cfg.model.backbone_weights)
        assert path.resolve() == vgg16_shared_weights.resolve()
        with safe_open(str(path), "pt") as f:
            preprocess = Preprocess.from_dict(f.metadata() or {})
        assert preprocess.input_range == 255.0 and preprocess.std == (1.0, 1.0, 1.0), name


def test_config_every_shipped_config_resolves_by_name() -> None:
    """``fcnseg train NAME`` finds every shipped config, with or without ``.yaml``."""
    for name, path in shipped_configs().items():
        assert resolve_config_path(name) == path
        assert resolve_config_path(f"{name}.yaml") == path


def test_scientific_notation_is_a_number(tmp_path: Path) -> None:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string; configs and --set take it as the number."""
    assert load_config("fcn8s_resnet18_synthetic", ["train.lr=1e-4"]).train.lr == 1e-4
    f = tmp_path / "c.yaml"
    f.write_text("base: fcn8s_resnet18_synthetic\ntrain: {lr: 5E-3, weight_decay: 2e-5}\n")
    cfg = load_config(f)
    assert cfg.train.lr == 5e-3 and cfg.train.weight_decay == 2e-5
    with pytest.raises(ConfigError, match=r"train\.lr: expected a number, got 'fast'"):
        load_config("fcn8s_resnet18_synthetic", ["train.lr=fast"])
    with pytest.raises(ConfigError, match=r"train\.iterations: expected an integer"):
        load_config("fcn8s_resnet18_synthetic", ["train.iterations=1e3"])
