"""Checkpoints: safetensors weights with metadata, plus a small training-state file.

``NAME.safetensors`` holds the model weights and, in its metadata, everything needed to use them
without the config file: the model spec, class names, palette, normalisation, the config and the
metrics at save time. ``NAME.state.pt`` holds what resuming needs (optimiser, scheduler, scaler,
RNG states, iteration). Both are written atomically: temporary file, fsync, rename.

A resumable checkpoint is a *pair* of files, committed in three steps so that a kill at any
moment leaves a consistent pair on disk (:func:`save_resumable`): the weights go to
``NAME.next.safetensors``, then the state file is replaced (the commit point), then the weights
are renamed over ``NAME.safetensors``. :func:`repair_resumable` completes a commit interrupted
before that last rename and removes the leftovers of writes that never committed.

Weights with NaN/inf values are never written, and a failed write (disk full, unwritable
directory) raises :class:`CheckpointWriteError` naming the path, leaving the previous file intact.

For fault-injection tests only, ``FCNSEG_TEST_CHECKPOINT_DELAY=SECONDS`` pauses every write just
before its rename, and a resumable save between its commit and its final rename, so that a test
can kill the process in the middle of a checkpoint (``tools/kill_soak.py``).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import pickle
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from fcnseg.filekind import file_kind, not_a_checkpoint
from fcnseg.metadata import parse_metadata
from fcnseg.weights import Preprocess, read_state_dict

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointWriteError",
    "atomic_write",
    "load_checkpoint",
    "load_resumable",
    "load_state",
    "nonfinite_tensors",
    "remove_temporary",
    "repair_resumable",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_resumable",
]

log = logging.getLogger("fcnseg")

#: Environment variable of the fault-injection pause (seconds), for kill tests only.
TEST_DELAY_ENV = "FCNSEG_TEST_CHECKPOINT_DELAY"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint that could not be written (disk full, unwritable directory, ...)."""


def _test_pause() -> None:
    delay = float(os.environ.get(TEST_DELAY_ENV) or 0)
    if delay > 0:
        time.sleep(delay)


