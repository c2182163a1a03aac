"""Models by name: ``register_model`` adds a builder, ``build_model(spec)`` builds one.

A model's *spec* is everything that decides its architecture: its name and every keyword
argument of its builder except those that only say how to initialise the weights
(:data:`INIT_ARGUMENTS`). The builder's signature is the one source of truth for those fields
and their defaults: configs, checkpoints, resume checks and ``init_from`` checks all derive
from it (:func:`model_fields`, :func:`model_spec`).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from fcnseg.choices import did_you_mean, unknown_choice

__all__ = [
    "INIT_ARGUMENTS",
    "MODELS",
    "build_model",
    "model_fields",
    "model_hints",
    "model_spec",
    "register_model",
    "spec_differences",
]

#: Builder arguments that choose initial weights, not the architecture (not part of a spec).
INIT_ARGUMENTS = ("backbone_weights", "init_from")

#: Registered builders by name.
MODELS: dict[str, Callable[..., nn.Module]] = {}

B = TypeVar("B", bound=Callable[..., nn.Module])


def register_model(name: str) -> Callable[[B], B]:
    """Decorator: make a builder (keyword-only arguments, ``num_classes`` among them) known
    by ``name`` to configs, checkpoints and the command line."""

    def add(builder: B) -> B:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = builder
        return builder

    return add


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in MODELS:
        raise ValueError(unknown_choice("model", name, sorted(MODELS)))
    return MODELS[name]


def model_fields(name: str, *, include_init: bool = False) -> dict[str, inspect.Parameter]:
    """The builder's keyword arguments by name (with their defaults and annotations); the
    initialisation-only ones (:data:`INIT_ARGUMENTS`) only with ``include_init``."""
    params = inspect.signature(_builder(name)).parameters
    return {
        k: p
        for k, p in params.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        and (include_init or k not in INIT_ARGUMENTS)
    }


def model_hints(name: str) -> dict[str, Any]:
    """The builder's argument types (``Any`` where an annotation cannot be resolved, e.g. a
    name local to the function that defined the builder)."""
    builder = _builder(name)
    try:
        return typing.get_type_hints(builder)
    except NameError:
        hints: dict[str, Any] = {}
        for key, param in inspect.signature(builder).parameters.items():
            try:
                hints[key] = typing.get_type_hints(_Probe(param.annotation, builder))["x"]
            except NameError:
                hints[key] = Any
        return hints


class _Probe:
    """One annotation to resolve in a builder's module namespace."""

    def __init__(self, annotation: Any, builder: Callable[..., Any]) -> None:
        self.__annotations__ = {"x": annotation}
        self.__globals__ = getattr(builder, "__globals__", {})
        self.__module__ = builder.__module__


def model_spec(name: str, **arguments: Any) -> dict[str, Any]:
    """``{"name": name, field: value, ...}`` for every architecture field of the builder,
    defaults filled in; initialisation arguments are dropped, unknown ones are an error."""
    fields = model_fields(name)
    unknown = sorted(set(arguments) - set(fields) - set(INIT_ARGUMENTS))
    if unknown:
        known = sorted(model_fields(name, include_init=True))
        raise ValueError(
            f"{name} takes no argument(s) {unknown}; {did_you_mean(unknown[0], known)}"
            f"its arguments are {known}"
        )
    spec: dict[str, Any] = {"name": name}
    for key, param in fields.items():
        if key in arguments:
            spec[key] = arguments[key]
        elif param.default is not inspect.Parameter.empty:
            spec[key] = param.default
        else:
            raise ValueError(f"{name} needs the argument {key!r}")
    return spec


def spec_differences(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    *,
    ignore: tuple[str, ...] = (),
    labels: tuple[str, str] = ("", ""),
) -> list[str]:
    """``"field: A a_value, B b_value"`` (``labels`` A, B; plain ``"field: a_value vs b_value"``
    without) for every field of two specs that differs, comparing
    both with their builders' defaults filled in (older checkpoints may lack new fields); a
    field only one of the two models has is skipped (e.g. ``at_once`` of FCN-8s vs FCN-16s)."""
    full = [_complete(s) for s in (a, b)]
    keys = [k for k in full[0] if k in full[1] and k not in ignore]
    la, lb = labels
    return [
        f"{k}: {la} {full[0][k]!r}, {lb} {full[1][k]!r}"
        if la
        else f"{k}: {full[0][k]!r} vs {full[1][k]!r}"
        for k in keys
        if full[0][k] != full[1][k]
    ]


def _complete(spec: Mapping[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in spec.items() if k != "name"}
    name = spec["name"]
    if name not in MODELS:
        return dict(spec)
    known = model_fields(name)
    return model_spec(name, **{k: v for k, v in rest.items() if k in known}) | {
        k: v for k, v in rest.items() if k not in known
    }


def build_model(spec: Mapping[str, Any] | str | None = None, /, **arguments: Any) -> nn.Module:
    """Build a registered model from a spec (``{"name": ..., field: value}``) or a name, with
    further keyword arguments (e.g. ``backbone_weights=``); ``build_model(**spec)`` works too."""
    if spec is None:
        spec = {"name": arguments.pop("name")} if "name" in arguments else {}
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = dict(spec)
    if "name" not in spec:
        raise ValueError(f"a model spec needs a 'name' (one of {sorted(MODELS)}), got {spec}")
    name = spec.pop("name")
    kwargs = {**spec, **arguments}
    model_spec(name, **kwargs)  # unknown or missing arguments: a clear error
    return _builder(name)(**kwargs)
