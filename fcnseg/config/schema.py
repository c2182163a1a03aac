"""The config's sections as typed dataclasses: model, data, train (and the experiment name)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fcnseg.choices import did_you_mean, unknown_choice
from fcnseg.config.types import ConfigError, check_type

__all__ = ["Config", "DataConfig", "ModelConfig", "TrainConfig"]


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
        from fcnseg.models.registry import MODELS, model_fields, model_hints

        if not isinstance(data, dict):
            raise ConfigError(f"{prefix}: expected a mapping, got {data!r}")
        data = dict(data)
        name = check_type(data.pop("name", "fcn8s"), str, f"{prefix}.name")
        if name not in MODELS:
            raise ConfigError(f"{prefix}.name: {unknown_choice('model', name, sorted(MODELS))}")
        fields = model_fields(name, include_init=True)
        fields.setdefault("init_from", None)  # any model: loaded by fcnseg.engine.build
        if "num_classes" in data and "num_classes" in fields:
            raise ConfigError(
                f"{prefix}.num_classes: the number of classes comes from the data set (its class "
                "names, e.g. a FolderPairs meta's 'classes'); remove this key"
            )
        fields.pop("num_classes", None)  # from the data
        unknown = sorted(set(data) - set(fields), key=str)
        if unknown:
            raise ConfigError(
                f"{prefix}: {name} has no argument(s) {unknown}; "
                f"{did_you_mean(unknown[0], fields)}its arguments are {sorted(fields)}"
            )
        hints = model_hints(name)
        arguments = {k: check_type(v, hints.get(k, Any), f"{prefix}.{k}") for k, v in data.items()}
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
    #: Resize every image (and mask, nearest-exact) to [H, W] before augmentation; null keeps sizes.
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
    #: null, "median_frequency", "sqrt_median_frequency" (its square root: milder on rare
    #: classes) or an explicit list of per-class weights.
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


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names, key=str)  # YAML keys need not be strings
    if unknown:
        raise ConfigError(
            f"{prefix}: unknown key(s) {unknown}; {did_you_mean(unknown[0], names)}"
            f"valid keys are {sorted(names)}"
        )
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        path = f"{prefix}.{key}" if prefix != "config" else key
        if hint is ModelConfig:
            kwargs[key] = ModelConfig.from_mapping(value, path)
        elif dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, path)
        else:
            kwargs[key] = check_type(value, hint, path)
    return cls(**kwargs)
