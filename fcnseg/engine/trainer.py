"""Iteration-based training with exact resume, periodic evaluation and checkpoints.

A run directory holds ``config.yaml`` (the resolved config), ``log.csv``, TensorBoard events in
``tb/``, ``checkpoints/{last,best}.safetensors`` (+ ``last.state.pt``), and ``metrics.json`` of
the final evaluation. Resuming restores the model, optimiser, scheduler, grad scaler, every RNG
and the position in the data stream, so an interrupted CPU run ends bit-identical to an
uninterrupted one.

Interruptions: SIGINT (Ctrl-C) and SIGTERM finish the current iteration, save a checkpoint and
raise :class:`TrainingInterrupted` (a second signal quits at once, leaving the previous
checkpoint); a SIGKILL loses at most the iterations since the last checkpoint, whose files are
never half-written (see :mod:`fcnseg.checkpoint`). A non-finite loss or gradient stops
the run (``train.on_nonfinite: stop``) or skips the step (``skip``); NaN weights are never saved.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fcnseg import checkpoint as ckpt
from fcnseg.config import Config
from fcnseg.data.base import SegmentationDataset
from fcnseg.data.registry import build_dataset
from fcnseg.data.transforms import (
    PadCollate,
    eval_transforms,
    fill_from_preprocess,
    train_transforms,
)
from fcnseg.engine.distributed import barrier, setup
from fcnseg.engine.evaluate import evaluate, write_report
from fcnseg.engine.loaders import Resized, SampleStream, SeededSamples, ShardSampler, make_loader
from fcnseg.forward import forward
from fcnseg.losses import SegmentationLoss, median_frequency_weights
from fcnseg.models import build_model

__all__ = ["TrainResult", "Trainer", "TrainingInterrupted", "model_spec"]

log = logging.getLogger("fcnseg")

LOG_FIELDS = ["iteration", "loss", "lr", "seconds", "pixel_acc", "mean_acc", "mean_iu", "fw_iu"]


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


def model_spec(cfg: Config, num_classes: int) -> dict[str, Any]:
    """Builder arguments stored in checkpoints (weights travel in the file itself)."""
    m = cfg.model
    if m.name == "unet":
        return {
            "name": "unet",
            "num_classes": num_classes,
            "in_channels": m.in_channels,
            "base_width": m.base_width,
            "depth": m.depth,
            "padding": m.padding,
            "fuse": m.fuse,
            "dropout": m.dropout,
        }
    spec: dict[str, Any] = {
        "name": cfg.model.name,
        "backbone": cfg.model.backbone,
        "num_classes": num_classes,
        "mode": cfg.model.mode,
        "learnable_upsampling": cfg.model.learnable_upsampling,
    }
    if cfg.model.name == "fcn8s":
        spec["at_once"] = cfg.model.at_once
    return spec


def _param_groups(model: nn.Module, cfg: Config) -> list[dict[str, Any]]:
    """Weights decay, biases do not (and learn ``bias_lr_mult`` times faster), as in Caffe."""
    weights, biases = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (biases if name.endswith(".bias") or p.ndim == 1 else weights).append(p)
    t = cfg.train
    return [
        {"params": weights, "lr": t.lr, "weight_decay": t.weight_decay},
        {"params": biases, "lr": t.lr * t.bias_lr_mult, "weight_decay": 0.0},
    ]


def _lr_lambda(cfg: Config) -> Callable[[int], float]:
    t = cfg.train

    def factor(it: int) -> float:
        if t.schedule == "poly":
            f = (1 - min(it, t.iterations) / t.iterations) ** t.poly_power
        elif t.schedule == "step":
            f = t.step_gamma ** (it // t.step_size)
        else:
            f = 1.0
        if it < t.warmup_iters:
            alpha = it / t.warmup_iters
            f *= t.warmup_factor * (1 - alpha) + alpha
        return f

    return factor


def _rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Builds everything a run needs from a :class:`~fcnseg.config.Config` and trains it."""

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.progress = progress
        self.dist, self.device = setup(cfg.train.device)
        self._seed_everything(cfg.train.seed)

        d = cfg.data
        self.train_set = build_dataset(d.dataset, d.root, d.train_split, **d.options)
        self.val_set = _build_split(cfg, d.val_split)
        self.classes = list(self.train_set.classes)
        self.num_classes = len(self.classes)
        self.ignore_index = self.train_set.ignore_index

        self.model = self._build_model()
        self.net: nn.Module = self.model
        fill = fill_from_preprocess(self.net.preprocess)
        augment = train_transforms(
            crop_size=tuple(d.crop_size) if d.crop_size else None,
            scale_range=tuple(d.scale_range),
            hflip=d.hflip,
            jitter=d.jitter,
            fill=fill,
            ignore_index=self.ignore_index,
            elastic_sigma=d.elastic_sigma,
            elastic_grid=d.elastic_grid,
        )
        plain = eval_transforms()
        self.train_set.transforms = Resized(d.resize, augment) if d.resize else augment
        if cfg.train.weight_map:
            # U-Net's border weights, computed once per label file and moved with the mask.
            from fcnseg.weightmap import WeightMapCache, WithWeightMaps

            cache = WeightMapCache(
                cache_dir=self.run_dir / "weightmaps",
                w0=cfg.train.weight_map_w0,
                sigma=cfg.train.weight_map_sigma,
                class_weights=cfg.train.weight_map_class_weights,
                ignore_index=self.ignore_index,
            )
            self.train_set = WithWeightMaps(self.train_set, cache)  # type: ignore[assignment]
        self.val_set.transforms = Resized(d.resize, plain) if d.resize else plain
        self.collate = PadCollate(ignore_index=self.ignore_index, fill=tuple(c / 255 for c in fill))

        has_bn = any(isinstance(m, nn.BatchNorm2d) for m in self.model.modules())
        if self.dist.enabled and has_bn and self.device.type == "cuda":
            # SyncBatchNorm runs on GPUs only; CPU (gloo) processes keep per-process statistics.
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.device)
        if cfg.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.net = self.model
        if self.dist.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

        self.criterion = SegmentationLoss(
            ignore_index=self.ignore_index,
            reduction=cfg.train.loss_reduction,
            class_weights=self._class_weights(),
            sample_prob=cfg.train.loss_sample_prob,
        ).to(self.device)
        groups = _param_groups(self.net, cfg)
        if cfg.train.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, lr=cfg.train.lr)
        else:
            self.optimizer = torch.optim.SGD(groups, lr=cfg.train.lr, momentum=cfg.train.momentum)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(cfg))
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=cfg.train.amp == "fp16" and self.device.type == "cuda"
        )
        self.iteration = 0
        self._matrix: Any = None
        self.best_mean_iu = -1.0
        self.metrics: dict[str, Any] = {}
        self.skipped_steps = 0
        #: (file, iteration) of the last resumable checkpoint on disk.
        self.last_checkpoint: tuple[Path, int] | None = None
        self._signal = 0
        if resume:
            self._resume()
        elif self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            cfg.dump(self.run_dir / "config.yaml")
            # Leftovers of an attempt killed before its first checkpoint start over too.
            self._truncate_log(0)
            if self.ckpt_dir.is_dir():
                ckpt.remove_temporary(self.ckpt_dir)

    # ------------------------------------------------------------------ set-up

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _build_model(self) -> nn.Module:
        m = self.cfg.model
        spec = model_spec(self.cfg, self.num_classes)
        name = spec.pop("name")
        if name == "unet":
            if m.init_from or m.backbone_weights:
                raise ValueError(
                    "model.init_from / model.backbone_weights do not apply to unet (it trains "
                    "from scratch, as in the U-Net paper)"
                )
            return build_model(name, **spec)
        model = build_model(name, backbone_weights=m.backbone_weights, **spec)
        if m.init_from:
            source = ckpt.load_checkpoint(m.init_from)
            _check_spec(
                source,
                spec | {"name": name},
                ("backbone", "num_classes"),
                f"model.init_from: {source.path}",
            )
            copied = model.init_from(source.path)
            log.info("initialised from %s (%d tensors)", source.path, len(copied))
        return model

    def _class_weights(self) -> torch.Tensor | None:
        w = self.cfg.train.class_weights
        if w is None:
            return None
        if isinstance(w, list):
            if len(w) != self.num_classes:
                raise ValueError(
                    f"train.class_weights has {len(w)} values for {self.num_classes} classes"
                )
            return torch.tensor(w, dtype=torch.float32)
        masks = (self.train_set.load(i)[1] for i in range(len(self.train_set)))
        weights = median_frequency_weights(masks, self.num_classes, self.ignore_index)
        log.info("median-frequency class weights: %s", [round(float(x), 3) for x in weights])
        return weights

    def _train_loader(self, start_sample: int) -> Any:
        d = self.cfg.data
        stream = SampleStream(
            len(self.train_set),
            seed=self.cfg.train.seed,
            start=start_sample,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        return make_loader(
            SeededSamples(self.train_set),
            batch_size=d.batch_size,
            sampler=stream,
            collate=self.collate,
            num_workers=d.num_workers,
            device=self.device,
        )

    def val_loader(self) -> Any:
        sampler = ShardSampler(
            len(self.val_set), rank=self.dist.rank, world_size=self.dist.world_size
        )
        return make_loader(
            self.val_set,
            batch_size=self.cfg.data.val_batch_size,
            sampler=sampler,
            collate=self.collate,
            num_workers=self.cfg.data.num_workers,
            device=self.device,
        )

    # ------------------------------------------------------------------ checkpoints

    def _meta(self) -> dict[str, Any]:
        return {
            "model_spec": model_spec(self.cfg, self.num_classes),
            "classes": self.classes,
            "palette": [list(c) for c in self.train_set.palette],
            "ignore_index": self.ignore_index,
            "config": self.cfg.to_dict(),
        }

    def _last_good(self) -> str:
        if self.last_checkpoint is None:
            return "none yet"
        path, iteration = self.last_checkpoint
        return f"{path} (iteration {iteration})"

    def save(self, name: str = "last", *, with_state: bool = True) -> None:
        """Write ``checkpoints/NAME.safetensors`` (+ ``NAME.state.pt``) on the main process.

        Raises :class:`FloatingPointError` instead of saving weights holding NaN/inf, and
        :class:`~fcnseg.checkpoint.CheckpointWriteError` when the disk refuses the write;
        either way the previous checkpoint stays as it was.
        """
        if not self.dist.is_main:
            return
        path = self.ckpt_dir / f"{name}.safetensors"
        bad = ckpt.nonfinite_tensors(self.net.state_dict())
        if bad:
            raise FloatingPointError(
                f"the weights are not finite after iteration {self.iteration} ({bad[0]} holds "
                f"NaN/inf); refusing to overwrite {path}. Last good checkpoint: "
                f"{self._last_good()}; resume from it with --resume (e.g. with a lower train.lr)"
            )
        try:
            if not with_state:
                ckpt.save_checkpoint(
                    path, self.net, metrics=self.metrics, iteration=self.iteration, **self._meta()
                )
                return
            state = {
                "iteration": self.iteration,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": _rng_state(),
                "best_mean_iu": self.best_mean_iu,
                "metrics": self.metrics,
            }
            ckpt.save_resumable(
                self.ckpt_dir, name, self.net, state, metrics=self.metrics, **self._meta()
            )
        except ckpt.CheckpointWriteError as err:
            raise ckpt.CheckpointWriteError(
                f"{err} (iteration {self.iteration}; last good checkpoint: {self._last_good()})"
            ) from err
        if name == "last":
            self.last_checkpoint = (path, self.iteration)

    def _resume(self) -> None:
        if self.dist.is_main:
            ckpt.repair_resumable(self.ckpt_dir, "last")
        barrier()
        loaded, state = ckpt.load_resumable(self.ckpt_dir, "last")
        _check_spec(
            loaded,
            model_spec(self.cfg, self.num_classes),
            ("name", "backbone", "num_classes", "mode", "at_once", "learnable_upsampling"),
            f"--resume: {loaded.path}",
            hint=(
                f"resume with the run's own config ({self.run_dir / 'config.yaml'}) or start a "
                "new run with another -o"
            ),
        )
        try:
            self.net.load_state_dict({k: v.to(self.device) for k, v in loaded.state_dict.items()})
        except RuntimeError as err:
            raise ckpt.CheckpointError(
                f"--resume: {loaded.path} does not fit the model: {err}"
            ) from err
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.iteration = state["iteration"]
        self.best_mean_iu = state["best_mean_iu"]
        self.metrics = state.get("metrics", {})
        self.last_checkpoint = (loaded.path, self.iteration)
        self._truncate_log(self.iteration)
        log.info("resumed %s at iteration %d", self.run_dir, self.iteration)

    # ------------------------------------------------------------------ logging

    def _truncate_log(self, iteration: int) -> None:
        """Keep the log rows up to ``iteration`` (rewritten atomically; a row cut by a kill is
        dropped)."""
        path = self.run_dir / "log.csv"
        if not path.is_file() or not self.dist.is_main:
            return
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if _row_iteration(r) <= iteration]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=LOG_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        ckpt.atomic_write(path, out.getvalue().encode())

    def _log(self, row: dict[str, Any], writer: Any) -> None:
        if not self.dist.is_main:
            return
        path = self.run_dir / "log.csv"
        new = not path.is_file()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        if writer is not None:
            for key, value in row.items():
                if key != "iteration" and value is not None:
                    writer.add_scalar(
                        ("val/" if key in LOG_FIELDS[4:] else "train/") + key,
                        value,
                        row["iteration"],
                    )

    # ------------------------------------------------------------------ loop

    def run_eval(self, keep: int = 0) -> tuple[dict[str, Any], Any, list]:
        matrix, kept = evaluate(
            self.model,
            self.val_loader(),
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
            device=self.device,
            amp=self.cfg.train.amp,
            channels_last=self.cfg.train.channels_last,
            progress=self.progress and self.dist.is_main,
            keep=keep,
        )
        return matrix.compute(self.classes), matrix, kept

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """Turn SIGINT/SIGTERM into a request to stop after the current iteration (a second one
        quits at once). Only the main thread can install handlers; elsewhere this does nothing.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        pid = os.getpid()

        def handler(signum: int, frame: Any) -> None:
            if os.getpid() != pid:
                return  # a forked data-loader worker: the training process stops the run
            name = signal.Signals(signum).name
            if self._signal:
                raise KeyboardInterrupt(f"second {name}: quit without saving")
            self._signal = signum
            if self.dist.is_main:
                print(
                    f"fcnseg: {name} received; stopping with a checkpoint at the end of this "
                    "iteration (send it again to quit at once, without saving)",
                    file=sys.stderr,
                    flush=True,
                )

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _stop_signal(self) -> int:
        """The signal asking to stop (0: none), agreed by every process of the job."""
        if not self.dist.enabled:
            return self._signal
        import torch.distributed as dist

        flag = torch.tensor([self._signal], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def train(self, *, stop_at: int | None = None, handle_signals: bool = True) -> TrainResult:
        """Train to ``train.iterations`` (or stop after iteration ``stop_at`` with a checkpoint,
        as an interruption would).

        With ``handle_signals``, SIGINT/SIGTERM save a checkpoint at the end of the current
        iteration and raise :class:`TrainingInterrupted`.
        """
        self._signal = 0
        signals = self._signals() if handle_signals else _nothing()
        with signals:
            return self._train(stop_at)

    def _train(self, stop_at: int | None) -> TrainResult:
        t = self.cfg.train
        total = t.iterations
        end = total if stop_at is None else min(stop_at, total)
        per_step = self.cfg.data.batch_size * t.iter_size
        # Created after the signal handlers: forked workers inherit (and ignore) them.
        batches = iter(self._train_loader(self.iteration * per_step))
        writer = None
        if self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(self.run_dir / "tb", purge_step=self.iteration + 1)
        self.model.train()
        bar = tqdm(
            total=total,
            initial=self.iteration,
            desc=self.cfg.name,
            disable=not (self.progress and self.dist.is_main),
            dynamic_ncols=True,
        )
        start_time = time.monotonic()
        try:
            while self.iteration < end:
                loss = self._step(batches)
                self.iteration += 1
                lr = self.optimizer.param_groups[0]["lr"]
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.3g}")
                if self.iteration % t.log_every == 0 or self.iteration == end:
                    self._log(
                        {
                            "iteration": self.iteration,
                            "loss": loss,
                            "lr": lr,
                            "seconds": round(time.monotonic() - start_time, 3),
                        },
                        writer,
                    )
                if self.iteration % t.eval_every == 0 or self.iteration == total:
                    self._evaluate_and_keep_best(writer)
                saved = self.iteration % t.checkpoint_every == 0 or self.iteration == end
                if saved:
                    self.save("last")
                    barrier()
                signum = self._stop_signal()
                if signum and self.iteration < end:
                    if not saved:
                        self.save("last")
                        barrier()
                    raise TrainingInterrupted(
                        signum, self.iteration, self.ckpt_dir / "last.safetensors"
                    )
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        if self.iteration == total and self.dist.is_main:
            self._final_report()
        return TrainResult(
            self.run_dir, self.iteration, self.metrics, self.best_mean_iu, self.skipped_steps
        )

    def _step(self, batches: Any) -> float:
        t = self.cfg.train
        self.optimizer.zero_grad(set_to_none=True)
        # A skipped step must leave no trace: keep the BatchNorm statistics its forward updates.
        kept = [b.detach().clone() for b in self.net.buffers()] if t.on_nonfinite == "skip" else []
        total = 0.0
        for _ in range(t.iter_size):
            images, masks, *extra = next(batches)  # extra: U-Net weight maps, if configured
            images = images.to(self.device, non_blocking=True)
            masks = masks.to(self.device, non_blocking=True)
            weights = extra[0].to(self.device, non_blocking=True) if extra else None
            logits = forward(self.model, images, channels_last=t.channels_last, amp=t.amp)
            loss = self.criterion(logits.float(), masks, weight_map=weights) / t.iter_size
            self.scaler.scale(loss).backward()
            total += float(loss.detach())
        if not math.isfinite(total):
            problem = f"the loss is {total}"
        elif not self._grads_finite():
            problem = f"the gradients are not finite (loss {total:.4g})"
        else:
            problem = ""
        if problem:
            message = (
                f"{problem} at iteration {self.iteration + 1}; last good checkpoint: "
                f"{self._last_good()}"
            )
            if t.on_nonfinite == "stop":
                raise FloatingPointError(
                    f"{message}. Stopped (train.on_nonfinite=stop): resume from the checkpoint "
                    "with --resume (e.g. with a lower train.lr), or set train.on_nonfinite=skip "
                    "to skip such steps"
                )
            with torch.no_grad():
                for buffer, value in zip(self.net.buffers(), kept, strict=True):
                    buffer.copy_(value)
            broken = ckpt.nonfinite_tensors(self.net.state_dict())
            if broken:  # an earlier step overflowed the weights: skipping cannot help
                raise FloatingPointError(
                    f"{message}; the weights themselves are not finite ({broken[0]}), so "
                    "skipping cannot help: resume from the checkpoint with --resume and a lower "
                    "train.lr"
                )
            log.warning("%s; skipping this step (train.on_nonfinite=skip)", message)
            self.skipped_steps += 1
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            return total
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return total

    def _grads_finite(self) -> bool:
        if self.scaler.is_enabled():
            return True  # fp16 loss scaling skips steps with inf gradients itself
        grads = [p.grad for p in self.net.parameters() if p.grad is not None]
        return not grads or bool(torch.stack([g.isfinite().all() for g in grads]).all())

    def _evaluate_and_keep_best(self, writer: Any) -> None:
        metrics, self._matrix, _ = self.run_eval()
        self.metrics = metrics
        row = {"iteration": self.iteration, **{k: metrics[k] for k in LOG_FIELDS[4:]}}
        self._log(row, writer)
        if self.dist.is_main:
            tqdm.write(
                f"[{self.iteration}] val mean IU {metrics['mean_iu']:.4f}  "
                f"pixel acc {metrics['pixel_acc']:.4f}",
            )
        if metrics["mean_iu"] > self.best_mean_iu:
            self.best_mean_iu = metrics["mean_iu"]
            self.save("best", with_state=False)

    def _final_report(self) -> None:
        from fcnseg.viz import plot_curves

        # The evaluation at the last iteration already ran (eval_every or the final step).
        write_report(self.run_dir, self._matrix, self.classes, extra={"iteration": self.iteration})
        with (self.run_dir / "log.csv").open() as f:
            rows = [
                {k: float(v) for k, v in r.items() if v not in ("", None)}
                for r in csv.DictReader(f)
            ]
        plot_curves(self.run_dir / "curves.png", rows)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _row_iteration(row: dict[str, Any]) -> float:
    """A log row's iteration; rows cut short by a kill count as infinitely late (dropped)."""
    try:
        if None in row.values():
            return math.inf
        return int(row["iteration"])
    except (KeyError, TypeError, ValueError):
        return math.inf


