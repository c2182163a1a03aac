"""Iteration-based training with exact resume, periodic evaluation and checkpoints.

The Trainer holds the loop and its signal handling; what it trains is built from the config by
:mod:`fcnseg.engine.build`, checkpoints and resume are :mod:`fcnseg.engine.checkpointer`'s, the
run's log is :mod:`fcnseg.engine.runlog`'s and evaluation :mod:`fcnseg.engine.evaluate`'s.

Interruptions: SIGINT (Ctrl-C) and SIGTERM finish the current iteration, save a checkpoint and
raise :class:`TrainingInterrupted` (a second signal quits at once, leaving the previous
checkpoint); a SIGKILL loses at most the iterations since the last checkpoint, whose files are
never half-written. A non-finite loss or gradient stops the run (``train.on_nonfinite: stop``)
or skips the step (``skip``); NaN weights are never saved.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fcnseg.checkpoint import Checkpoint
from fcnseg.config import Config
from fcnseg.data.label_check import check_labels
from fcnseg.data.transforms import PadCollate, fill_from_preprocess
from fcnseg.engine import build, resume
from fcnseg.engine.checkpointer import Checkpointer
from fcnseg.engine.distributed import barrier, setup
from fcnseg.engine.evaluate import evaluate, write_report
from fcnseg.engine.interrupt import StopRequests
from fcnseg.engine.resume import Change
from fcnseg.engine.runlog import VAL_FIELDS, RunLog
from fcnseg.forward import forward
from fcnseg.inference.scale import train_scale
from fcnseg.metrics import absent_note

__all__ = ["TrainResult", "Trainer", "TrainingInterrupted"]

log = logging.getLogger("fcnseg")


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    run_dir: Path
    iteration: int
    metrics: dict[str, Any]
    best_mean_iu: float
    #: Optimiser steps skipped for a non-finite loss or gradient (``train.on_nonfinite: skip``).
    skipped_steps: int = 0


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training after ``iteration``, with a checkpoint saved there."""

    def __init__(self, signum: int, iteration: int, checkpoint: Path) -> None:
        self.signum = signum
        self.iteration = iteration
        self.checkpoint = checkpoint
        super().__init__(
            f"{signal.Signals(signum).name} received: stopped after iteration {iteration} and "
            f"saved {checkpoint}"
        )


