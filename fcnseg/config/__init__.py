"""Experiment configuration: typed sections read from YAML, with ``--set key=value`` overrides.

A config file names the experiment (model, data, training recipe); unknown keys and wrong types
are errors that name the key. Strings may reference environment variables as ``${VAR}`` or
``${VAR:-default}`` (e.g. ``${FCNSEG_SHARED:-../shared}/data/camvid``). A config may inherit
from another with ``base: NAME_OR_PATH`` and change only what differs (see :func:`load_config`).

Modules: :mod:`~fcnseg.config.schema` (the sections), :mod:`~fcnseg.config.types` (value
checks), :mod:`~fcnseg.config.validate` (cross-key checks), :mod:`~fcnseg.config.loading`
(files, inheritance, overrides).
"""

from fcnseg.config.loading import (
    apply_overrides,
    config_from_data,
    load_config,
    load_config_data,
    merge_config_data,
    resolve_config_path,
    shipped_configs,
)
from fcnseg.config.schema import Config, DataConfig, ModelConfig, TrainConfig
from fcnseg.config.types import ConfigError

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_data",
    "load_config",
    "load_config_data",
    "merge_config_data",
    "resolve_config_path",
    "shipped_configs",
]
