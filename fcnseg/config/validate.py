"""Checks across keys that types alone cannot express (choices, ranges, combinations); the
model's own arguments are judged by its builder."""

from __future__ import annotations

from fcnseg.choices import unknown_choice
from fcnseg.config.schema import Config, ModelConfig
from fcnseg.config.types import ConfigError
from fcnseg.losses import CLASS_WEIGHTINGS

__all__ = ["validate"]


def validate(cfg: Config, source: str) -> Config:
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
            what = unknown_choice(
                key.split(".")[-1], value, ["null" if a is None else a for a in allowed]
            )
            raise ConfigError(f"{source}: {key}: {what}")
    _validate_model(cfg.model, source)
    if isinstance(cfg.train.class_weights, str) and cfg.train.class_weights not in CLASS_WEIGHTINGS:
        what = unknown_choice("class weighting", cfg.train.class_weights, sorted(CLASS_WEIGHTINGS))
        raise ConfigError(f"{source}: train.class_weights: {what} (or null, or a list of numbers)")
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
