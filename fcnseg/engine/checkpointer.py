"""A run's checkpoints: save the model (+ training state), resume exactly where it stopped.

What a resumable checkpoint holds beside the weights: the optimiser, scheduler and grad-scaler
states, every RNG (torch, CUDA, Python, NumPy), the iteration, the best mean IU so far and the
latest metrics. File formats and atomicity live in :mod:`fcnseg.checkpoint`; this module
decides what goes in and checks that a resumed run is the same model.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fcnseg import checkpoint as ckpt
from fcnseg.engine.distributed import DistInfo, barrier
from fcnseg.models import spec_differences

__all__ = ["Checkpointer", "ResumedState", "rng_state", "set_rng_state"]

log = logging.getLogger("fcnseg")


def rng_state() -> dict[str, Any]:
    """Every random generator's state (torch, Python, NumPy, and CUDA when present)."""
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class ResumedState:
    """Where a resumed run continues."""

    iteration: int
    best_mean_iu: float
    metrics: dict[str, Any]


class Checkpointer:
    """Writes ``checkpoints/{last,best}.safetensors`` (+ ``last.state.pt``) of one run.

    ``meta`` is what travels with the weights (model spec, classes, palette, ignore index,
    config). Only the main process writes.
    """

    def __init__(self, run_dir: Path, meta: dict[str, Any], dist: DistInfo) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.meta = meta
        self.dist = dist
        #: (file, iteration) of the last resumable checkpoint on disk.
        self.last: tuple[Path, int] | None = None

    def last_good(self) -> str:
        """The last resumable checkpoint, for error messages."""
        if self.last is None:
            return "none yet"
        path, iteration = self.last
        return f"{path} (iteration {iteration})"

    def clean_start(self) -> None:
        """A new run: drop temporary files an attempt killed before its first save left."""
        if self.dist.is_main and self.dir.is_dir():
            ckpt.remove_temporary(self.dir)

    def save(
        self,
        name: str,
        net: nn.Module,
        *,
        iteration: int,
        metrics: dict[str, Any],
        state: dict[str, Any] | None = None,
    ) -> None:
        """Write ``NAME.safetensors`` (with ``state``: the resumable pair, see
        :func:`fcnseg.checkpoint.save_resumable`).

        Raises :class:`FloatingPointError` instead of saving weights holding NaN/inf, and
        :class:`~fcnseg.checkpoint.CheckpointWriteError` when the disk refuses the write;
        either way the previous checkpoint stays as it was.
        """
        if not self.dist.is_main:
            return
        path = self.dir / f"{name}.safetensors"
        bad = ckpt.nonfinite_tensors(net.state_dict())
        if bad:
            raise FloatingPointError(
                f"the weights are not finite after iteration {iteration} ({bad[0]} holds "
                f"NaN/inf); refusing to overwrite {path}. Last good checkpoint: "
                f"{self.last_good()}; start a new run from it with a lower train.lr "
                "(--set model.init_from=THAT_FILE -o NEW_RUN)"
            )
        try:
            if state is None:
                ckpt.save_checkpoint(path, net, metrics=metrics, iteration=iteration, **self.meta)
                return
            full = {"iteration": iteration, "rng": rng_state(), "metrics": metrics, **state}
            ckpt.save_resumable(self.dir, name, net, full, metrics=metrics, **self.meta)
        except ckpt.CheckpointWriteError as err:
            raise ckpt.CheckpointWriteError(
                f"{err} (iteration {iteration}; last good checkpoint: {self.last_good()})"
            ) from err
        self.last = (path, iteration)

    def read_last(self) -> tuple[ckpt.Checkpoint, dict[str, Any]]:
        """The resumable pair ``last`` (weights, training state), after completing or
        discarding what a killed save left (main process; the others wait)."""
        if self.dist.is_main:
            ckpt.repair_resumable(self.dir, "last")
        barrier()
        return ckpt.load_resumable(self.dir, "last")

    def resume(
        self,
        net: nn.Module,
        device: torch.device,
        stateful: dict[str, Any],
        hint: str,
        last: tuple[ckpt.Checkpoint, dict[str, Any]] | None = None,
    ) -> ResumedState:
        """Load ``last`` (:meth:`read_last` when not given) into ``net`` and each object of
        ``stateful`` (name → object with ``load_state_dict``), restore the RNGs; the stored
        model spec must equal this run's in every field."""
        loaded, state = last if last is not None else self.read_last()
        labels = ("checkpoint", "this run")
        diffs = spec_differences(loaded.model, self.meta["model_spec"], labels=labels)
        if diffs:
            raise ckpt.CheckpointError(
                f"--resume: {loaded.path} does not match the configured model "
                f"({'; '.join(diffs)}); {hint}"
            )
        try:
            net.load_state_dict({k: v.to(device) for k, v in loaded.state_dict.items()})
        except RuntimeError as err:
            raise ckpt.CheckpointError(
                f"--resume: {loaded.path} does not fit the model: {err}"
            ) from err
        for key, obj in stateful.items():
            obj.load_state_dict(state[key])
        set_rng_state(state["rng"])
        self.last = (loaded.path, state["iteration"])
        return ResumedState(state["iteration"], state["best_mean_iu"], state.get("metrics", {}))
