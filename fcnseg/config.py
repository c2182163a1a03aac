"""Experiment configuration: typed sections read from YAML, with ``--set key=value`` overrides.

A config file names the experiment (model, data, training recipe); unknown keys and wrong types
are errors that name the key. Strings may reference environment variables as ``${VAR}`` or
``${VAR:-default}`` (e.g. ``${FCNSEG_SHARED:-../shared}/data/camvid``). A config may inherit
from another with ``base: NAME_OR_PATH`` and change only what differs (see :func:`load_config`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "load_config_data",
    "merge_config_data",
    "resolve_config_path",
    "shipped_configs",
]


class ConfigError(ValueError):
    """A config problem; the message names the key (or file) and what is expected."""


@dataclass
class ModelConfig:
    """Which model to build: ``name`` (a registered model, see :mod:`fcnseg.models.registry`)
    and its builder's keyword arguments, written flat in YAML beside ``name``.

    The builder's signature is the one source of truth: it says which keys exist, their types
    and defaults (``num_classes`` comes from the data). ``cfg.model.backbone`` reads an
    argument, its default when not given.
    """

    name: str = "fcn8s"
    #: The builder's keyword arguments given in the config (defaults are not stored).
    arguments: dict[str, Any] = field(default_factory=lambda: {"backbone": "vgg16"})

    def __getattr__(self, key: str) -> Any:
        arguments = self.__dict__.get("arguments")
        if arguments is None or key.startswith("_"):
            raise AttributeError(key)
        if key in arguments:
            return arguments[key]
        from fcnseg.models.registry import model_fields

        param = model_fields(self.name, include_init=True).get(key)
        if param is None or param.default is param.empty:
            raise AttributeError(f"model {self.name!r} has no argument {key!r}")
        return param.default

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.arguments}

    def spec(self, num_classes: int) -> dict[str, Any]:
        """The model's spec (name + every architecture field) for ``num_classes`` classes."""
        from fcnseg.models.registry import model_spec

        return model_spec(self.name, num_classes=num_classes, **self.arguments)

    @classmethod
    def from_mapping(cls, data: Any, prefix: str = "model") -> ModelConfig:
        """Type-check a flat ``model:`` mapping against the registered builder's signature."""
        from fcnseg.models.registry import MODELS, _builder, model_fields

        if not isinstance(data, dict):
            raise ConfigError(f"{prefix}: expected a mapping, got {data!r}")
        data = dict(data)
        name = _check_type(data.pop("name", "fcn8s"), str, f"{prefix}.name")
        if name not in MODELS:
            raise ConfigError(f"{prefix}.name = {name!r}; choose one of {sorted(MODELS)}")
        fields = model_fields(name, include_init=True)
        fields.pop("num_classes", None)  # from the data
        unknown = sorted(set(data) - set(fields), key=str)
        if unknown:
            raise ConfigError(
                f"{prefix}: {name} has no argument(s) {unknown}; its arguments are {sorted(fields)}"
            )
        hints = typing.get_type_hints(_builder(name))
        arguments = {k: _check_type(v, hints.get(k, Any), f"{prefix}.{k}") for k, v in data.items()}
        return cls(name, arguments)


@dataclass
class DataConfig:
    """Dataset, splits, augmentation and batching."""

    dataset: str = "synthetic"
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    #: Extra keyword arguments of the dataset class (e.g. ``meta: horse`` for folder pairs).
    options: dict[str, Any] = field(default_factory=dict)
    #: Validation data from another dataset/root/options (e.g. train on SBD, validate on VOC);
    #: null = the training ones.
    val_dataset: str | None = None
    val_root: str | None = None
    val_options: dict[str, Any] | None = None
    #: Resize every image (and mask, nearest) to [H, W] before augmentation; null keeps sizes.
    resize: list[int] | None = None
    #: Random crop [H, W] (padded with the mean / ignore when smaller); null = whole images.
    crop_size: list[int] | None = None
    scale_range: list[float] = field(default_factory=lambda: [1.0, 1.0])
    hflip: bool = True
    jitter: float = 0.0
    #: Elastic deformation (U-Net's augmentation): displacement σ in px on a grid × grid
    #: coarse grid; 0 = off.
    elastic_sigma: float = 0.0
    elastic_grid: int = 3
    batch_size: int = 1
    val_batch_size: int = 1
    num_workers: int = 0
    #: Decode the training set once into the training device's memory (at ``resize``) and
    #: augment whole batches there (random scale, flip, crop in one affine warp:
    #: :mod:`fcnseg.data.resident`); no per-sample jitter, elastic deformation or weight maps.
    resident: bool = False


