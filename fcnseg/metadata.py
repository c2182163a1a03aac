"""The metadata fcnseg stores in model files (a checkpoint's safetensors header, an ONNX
export's properties): every value is JSON, parsed and never evaluated, and the keys every
reader relies on are checked, so an altered or hostile file is one clear error naming the file
and the key, never a traceback or a silent misreading."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["parse_metadata"]


def parse_metadata(
    path: str | Path, raw: Mapping[str, str], keys: Iterable[str], *, prefix: str = ""
) -> dict[str, Any]:
    """``{key without prefix: parsed value}`` for ``keys`` of ``raw``; raises ``ValueError``
    naming ``path`` and the key for a value that is not JSON, and for ``classes``/``palette``
    that are not a list of names / of RGB triples."""
    meta: dict[str, Any] = {}
    for key in keys:
        try:
            meta[key.removeprefix(prefix)] = json.loads(raw[key])
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}: metadata {key} is not valid JSON ({err}); the file was altered or "
                "not written by fcnseg"
            ) from err
    classes, palette = meta.get("classes", []), meta.get("palette", [])
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"{path}: metadata {prefix}classes is not a list of class names")
    if not (isinstance(palette, list) and all(map(_is_rgb, palette))):
        raise ValueError(f"{path}: metadata {prefix}palette is not a list of RGB triples")
    return meta


def _is_rgb(colour: Any) -> bool:
    return (
        isinstance(colour, list)
        and len(colour) == 3
        and all(isinstance(v, int) and 0 <= v <= 255 for v in colour)
    )
