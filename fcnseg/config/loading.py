"""Reading configs: YAML files or shipped names, ``base:`` inheritance, ``--set`` overrides."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fcnseg.choices import unknown_choice
from fcnseg.config.schema import Config
from fcnseg.config.types import ConfigError, expand
from fcnseg.config.validate import validate

__all__ = [
    "apply_overrides",
    "config_from_data",
    "load_config",
    "load_config_data",
    "merge_config_data",
    "resolve_config_path",
    "shipped_configs",
]


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
    if p.is_dir():
        raise ConfigError(f"config {path} is a folder; give a YAML file or a shipped config name")
    shipped_name = unknown_choice("shipped config", name, sorted(shipped))
    raise ConfigError(f"config {path} not found: no such file or data folder, and {shipped_name}")


def _read_mapping(file: Path) -> dict[str, Any]:
    """One YAML file's top-level mapping (an empty file is an empty mapping)."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{file}: cannot read the config (a UTF-8 YAML file): {err}") from err
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{file}: not valid YAML: {problem}{where}") from err
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
    expanded = expand(ref.strip())
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
        return expand(value)
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
    return config_from_data(data, overrides, source)


def config_from_data(
    data: dict[str, Any], overrides: list[str] | None = None, source: str = "config"
) -> Config:
    """A raw config mapping (no ``base``) with ``--set`` overrides applied, validated; errors
    are prefixed with ``source``."""
    data = _expand_all(apply_overrides(data, overrides or []))
    try:
        cfg = Config.from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from err
    return validate(cfg, source)