@dataclass
class TrainConfig:
    """Optimisation recipe (defaults: the paper's FCN-VGG16 with batch 1 and summed loss)."""

    iterations: int = 1000
    #: "sgd" (the paper's, with momentum) or "adam" (handy for from-scratch training).
    optimizer: str = "sgd"
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    bias_lr_mult: float = 2.0
    #: "fixed", "poly" or "step".
    schedule: str = "fixed"
    poly_power: float = 0.9
    step_size: int = 1000
    step_gamma: float = 0.1
    warmup_iters: int = 0
    warmup_factor: float = 0.1
    #: Gradient accumulation: micro-batches per optimiser step.
    iter_size: int = 1
    #: "sum" (the paper's, with tiny learning rates) or "mean".
    loss_reduction: str = "mean"
    #: null, "median_frequency", or an explicit list of per-class weights.
    class_weights: str | list[float] | None = None
    #: The paper's loss sampling (§4.3): keep each pixel's loss with this probability.
    loss_sample_prob: float = 1.0
    #: U-Net's border weight map w_c + w0·exp(−(d1 + d2)²/2σ²) multiplying each pixel's loss.
    weight_map: bool = False
    weight_map_w0: float = 10.0
    weight_map_sigma: float = 5.0
    #: w_c: "balanced" (inverse class frequency, mean 1) or null (1 everywhere).
    weight_map_class_weights: str | None = "balanced"
    #: null, "bf16" (autocast on CUDA and CPU) or "fp16" (CUDA only; a no-op on CPU).
    amp: str | None = None
    channels_last: bool = False
    eval_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    #: Stop ("stop") or skip the step ("skip") when the loss is not finite.
    on_nonfinite: str = "stop"


@dataclass
class Config:
    """A whole experiment."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: Experiment name (shown in logs and stored in checkpoints).
    name: str = "experiment"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            **{
                f.name: dataclasses.asdict(getattr(self, f.name))
                if dataclasses.is_dataclass(getattr(self, f.name))
                else getattr(self, f.name)
                for f in dataclasses.fields(self)
                if f.name != "model"
            },
        }

    def dump(self, path: str | Path) -> None:
        """Write the resolved config as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | None = None) -> Config:
        """Build and type-check a config from a raw mapping (``source`` prefixes errors)."""
        try:
            return _build(cls, data, "config")
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}" if source else str(err)) from err


_ENV = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _expand(value: str) -> str:
    def sub(m: re.Match[str]) -> str:
        return os.environ.get(m.group(1), m.group(2) if m.group(2) is not None else "")

    return _ENV.sub(sub, value)


def _check_type(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check_type(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} is not {_type_name(hint)}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return _expand(value)
    raise ConfigError(f"{key}: unsupported type {hint}")  # pragma: no cover


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    names = ["null"] if type(None) in typing.get_args(hint) else []
    names += [getattr(a, "__name__", str(a)) for a in args]
    return " or ".join(names)


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names, key=str)  # YAML keys need not be strings
    if unknown:
        raise ConfigError(f"{prefix}: unknown key(s) {unknown}; valid keys are {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        path = f"{prefix}.{key}" if prefix != "config" else key
        if hint is ModelConfig:
            kwargs[key] = ModelConfig.from_mapping(value, path)
        elif dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, path)
        else:
            kwargs[key] = _check_type(value, hint, path)
    return cls(**kwargs)