class Trainer:
    """Builds everything a run needs from a :class:`~fcnseg.config.Config` and trains it."""

    def __init__(
        self, cfg: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.dist, self.device = setup(cfg.train.device, what="train.device")
        _seed_everything(cfg.train.seed)
        #: Config keys this resume changed (see :mod:`fcnseg.engine.resume`).
        self.resume_changes: list[Change] = []
        self._unrecorded: list[Change] = []  # recorded in config.yaml once training goes on
        last = self._resume_point() if resume else None  # refuses before any work
        d = cfg.data
        train_set = build.build_split(cfg, d.train_split)
        if last is None:  # a resumed run was checked when it started
            check_labels(train_set, split=d.train_split)
        self.val_set = build.dataset_for_eval(cfg, d.val_split)
        self.classes = list(train_set.classes)
        self.num_classes = len(self.classes)
        self.ignore_index = train_set.ignore_index
        self.palette = [list(c) for c in train_set.palette]

        #: The model itself; :attr:`model` is what runs the forward pass (DDP-wrapped or not).
        self.net = build.build_train_model(cfg, self.num_classes)
        fill = fill_from_preprocess(self.net.preprocess)
        self.collate = PadCollate(ignore_index=self.ignore_index, fill=tuple(c / 255 for c in fill))
        #: Margins of image around each training crop (``None``: the crop alone); see
        #: :meth:`fcnseg.models.SegmentationModel.training_context`.
        self.train_context = build.train_context(cfg, self.net)
        self.resident = None
        if d.resident:
            self.resident = build.resident_train_data(cfg, train_set, self.device, progress)
            self.train_data: Any = self.resident
        else:
            self.train_data = build.prepare_train_set(
                cfg, train_set, fill, self.run_dir, context=self.train_context
            )
        weights = build.class_weights(cfg, train_set, self.resident, self.num_classes)
        self.model = self._place(self.net)
        self.criterion = build.build_criterion(cfg, self.ignore_index, weights).to(self.device)
        self.optimizer = build.build_optimizer(self.net, cfg)
        self.scheduler = build.build_scheduler(self.optimizer, cfg)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=cfg.train.amp == "fp16" and self.device.type == "cuda"
        )
        self.iteration = 0
        self.best_mean_iu = -1.0
        self.metrics: dict[str, Any] = {}
        self.skipped_steps = 0
        self._matrix: Any = None
        self.stops = StopRequests(self.dist, self.device)
        self.runlog = RunLog(self.run_dir, enabled=self.dist.is_main, progress=progress)
        self.checkpointer = Checkpointer(self.run_dir, self.meta(), self.dist)
        if last is not None:
            self._resume(last)
        elif self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            cfg.dump(self.run_dir / "config.yaml")
            # Leftovers of an attempt killed before its first checkpoint start over too.
            self.runlog.truncate(0)
            self.checkpointer.clean_start()

    # ------------------------------------------------------------------ set-up

    def _place(self, net: nn.Module) -> nn.Module:
        """Move to the device (channels_last if configured); wrap in DDP under torchrun."""
        has_bn = any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        if self.dist.enabled and has_bn and self.device.type == "cuda":
            # SyncBatchNorm runs on GPUs only; CPU (gloo) processes keep per-process statistics.
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            self.net = net
        net.to(self.device)
        if self.cfg.train.channels_last:
            net.to(memory_format=torch.channels_last)
        if not self.dist.enabled:
            return net
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(net, device_ids=ids)

    def meta(self) -> dict[str, Any]:
        """What travels with the weights in every checkpoint of this run."""
        return {
            "model_spec": self.cfg.model.spec(self.num_classes),
            "classes": self.classes,
            "palette": self.palette,
            "ignore_index": self.ignore_index,
            "config": self.cfg.to_dict(),
            "train_scale": train_scale(self.cfg),  # what inference resizes to (fcnseg.inference)
        }

    def _resume_point(self) -> tuple[Checkpoint, dict[str, Any]]:
        """The run's last checkpoint, once the config given now is one it may continue with
        (:mod:`fcnseg.engine.resume`)."""
        loaded, state = Checkpointer(self.run_dir, {}, self.dist).read_last()
        self.resume_changes = self._unrecorded = resume.check(loaded, self.cfg, self.run_dir)
        return loaded, state

    def _resume(self, last: tuple[Checkpoint, dict[str, Any]]) -> None:
        hint = (
            f"resume with the run's own config ({self.run_dir / 'config.yaml'}) or start a new "
            "run with another -o"
        )
        stateful = {"optimizer": self.optimizer, "scheduler": self.scheduler, "scaler": self.scaler}
        state = self.checkpointer.resume(self.net, self.device, stateful, hint, last)
        self.iteration = state.iteration
        self.best_mean_iu = state.best_mean_iu
        self.metrics = state.metrics
        self.runlog.truncate(self.iteration)
        log.info("resumed %s at iteration %d", self.run_dir, self.iteration)

    def save(self, name: str = "last", *, with_state: bool = True) -> None:
        """Write ``checkpoints/NAME.safetensors`` (+ the training state when ``with_state``);
        see :meth:`fcnseg.engine.checkpointer.Checkpointer.save`."""
        state = None
        if with_state:
            state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "best_mean_iu": self.best_mean_iu,
            }
        self.checkpointer.save(
            name, self.net, iteration=self.iteration, metrics=self.metrics, state=state
        )

    # ------------------------------------------------------------------ loop

    def train(self, *, stop_at: int | None = None, handle_signals: bool = True) -> TrainResult:
        """Train to ``train.iterations`` (or stop after iteration ``stop_at`` with a checkpoint,
        as an interruption would).

        With ``handle_signals``, SIGINT/SIGTERM save a checkpoint at the end of the current
        iteration and raise :class:`TrainingInterrupted`.
        """
        with self.stops.catching() if handle_signals else nullcontext():
            return self._train(stop_at)

    def check_finished(self) -> None:
        """Raise :class:`~fcnseg.engine.resume.RunFinished` if a resumed run has nothing left
        to do (see :func:`fcnseg.engine.resume.check_finished`)."""
        resume.check_finished(self.run_dir, self.iteration, self.cfg.train.iterations)

    def _train(self, stop_at: int | None) -> TrainResult:
        t = self.cfg.train
        total = t.iterations
        self.check_finished()
        if self._unrecorded and self.dist.is_main:
            resume.record_changes(self.run_dir, self.cfg, self._unrecorded, self.iteration)
        self._unrecorded = []
        end = total if stop_at is None else min(stop_at, total)
        # Created after the signal handlers: forked workers inherit (and ignore) them.
        batches = self.batches(self.iteration * self.cfg.data.batch_size * t.iter_size)
        self.model.train()
        self.runlog.open(name=self.cfg.name, iteration=self.iteration, total=total)
        start_time = time.monotonic()
        try:
            while self.iteration < end:
                loss = self.step(batches)
                self.iteration += 1
                lr = self.optimizer.param_groups[0]["lr"]
                self.runlog.step(loss, lr)
                if self.iteration % t.log_every == 0 or self.iteration == end:
                    seconds = round(time.monotonic() - start_time, 3)
                    self.runlog.row(
                        {"iteration": self.iteration, "loss": loss, "lr": lr, "seconds": seconds}
                    )
                if self.iteration % t.eval_every == 0 or self.iteration == total:
                    self._evaluate_and_keep_best()
                self._checkpoint_or_stop(end)
        finally:
            self.runlog.close()
        if self.iteration == total and self._matrix is None:
            # Resumed after the last checkpoint but before the report: evaluate that checkpoint.
            self.metrics, self._matrix, _ = self.run_eval()
        if self.iteration == total and self.dist.is_main:
            # The evaluation at the last iteration already ran (eval_every or the final step).
            extra = {"iteration": self.iteration}
            write_report(self.run_dir, self._matrix, self.classes, extra=extra)
            self.runlog.plot_curves()
        return TrainResult(
            self.run_dir, self.iteration, self.metrics, self.best_mean_iu, self.skipped_steps
        )

    def batches(self, start_sample: int = 0) -> Iterator[Any]:
        """This process's endless stream of training batches from sample ``start_sample`` on."""
        return build.train_batches(
            self.cfg,
            self.train_data,
            collate=self.collate,
            start_sample=start_sample,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            device=self.device,
        )

    def _checkpoint_or_stop(self, end: int) -> None:
        """Save ``last`` when due; on a stop signal save (if not just done) and raise."""
        due = self.iteration % self.cfg.train.checkpoint_every == 0 or self.iteration == end
        if due:
            self.save("last")
            barrier()
        signum = self.stops.agreed()
        if signum and self.iteration < end:
            if not due:
                self.save("last")
                barrier()
            last = self.checkpointer.dir / "last.safetensors"
            raise TrainingInterrupted(signum, self.iteration, last)

    def train_step(
        self, images: torch.Tensor, masks: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Forward and backward of one micro-batch (the loss divided by ``train.iter_size``);
        returns the loss. The optimiser step is :meth:`step`'s."""
        t = self.cfg.train
        images = images.to(self.device, non_blocking=True)
        masks = masks.to(self.device, non_blocking=True)
        if weights is not None:
            weights = weights.to(self.device, non_blocking=True)
        valid = self.train_context is not None  # the images carry the crops' context
        logits = forward(self.model, images, channels_last=t.channels_last, amp=t.amp, valid=valid)
        if valid:  # output pixel i is mask pixel i; a valid network may overrun the crop
            logits = logits[..., : masks.shape[-2], : masks.shape[-1]]
        loss = self.criterion(logits.float(), masks, weight_map=weights) / t.iter_size
        self.scaler.scale(loss).backward()
        return loss.detach()

    def step(self, batches: Any) -> float:
        """One optimiser step over ``train.iter_size`` micro-batches; non-finite handling."""
        t = self.cfg.train
        self.optimizer.zero_grad(set_to_none=True)
        # A skipped step must leave no trace: keep the BatchNorm statistics its forward updates.
        kept = [b.detach().clone() for b in self.net.buffers()] if t.on_nonfinite == "skip" else []
        total = 0.0
        for _ in range(t.iter_size):
            images, masks, *extra = next(batches)  # extra: U-Net weight maps, if configured
            total += float(self.train_step(images, masks, extra[0] if extra else None))
        problem = self._nonfinite(total)
        if problem:
            self._skip_step(problem, kept)
            return total
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return total

    def _nonfinite(self, loss: float) -> str:
        """What is not finite about this step ("" when all is well)."""
        if not math.isfinite(loss):
            return f"the loss is {loss}"
        if self.scaler.is_enabled():
            return ""  # fp16 loss scaling skips steps with inf gradients itself
        grads = [p.grad for p in self.net.parameters() if p.grad is not None]
        # A NaN/inf anywhere makes its tensor's sum non-finite: one cheap reduction per tensor
        # (25× faster than isfinite() on VGG16's 134M gradients). A finite gradient whose sum
        # overflows float32 (> 3e38) is flagged too; such a step has diverged anyway.
        if grads and not bool(torch.stack([g.sum() for g in grads]).isfinite().all()):
            return f"the gradients are not finite (loss {loss:.4g})"
        return ""

    def _skip_step(self, problem: str, kept: list[torch.Tensor]) -> None:
        """``train.on_nonfinite``: stop with a message, or undo and skip this step."""
        message = (
            f"{problem} at iteration {self.iteration + 1}; last good checkpoint: "
            f"{self.checkpointer.last_good()}"
        )
        if self.cfg.train.on_nonfinite == "stop":
            raise FloatingPointError(
                f"{message}. Stopped (train.on_nonfinite=stop): resume from the checkpoint "
                "with --resume --set train.on_nonfinite=skip to skip such steps, or start a "
                "new run from it with a lower train.lr (--set model.init_from=THAT_FILE -o "
                "NEW_RUN)"
            )
        with torch.no_grad():
            for buffer, value in zip(self.net.buffers(), kept, strict=True):
                buffer.copy_(value)
        from fcnseg.checkpoint import nonfinite_tensors

        broken = nonfinite_tensors(self.net.state_dict())
        if broken:  # an earlier step overflowed the weights: skipping cannot help
            raise FloatingPointError(
                f"{message}; the weights themselves are not finite ({broken[0]}), so "
                "skipping cannot help: start a new run from the checkpoint with a lower "
                "train.lr (--set model.init_from=THAT_FILE -o NEW_RUN)"
            )
        log.warning("%s; skipping this step (train.on_nonfinite=skip)", message)
        self.skipped_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    # ------------------------------------------------------------------ evaluation

    def val_loader(self) -> Any:
        return build.val_loader(
            self.cfg, self.val_set, self.collate, self.dist.rank, self.dist.world_size, self.device
        )

    def run_eval(self, keep: int = 0) -> tuple[dict[str, Any], Any, list]:
        """Evaluate on the validation split: (metrics, confusion matrix, kept panels)."""
        matrix, kept = evaluate(
            self.model,
            self.val_loader(),
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
            device=self.device,
            amp=self.cfg.train.amp,
            channels_last=self.cfg.train.channels_last,
            progress=self.runlog.progress,
            keep=keep,
        )
        return matrix.compute(self.classes), matrix, kept

    def _evaluate_and_keep_best(self) -> None:
        metrics, self._matrix, _ = self.run_eval()
        self.metrics = metrics
        self.runlog.row({"iteration": self.iteration, **{k: metrics[k] for k in VAL_FIELDS}})
        self.runlog.message(
            f"[{self.iteration}] val mean IU {metrics['mean_iu']:.4f}  "
            f"pixel acc {metrics['pixel_acc']:.4f}{absent_note(metrics)}"
        )
        if metrics["mean_iu"] > self.best_mean_iu:
            self.best_mean_iu = metrics["mean_iu"]
            self.save("best", with_state=False)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