def _write_error(
    path: Path,
    err: OSError,
    outcome: str = "The previous checkpoint there, if any, is left intact",
) -> CheckpointWriteError:
    reason = err.strerror or str(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = f"free space on the disk holding {path.parent} (or train into another -o)"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = f"make {path.parent} writable (or train into another -o)"
    else:
        advice = f"check {path.parent}"
    return CheckpointWriteError(
        f"cannot write checkpoint {path}: {reason} (errno {err.errno}); {advice}, then continue "
        f"with --resume. {outcome}"
    )


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    Raises :class:`CheckpointWriteError` (naming ``path``) when the disk is full or the directory
    is not writable; the old file is then untouched and no temporary file is left behind.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _test_pause()
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as err:
        raise _write_error(path, err) from err
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Read once at import: os.umask can only be read by setting it, which races with other threads.
_UMASK = _read_umask()


def remove_temporary(directory: str | Path) -> list[Path]:
    """Delete the temporary files of writes that were killed before their rename."""
    removed = []
    for tmp in Path(directory).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def nonfinite_tensors(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or inf values."""
    return [
        k for k, v in state_dict.items() if v.is_floating_point() and not bool(v.isfinite().all())
    ]


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
    #: The training's scale policy (:func:`fcnseg.inference.scale.train_scale`); ``None`` in
    #: checkpoints written before it was recorded.
    train_scale: dict[str, Any] | None = None

    def build_model(self) -> torch.nn.Module:
        """The FCN described by the metadata, with these weights loaded (strictly)."""
        from fcnseg.models.registry import build_model

        # Built on the meta device (no random init to overwrite), then given these tensors.
        with torch.device("meta"):
            model = build_model(self.model)
        try:
            model.load_state_dict(self.state_dict, assign=True)
        except RuntimeError as err:
            raise CheckpointError(f"{self.path}: weights do not fit the model: {err}") from err
        model.set_preprocess(Preprocess.from_dict(self.preprocess))
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
    train_scale: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and metadata to ``path`` (a ``.safetensors`` file);
    ``train_scale``: the scale policy inference follows (:mod:`fcnseg.inference.scale`).

    Refuses (:class:`CheckpointError`) weights holding NaN/inf: a diverged model never replaces
    a good checkpoint.
    """
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    bad = nonfinite_tensors(tensors)
    if bad:
        raise CheckpointError(
            f"refusing to write {path}: {len(bad)} tensor(s) hold NaN/inf values ({bad[0]}, ...);"
            " the previous checkpoint there, if any, is left intact"
        )
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
    if train_scale is not None:
        meta["train_scale"] = train_scale
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
    kind = file_kind(file)  # tell what else the file is, never unpickle it
    if kind != "safetensors" and not (kind == "unknown" and file.suffix == ".safetensors"):
        raise CheckpointError(not_a_checkpoint(file, kind))
    if kind == "safetensors" and file.suffix != ".safetensors":
        raise CheckpointError(f"{file} is a safetensors file: name it {file.stem}.safetensors")
    try:
        state, raw = read_state_dict(file)
    except ValueError as err:
        problem = _truncation(file)
        if problem:
            raise CheckpointError(
                f"{file} is truncated ({problem}): an interrupted copy or a full disk? Restore "
                "the file or use another checkpoint"
            ) from err
        cause = err.__cause__ or err
        raise CheckpointError(f"{file} is not a readable checkpoint ({cause})") from err
    if raw.get("format") != json.dumps("fcnseg-checkpoint-1"):
        raise CheckpointError(
            f"{file} is not an fcnseg checkpoint (no fcnseg metadata); for backbone weights use "
            "backbone_weights=, for the reference's Caffe weights fcnseg.models.caffe"
        )
    required = ("model", "classes", "palette", "ignore_index", "preprocess")
    missing = [k for k in required if k not in raw]
    if missing:
        raise CheckpointError(f"{file}: fcnseg metadata lacks {', '.join(missing)}; the file was "
                              "altered: restore it or use another checkpoint")  # fmt: skip
    try:
        meta = parse_metadata(file, raw, raw.keys())  # JSON, never evaluated
    except ValueError as err:
        raise CheckpointError(str(err)) from err
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
        train_scale=meta.get("train_scale"),
    )


def _truncation(file: Path) -> str | None:
    """How a ``.safetensors`` file falls short of the size its header declares, if it does."""
    try:
        size = file.stat().st_size
        with file.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{size} bytes, not even the 8-byte header length"
            (n,) = struct.unpack("<Q", head)
            if n > 100_000_000:
                return None  # not a safetensors header at all
            header = f.read(n)
        if len(header) < n:
            return f"{size} bytes, the header alone needs {8 + n}"
        spans = [v["data_offsets"][1] for k, v in json.loads(header).items() if k != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    expected = 8 + n + max(spans, default=0)
    return f"{size} bytes, the header expects {expected}" if size < expected else None


def _metadata_iteration(path: Path) -> int | None:
    """The iteration recorded in a checkpoint's metadata (None if missing or unreadable)."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return int(json.loads(meta["iteration"]))
    except Exception:  # missing, truncated, foreign: "no usable iteration"
        return None


def save_resumable(
    directory: str | Path,
    name: str,
    model: torch.nn.Module,
    state: dict[str, Any],
    **meta: Any,
) -> Path:
    """Write the pair ``NAME.safetensors`` + ``NAME.state.pt`` so that a kill at any moment
    leaves a consistent pair (see the module docstring); ``meta`` as :func:`save_checkpoint`.

    The commit point is the replacement of the state file. On a write error nothing changes
    on disk (the pending weights are removed) and :class:`CheckpointWriteError` is raised.
    """
    directory = Path(directory)
    weights = directory / f"{name}.safetensors"
    pending = directory / f"{name}.next.safetensors"
    committed = False
    try:
        save_checkpoint(pending, model, iteration=state["iteration"], **meta)
        save_state(directory / f"{name}.state.pt", state)
        committed = True
        _test_pause()
        os.replace(pending, weights)
        _fsync_dir(directory)
    except CheckpointWriteError as err:  # name the checkpoint, not its pending file
        cause = err.__cause__
        raise (_write_error(weights, cause) if isinstance(cause, OSError) else err) from cause
    except OSError as err:
        raise _write_error(
            weights,
            err,
            f"The checkpoint of iteration {state['iteration']} is committed; --resume completes it",
        ) from err
    finally:
        if not committed:
            pending.unlink(missing_ok=True)
    return weights


def repair_resumable(directory: str | Path, name: str = "last") -> None:
    """Finish what killed saves of :func:`save_resumable` left in ``directory``: complete a save
    killed between its commit and its final rename, delete the pending weights of one killed
    before its commit and the temporary files of interrupted writes. Run it in one process only.
    """
    directory = Path(directory)
    weights = directory / f"{name}.safetensors"
    pending = directory / f"{name}.next.safetensors"
    for tmp in remove_temporary(directory):
        log.info("removed %s (a write that was interrupted)", tmp)
    if not pending.is_file():
        return
    iteration = load_state(directory / f"{name}.state.pt").get("iteration")
    if _metadata_iteration(weights) == iteration:
        pending.unlink()  # written before a commit that never happened
    elif _metadata_iteration(pending) == iteration:
        os.replace(pending, weights)  # committed; the rename was interrupted
        _fsync_dir(directory)
        log.info("completed the interrupted checkpoint %s (iteration %s)", weights, iteration)


def load_resumable(directory: str | Path, name: str = "last") -> tuple[Checkpoint, dict[str, Any]]:
    """Read the pair written by :func:`save_resumable`: ``(weights, training state)``, after
    :func:`repair_resumable`. Raises :class:`CheckpointError` naming the file when a file is
    missing or unreadable, or when the two files disagree.
    """
    directory = Path(directory)
    weights = directory / f"{name}.safetensors"
    state = load_state(directory / f"{name}.state.pt")
    iteration = state.get("iteration")
    loaded = load_checkpoint(weights)
    if loaded.iteration != iteration:
        raise CheckpointError(
            f"{weights} (iteration {loaded.iteration}) and {name}.state.pt (iteration "
            f"{iteration}) disagree; the run directory was modified"
        )
    return loaded, state


def _numpy_state_types() -> list[Any]:
    """What unpickling ``numpy.random.get_state()`` builds: an ndarray of uint32."""
    import numpy as np

    multiarray = getattr(np, "_core", None) or np.core  # numpy 2 renamed core to _core
    return [multiarray.multiarray._reconstruct, np.ndarray, np.dtype,
            type(np.dtype(np.uint32))]  # fmt: skip


_STATE_TYPES = _numpy_state_types()


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write the training state (``torch.save`` format) atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a training-state file written by :func:`save_state`, never running code from it:
    ``torch.load(weights_only=True)`` with exactly the types a state holds beyond tensors and
    plain values allowed (numpy's RNG state: an array of one dtype). A file that needs anything
    else — a crafted pickle — is refused before any of it is built."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state {path} does not exist (nothing to resume)")
    try:
        if hasattr(torch.serialization, "safe_globals"):  # torch ≥ 2.5: scoped to this load
            with torch.serialization.safe_globals(_STATE_TYPES):
                return torch.load(path, map_location="cpu", weights_only=True)
        torch.serialization.add_safe_globals(_STATE_TYPES)  # torch 2.4: process-wide
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():  # a damaged pickle, not a refused one
            raise CheckpointError(
                f"{path} is not a readable training state, truncated or corrupt ({err}); "
                "restore it or start a new run"
            ) from err
        raise CheckpointError(
            f"{path} asks to build objects a training state never holds, so it was not "
            f"loaded (only tensors, numbers, strings and numpy's RNG state are): "
            f"{str(err).splitlines()[0][:200]}; use a run directory fcnseg wrote"
        ) from err
    except Exception as err:  # corrupt pickles raise many types
        raise CheckpointError(
            f"{path} is not a readable training state, truncated or corrupt ({err}); restore it "
            "or start a new run"
        ) from err