def _check_spec(
    source: ckpt.Checkpoint,
    expected: dict[str, Any],
    keys: tuple[str, ...],
    what: str,
    hint: str = "use a checkpoint of the same model and dataset",
) -> None:
    """Raise a :class:`CheckpointError` naming both values of every key that differs."""
    diffs = [
        f"{k}: checkpoint {source.model.get(k)!r}, this run {expected.get(k)!r}"
        for k in keys
        if k in source.model and source.model[k] != expected.get(k)  # older files may lack keys
    ]
    if diffs:
        raise ckpt.CheckpointError(
            f"{what} does not match the configured model ({'; '.join(diffs)}); {hint}"
        )


def _build_split(cfg: Config, split: str) -> SegmentationDataset:
    """The dataset of ``split``: the validation split may come from ``data.val_*``."""
    d = cfg.data
    if split == d.val_split and (d.val_dataset or d.val_root or d.val_options is not None):
        options = d.val_options if d.val_options is not None else d.options
        return build_dataset(d.val_dataset or d.dataset, d.val_root or d.root, split, **options)
    return build_dataset(d.dataset, d.root, split, **d.options)


def dataset_for_eval(cfg: Config, split: str) -> SegmentationDataset:
    """The dataset of ``cfg`` for ``split`` with evaluation transforms."""
    d = cfg.data
    dataset = _build_split(cfg, split)
    plain = eval_transforms()
    dataset.transforms = Resized(d.resize, plain) if d.resize else plain
    return dataset
