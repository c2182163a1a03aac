"""Iteration-based training with exact resume, periodic evaluation and checkpoints.

A run directory holds ``config.yaml`` (the resolved config), ``log.csv``, TensorBoard events in
``tb/``, ``checkpoints/{last,best}.safetensors`` (+ ``last.state.pt``), and ``metrics.json`` of
the final evaluation. Resuming restores the model, optimiser, scheduler, grad scaler, every RNG
and the position in the data stream, so an interrupted CPU run ends bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import csv
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fcnseg.config import Config
from fcnseg.data.base import SegmentationDataset
from fcnseg.data.registry import build_dataset
from fcnseg.data.transforms import (
    PadCollate,
    eval_transforms,
    fill_from_preprocess,
    train_transforms,
)
from fcnseg.engine import checkpoint as ckpt
from fcnseg.engine.distributed import barrier, setup
from fcnseg.engine.evaluate import autocast, evaluate, write_report
from fcnseg.engine.loaders import Resized, SampleStream, SeededSamples, ShardSampler, make_loader
from fcnseg.losses import SegmentationLoss, median_frequency_weights
from fcnseg.models import FCN, build_model

__all__ = ["TrainResult", "Trainer", "model_spec"]

log = logging.getLogger("fcnseg")

LOG_FIELDS = ["iteration", "loss", "lr", "seconds", "pixel_acc", "mean_acc", "mean_iu", "fw_iu"]


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    run_dir: Path
    iteration: int
    metrics: dict[str, Any]
    best_mean_iu: float


def model_spec(cfg: Config, num_classes: int) -> dict[str, Any]:
    """Builder arguments stored in checkpoints (weights travel in the file itself)."""
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
        self.net: FCN = self.model
        fill = fill_from_preprocess(self.net.preprocess)
        augment = train_transforms(
            crop_size=tuple(d.crop_size) if d.crop_size else None,
            scale_range=tuple(d.scale_range),
            hflip=d.hflip,
            jitter=d.jitter,
            fill=fill,
            ignore_index=self.ignore_index,
        )
        plain = eval_transforms()
        self.train_set.transforms = Resized(d.resize, augment) if d.resize else augment
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
        if resume:
            self._resume()
        elif self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            cfg.dump(self.run_dir / "config.yaml")

    # ------------------------------------------------------------------ set-up

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _build_model(self) -> FCN:
        m = self.cfg.model
        spec = model_spec(self.cfg, self.num_classes)
        name = spec.pop("name")
        model = build_model(name, backbone_weights=m.backbone_weights, **spec)
        if m.init_from:
            source = ckpt.load_checkpoint(m.init_from)
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

    def save(self, name: str = "last", *, with_state: bool = True) -> None:
        """Write ``checkpoints/NAME.safetensors`` (+ ``NAME.state.pt``) on the main process."""
        if not self.dist.is_main:
            return
        if with_state:
            ckpt.save_state(
                self.ckpt_dir / f"{name}.state.pt",
                {
                    "iteration": self.iteration,
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "rng": _rng_state(),
                    "best_mean_iu": self.best_mean_iu,
                    "metrics": self.metrics,
                },
            )
        ckpt.save_checkpoint(
            self.ckpt_dir / f"{name}.safetensors",
            self.net,
            metrics=self.metrics,
            iteration=self.iteration,
            **self._meta(),
        )

    def _resume(self) -> None:
        weights = self.ckpt_dir / "last.safetensors"
        state = ckpt.load_state(self.ckpt_dir / "last.state.pt")
        loaded = ckpt.load_checkpoint(weights)
        if loaded.iteration != state["iteration"]:
            raise ckpt.CheckpointError(
                f"{weights} (iteration {loaded.iteration}) and last.state.pt (iteration "
                f"{state['iteration']}) disagree; the run directory was modified"
            )
        self.net.load_state_dict({k: v.to(self.device) for k, v in loaded.state_dict.items()})
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.iteration = state["iteration"]
        self.best_mean_iu = state["best_mean_iu"]
        self.metrics = state.get("metrics", {})
        self._truncate_log(self.iteration)
        log.info("resumed %s at iteration %d", self.run_dir, self.iteration)

    # ------------------------------------------------------------------ logging

    def _truncate_log(self, iteration: int) -> None:
        path = self.run_dir / "log.csv"
        if not path.is_file() or not self.dist.is_main:
            return
        with path.open() as f:
            rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= iteration]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

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

    def train(self, *, stop_at: int | None = None) -> TrainResult:
        """Train to ``train.iterations`` (or stop after iteration ``stop_at`` with a checkpoint,
        as an interruption would)."""
        t = self.cfg.train
        total = t.iterations
        end = total if stop_at is None else min(stop_at, total)
        per_step = self.cfg.data.batch_size * t.iter_size
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
                if self.iteration % t.checkpoint_every == 0 or self.iteration == end:
                    self.save("last")
                    barrier()
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        if self.iteration == total and self.dist.is_main:
            self._final_report()
        return TrainResult(self.run_dir, self.iteration, self.metrics, self.best_mean_iu)

    def _step(self, batches: Any) -> float:
        t = self.cfg.train
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(t.iter_size):
            images, masks = next(batches)
            images = images.to(self.device, non_blocking=True)
            masks = masks.to(self.device, non_blocking=True)
            x = self.net.preprocess(images)
            if t.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, t.amp):
                logits = self.model(x)
            loss = self.criterion(logits.float(), masks) / t.iter_size
            self.scaler.scale(loss).backward()
            total += float(loss.detach())
        if not math.isfinite(total):
            where = self.ckpt_dir / "last.safetensors"
            message = (
                f"loss is {total} at iteration {self.iteration + 1}; last good checkpoint: "
                f"{where if where.exists() else 'none yet'}"
            )
            if t.on_nonfinite == "stop":
                raise FloatingPointError(message + " (set train.on_nonfinite=skip to skip)")
            log.warning("%s — skipping this step", message)
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            return total
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return total

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
