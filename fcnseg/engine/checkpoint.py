"""Checkpoints: safetensors weights with metadata, plus a small training-state file.

``NAME.safetensors`` holds the model weights and, in its metadata, everything needed to use them
without the config file: the model spec, class names, palette, normalisation, the config and the
metrics at save time. ``NAME.state.pt`` holds what resuming needs (optimiser, scheduler, scaler,
RNG states, iteration). Both are written atomically: temporary file, fsync, rename.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

from fcnseg.weights import Preprocess, read_state_dict

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "atomic_write",
    "load_checkpoint",
    "load_state",
    "resolve_checkpoint",
    "save_checkpoint",
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass
class Checkpoint:
    """A loaded checkpoint: weights and the metadata that travels with them."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    model: dict[str, Any]
    classes: list[str]
    palette: list[list[int]]
    ignore_index: int
    preprocess: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    iteration: int = 0

    def build_model(self) -> torch.nn.Module:
        """The FCN described by the metadata, with these weights loaded (strictly)."""
        from fcnseg.models import build_model

        spec = dict(self.model)
        name = spec.pop("name")
        # Built on the meta device (no random init to overwrite), then given these tensors.
        with torch.device("meta"):
            model = build_model(name, **spec)
        try:
            model.load_state_dict(self.state_dict, assign=True)
        except RuntimeError as err:
            raise CheckpointError(f"{self.path}: weights do not fit the model: {err}") from err
        model.preprocess = Preprocess.from_dict(self.preprocess)
        model.backbone.preprocess = model.preprocess
        return model


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    *,
    model_spec: dict[str, Any],
    classes: list[str],
    palette: list[list[int]],
    ignore_index: int,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    iteration: int = 0,
) -> Path:
    """Write ``model``'s weights and metadata to ``path`` (a ``.safetensors`` file)."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": "fcnseg-checkpoint-1",
        "model": model_spec,
        "classes": classes,
        "palette": palette,
        "ignore_index": ignore_index,
        "preprocess": model.preprocess.to_dict(),
        "config": config or {},
        "metrics": metrics or {},
        "iteration": iteration,
    }
    metadata = {k: json.dumps(v) for k, v in meta.items()}
    path = Path(path)
    atomic_write(path, safetensors_bytes(tensors, metadata=metadata))
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its best checkpoint, else its last)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (p / "checkpoints" / name).is_file():
                return p / "checkpoints" / name
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p} is a directory without best/last checkpoints")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    return p


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (file or run directory)."""
    file = resolve_checkpoint(path)
    try:
        state, raw = read_state_dict(file)
    except ValueError as err:
        raise CheckpointError(f"{file}: unreadable checkpoint ({err})") from err
    if raw.get("format") != json.dumps("fcnseg-checkpoint-1"):
        raise CheckpointError(
            f"{file} is not an fcnseg checkpoint (no fcnseg metadata); for backbone weights use "
            "backbone_weights=, for the reference's Caffe weights fcnseg.models.caffe"
        )
    meta = {k: json.loads(v) for k, v in raw.items()}
    return Checkpoint(
        path=file,
        state_dict=state,
        model=meta["model"],
        classes=meta["classes"],
        palette=meta["palette"],
        ignore_index=meta["ignore_index"],
        preprocess=meta["preprocess"],
        config=meta.get("config", {}),
        metrics=meta.get("metrics", {}),
        iteration=meta.get("iteration", 0),
    )


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write the training state (``torch.save`` format) atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a training-state file written by :func:`save_state`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state {path} does not exist (nothing to resume)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # corrupt pickles raise many types
        raise CheckpointError(f"{path}: unreadable training state ({err})") from err