def _validate(cfg: Config, source: str) -> Config:
    choices = {
        "train.schedule": (cfg.train.schedule, ("fixed", "poly", "step")),
        "train.optimizer": (cfg.train.optimizer, ("sgd", "adam")),
        "train.loss_reduction": (cfg.train.loss_reduction, ("mean", "sum")),
        "train.amp": (cfg.train.amp, (None, "bf16", "fp16")),
        "train.on_nonfinite": (cfg.train.on_nonfinite, ("stop", "skip")),
        "train.weight_map_class_weights": (cfg.train.weight_map_class_weights, ("balanced", None)),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{source}: {key} = {value!r}; choose one of {list(allowed)}")
    _validate_model(cfg.model, source)
    if isinstance(cfg.train.class_weights, str) and cfg.train.class_weights != "median_frequency":
        raise ConfigError(
            f"{source}: train.class_weights must be null, 'median_frequency' or a list of numbers"
        )
    t, d = cfg.train, cfg.data
    positive = {  # counts and periods (a period of 0 would divide by zero mid-training)
        "train.iterations": t.iterations,
        "train.iter_size": t.iter_size,
        "train.eval_every": t.eval_every,
        "train.checkpoint_every": t.checkpoint_every,
        "train.log_every": t.log_every,
        "train.step_size": t.step_size,
        "data.batch_size": d.batch_size,
        "data.val_batch_size": d.val_batch_size,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{source}: {key} must be >= 1, got {value}")
    non_negative = {
        "train.warmup_iters": t.warmup_iters,
        "data.num_workers": d.num_workers,
        "data.jitter": d.jitter,
        "data.elastic_sigma": d.elastic_sigma,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{source}: {key} must be >= 0, got {value}")
    if len(d.scale_range) != 2 or not 0 < d.scale_range[0] <= d.scale_range[1]:
        raise ConfigError(
            f"{source}: data.scale_range must be [min, max] with 0 < min <= max, got "
            f"{d.scale_range}"
        )
    if d.resident:
        unsupported = {
            "data.jitter": d.jitter,
            "data.elastic_sigma": d.elastic_sigma,
            "train.weight_map": t.weight_map,
        }
        for key, value in unsupported.items():
            if value:
                raise ConfigError(
                    f"{source}: {key} is a per-sample augmentation; data.resident trains on "
                    "batches augmented on the device: turn one of them off"
                )
    if d.elastic_grid < 2:
        raise ConfigError(f"{source}: data.elastic_grid must be >= 2, got {d.elastic_grid}")
    if not 0 < cfg.train.loss_sample_prob <= 1:
        raise ConfigError(f"{source}: train.loss_sample_prob must be in (0, 1]")
    for key in ("resize", "crop_size"):
        value = getattr(cfg.data, key)
        if value is not None and (len(value) != 2 or min(value) < 1):
            raise ConfigError(f"{source}: data.{key} must be [height, width], got {value}")
    return cfg


def _validate_model(model: ModelConfig, source: str) -> None:
    """Let the builder itself judge the architecture arguments (on the meta device: no memory,
    no weights read), so its checks are the only ones."""
    import torch

    from fcnseg.models.registry import build_model

    try:
        with torch.device("meta"):
            build_model(model.spec(num_classes=2))
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{source}: model: {err}") from err


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.lr=0.001")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: cannot parse {raw!r}: {err}") from err
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to a raw config mapping."""
    for item in overrides:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {k} is not a section")
        node[keys[-1]] = value
    return data


def shipped_configs() -> dict[str, Path]:
    """Configs shipped in ``fcnseg/configs`` by name (file stem)."""
    folder = resources.files("fcnseg") / "configs"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def resolve_config_path(path: str | Path) -> Path:
    """A config file path, or the name of a shipped config."""
    p = Path(path)
    if p.is_file():
        return p
    shipped = shipped_configs()
    name = p.name.removesuffix(".yaml")
    if name in shipped:
        return shipped[name]
    raise ConfigError(
        f"config {path} not found (neither a file nor a shipped config: {sorted(shipped)})"
    )


def _read_mapping(file: Path) -> dict[str, Any]:
    """One YAML file's top-level mapping (an empty file is an empty mapping)."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{file}: cannot read the config (a UTF-8 YAML file): {err}") from err
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: not valid YAML: {err}") from err
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{file}: expected a mapping at the top level")
    return loaded or {}


def _base_path(ref: Any, file: Path) -> Path:
    """The file that ``base: ref`` in ``file`` names: an existing file (absolute, or relative to
    ``file``'s folder; ``${VAR:-default}`` expanded), else a shipped config name."""
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(
            f"{file}: base: expected a shipped config name or a path to a YAML file, got {ref!r}"
        )
    expanded = _expand(ref.strip())
    candidate = Path(expanded).expanduser()
    if not candidate.is_absolute():
        candidate = file.parent / candidate
    if candidate.is_file():
        return candidate
    shipped = shipped_configs()
    name = expanded.removesuffix(".yaml")
    if name in shipped:
        return shipped[name]
    raise ConfigError(
        f"{file}: base {ref!r} not found: no file {candidate} and no shipped config of that "
        f"name (shipped: {sorted(shipped)})"
    )


def merge_config_data(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` deep-merged over ``base`` (new mappings; the inputs are left unchanged).

    Mappings merge key by key; any other value (lists included) replaces the base's. A null
    replaces too (``init_from: null`` clears the base's checkpoint); a null over a mapping
    removes it, so that section or option mapping falls back to its default.
    """
    merged = dict(base)
    for key, value in child.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            merged[key] = merge_config_data(old, value)
        elif isinstance(old, dict) and value is None:
            del merged[key]
        else:
            merged[key] = value
    return merged


def _expand_all(value: Any) -> Any:
    """``${VAR:-default}`` expanded in every string of a raw mapping, free-form ones included
    (``data.options``, ``data.val_options``), which typed fields alone would leave as written."""
    if isinstance(value, str):
        return _expand(value)
    if isinstance(value, dict):
        return {k: _expand_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_all(v) for v in value]
    return value


def _load_data(file: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], list[Path]]:
    """``file``'s mapping with its ``base`` chain resolved and merged (no ``base`` key left).

    Returns the mapping and the files it came from, ``file`` first, then its base, its base's
    base, and so on.
    """
    seen = [f.resolve() for f in chain]
    if file.resolve() in seen:
        cycle = " -> ".join(str(f) for f in (*chain, file))
        raise ConfigError(f"{chain[-1]}: config inheritance cycle: {cycle}")
    data = _read_mapping(file)
    if data.get("base") is None:
        data.pop("base", None)
        return data, [file]
    base_file = _base_path(data.pop("base"), file)
    base, files = _load_data(base_file, (*chain, file))
    return merge_config_data(base, data), [file, *files]


def load_config_data(path: str | Path) -> tuple[dict[str, Any], str]:
    """The raw mapping of a config (file or shipped name) with its ``base`` chain merged in.

    Returns ``(mapping, source)``; ``source`` names the file and its bases, for messages.
    """
    file = resolve_config_path(path)
    data, files = _load_data(file)
    source = str(file) + "".join(f" (base {f}" for f in files[1:]) + ")" * (len(files) - 1)
    return data, source


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (file or shipped name), apply ``--set`` overrides, validate.

    A config may say ``base: NAME_OR_PATH`` (a shipped config's name, or a YAML file: absolute
    or relative to the config's own folder): the base is loaded first (recursively), the
    config's own mapping is deep-merged over it (see :func:`merge_config_data`), then the
    ``--set`` overrides apply, then validation. The result has no ``base``: it is fully resolved.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        data, source = load_config_data(path)
    data = _expand_all(apply_overrides(data, overrides or []))
    try:
        cfg = Config.from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from err
    return _validate(cfg, source)
