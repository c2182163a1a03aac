"""Evaluation: one confusion matrix over the whole split, the paper's four metrics, reports."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from fcnseg.inference import InferenceOptions, Predictor
from fcnseg.inference.precision import autocast_for
from fcnseg.metrics import ConfusionMatrix, absent_note

if TYPE_CHECKING:
    from fcnseg.checkpoint import Checkpoint
    from fcnseg.config import Config
    from fcnseg.data.base import SegmentationDataset
    from fcnseg.engine.distributed import DistInfo

__all__ = ["evaluate", "evaluate_predictor", "format_metrics", "jsonable", "write_report"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    *,
    num_classes: int,
    ignore_index: int,
    device: torch.device,
    amp: str | None = None,
    channels_last: bool = False,
    progress: bool = True,
    keep: int = 0,
    options: InferenceOptions | None = None,
) -> tuple[ConfusionMatrix, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Predict every batch of ``loader`` and accumulate one confusion matrix (all-reduced
    across processes when distributed). Also returns the first ``keep`` (image, target,
    prediction) triples for panels.

    Predictions come from :meth:`Predictor.probabilities_batch` of the unwrapped model, with
    ``options`` (default: whole images): ``tile`` gives sliding-window evaluation, ``flip``/
    ``scales`` test-time augmentation, ``crf`` dense-CRF refinement (on the CPU). They apply to
    the padded batch; padded pixels are ignored by the metric."""
    net = getattr(model, "module", model)  # DistributedDataParallel: no gradient sync needed
    names = [str(i) for i in range(num_classes)]
    predictor = Predictor(net, names, [], device, channels_last=channels_last, amp=amp)
    was_training = net.training
    net.eval()
    try:
        return evaluate_predictor(predictor, loader, ignore_index=ignore_index, device=device,
                                  progress=progress, keep=keep, options=options)  # fmt: skip
    finally:
        net.train(was_training)


@torch.no_grad()
def evaluate_predictor(
    predictor: Predictor,
    loader: DataLoader,
    *,
    ignore_index: int,
    device: torch.device,
    progress: bool = True,
    keep: int = 0,
    options: InferenceOptions | None = None,
) -> tuple[ConfusionMatrix, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """:func:`evaluate` with a ready :class:`Predictor` (a checkpoint's or an ONNX file's, in
    eval mode), whose training scale policy applies (``options.scale``) to each batch."""
    num_classes = len(predictor.classes)
    matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for images, masks in tqdm(loader, desc="eval", leave=False, disable=not progress):
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        pred = predictor.probabilities_batch(images, options).argmax(1)
        matrix.update(pred, masks)
        for i in range(min(keep - len(kept), len(images))):
            kept.append((images[i].cpu(), masks[i].cpu(), pred[i].cpu()))
    matrix.all_reduce()
    return matrix, kept


def format_metrics(metrics: dict[str, Any]) -> str:
    """A small text table: the four metrics, then per-class IoU."""
    lines = [
        f"pixel acc {metrics['pixel_acc']:.4f}   mean acc {metrics['mean_acc']:.4f}   "
        f"mean IU {metrics['mean_iu']:.4f}   fw IU {metrics['fw_iu']:.4f}" + absent_note(metrics),
        "",
        f"{'class':<20} {'IoU':>7} {'acc':>7}",
    ]
    per_acc = metrics.get("per_class_acc", {})
    for name, iu in metrics["per_class_iu"].items():
        acc = per_acc.get(name) if isinstance(per_acc, dict) else None
        iu_s = "   –" if iu is None or iu != iu else f"{iu:7.4f}"
        acc_s = "   –" if acc is None or acc != acc else f"{acc:7.4f}"
        lines.append(f"{name:<20} {iu_s:>7} {acc_s:>7}")
    return "\n".join(lines)


def write_report(
    out_dir: str | Path,
    matrix: ConfusionMatrix,
    class_names: list[str],
    *,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``metrics.json`` + confusion-matrix and per-class IoU plots in ``out_dir``."""
    from fcnseg.viz import plot_confusion, plot_per_class_iou

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = matrix.compute(class_names)
    payload = {**metrics, **(extra or {})}
    (out / "metrics.json").write_text(json.dumps(jsonable(payload), indent=2) + "\n")
    plot_confusion(out / "confusion.png", matrix.matrix.cpu().numpy(), class_names)
    iu = {k: (0.0 if v is None or v != v else float(v)) for k, v in metrics["per_class_iu"].items()}
    plot_per_class_iou(out / "per_class_iou.png", iu)
    return payload


def jsonable(value: Any) -> Any:
    """Metrics as strict JSON: tensors to lists, NaN (classes never seen) to null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.tolist())
    if isinstance(value, float) and value != value:
        return None
    return value


@dataclass
class _Model:
    """What ``fcnseg eval`` needs of a checkpoint or an exported ``.onnx`` file."""

    path: Path
    predictor: Predictor
    config: dict[str, Any]
    ignore_index: int | None
    precision: str = "fp32"


def _load_model(path: str | Path | Checkpoint, dev: torch.device) -> _Model:
    """A checkpoint (file or run directory) or an exported ``.onnx`` file, ready on ``dev``
    (ONNX files run on the CPU)."""
    from fcnseg.checkpoint import Checkpoint, load_checkpoint

    if not isinstance(path, Checkpoint) and str(path).endswith(".onnx"):
        from fcnseg.export import read_onnx_metadata

        predictor = Predictor.from_onnx(path)
        meta = read_onnx_metadata(path)
        return _Model(Path(path), predictor, meta.get("config") or {}, meta.get("ignore_index"),
                      meta.get("precision", "fp32"))  # fmt: skip
    ckpt = path if isinstance(path, Checkpoint) else load_checkpoint(path)  # loaded: --weights
    predictor = Predictor.from_loaded(ckpt, str(dev))
    return _Model(ckpt.path, predictor, ckpt.config, ckpt.ignore_index)


def _precision(model: _Model, predictor: Predictor) -> str:
    """The precision predictions ran at: an ONNX file's own (``fp32`` unless it records one),
    else the autocast dtype that applied on the predictor's device."""
    if not isinstance(predictor.model, nn.Module):
        return model.precision
    amp, dev = predictor.amp, predictor.device.type
    applied = (amp == "bf16" and dev in ("cpu", "cuda")) or (amp == "fp16" and dev == "cuda")
    return str(amp) if applied else "fp32"


def _eval_config(model: _Model, config: str | Path | None, overrides: list[str] | None) -> Config:
    """The config of ``config`` (file or shipped name), else the one stored with the model;
    with ``overrides`` applied."""
    import yaml

    from fcnseg.checkpoint import CheckpointError
    from fcnseg.config import Config, apply_overrides, load_config

    if config is not None:
        return load_config(config, overrides)
    if not model.config:
        raise CheckpointError(
            f"{model.path} carries no config (exported by an older fcnseg): name the config of "
            "its data with --config"
        )
    raw = apply_overrides(yaml.safe_load(yaml.safe_dump(model.config)) or {}, overrides or [])
    return Config.from_dict(raw, source=f"config stored in {model.path}")


def _eval_inputs(
    model: _Model, cfg: Config, split: str, dist: DistInfo, dev: torch.device, per_image: bool
) -> tuple[SegmentationDataset, DataLoader, int]:
    """The dataset of ``split`` (its classes must be the model's), a padded loader over this
    process's shard of it (one image per batch when ``per_image``: resized for the network one
    by one, never padded first) and the ignore index."""
    from fcnseg.data.transforms import PadCollate, fill_from_preprocess
    from fcnseg.engine.build import dataset_for_eval
    from fcnseg.engine.loaders import ShardSampler, make_loader

    dataset = dataset_for_eval(cfg, split)
    classes = model.predictor.classes
    if list(dataset.classes) != list(classes):
        raise ValueError(
            f"{model.path} was trained on classes {classes}, the data has {dataset.classes}"
        )
    ignore_index = dataset.ignore_index if model.ignore_index is None else model.ignore_index
    fill = tuple(c / 255 for c in fill_from_preprocess(model.predictor.model.preprocess))
    loader = make_loader(
        dataset,
        batch_size=1 if per_image else cfg.data.val_batch_size,
        sampler=ShardSampler(len(dataset), rank=dist.rank, world_size=dist.world_size),
        collate=PadCollate(ignore_index=ignore_index, fill=fill),
        num_workers=cfg.data.num_workers,
        device=dev,
    )
    return dataset, loader, ignore_index


def _write_outputs(
    out: Path,
    matrix: ConfusionMatrix,
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    predictor: Predictor,
    extra: dict[str, Any],
    ignore_index: int,
) -> dict[str, Any]:
    """The report (:func:`write_report`) and, for the ``kept`` triples, ``panels.png`` in
    ``out``; prints the metrics table. Returns the report."""
    metrics = write_report(out, matrix, predictor.classes, extra=extra)
    if kept:
        from fcnseg.viz import save_panels

        rows = [
            ((img * 255).round().byte().permute(1, 2, 0).numpy(), gt.numpy(), pred.numpy())
            for img, gt, pred in kept
        ]
        save_panels(out / "panels.png", rows, predictor.palette, predictor.classes,
                    ignore_index=ignore_index)  # fmt: skip
    print(format_metrics(metrics))
    print(f"\nwrote {out}/metrics.json, confusion.png, per_class_iou.png")
    return metrics


def run_evaluation(
    checkpoint: str | Path | Checkpoint,
    *,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    split: str | None = None,
    out_dir: str | Path | None = None,
    save_panels: int = 0,
    device: str = "auto",
    progress: bool = True,
    options: InferenceOptions | None = None,
    precision: str | None = None,
    compile: bool = False,
) -> dict[str, Any]:
    """``fcnseg eval``: evaluate a checkpoint (file or run directory) or an exported ``.onnx``
    file on a split of the data its stored config (or ``config``) names.

    ``options``: how each image is predicted (default: whole images at the training's scale,
    :mod:`fcnseg.inference.scale`; data that its config resizes to that size already is not
    resized again), e.g. ``InferenceOptions(tile=256, overlap=64)`` for sliding-window
    evaluation; recorded in the report with the size images were shown to the network at.
    ``precision``: ``"fp32"`` or ``"bf16"`` (autocast) for a checkpoint (default: its
    ``train.amp``); an ``.onnx`` file runs at its own (``int8`` for a quantized export;
    asking for another is an error: :func:`fcnseg.inference.precision.autocast_for`).
    ``compile``: :meth:`~fcnseg.inference.Predictor.compile` the network first.
    Works under torchrun (each process evaluates a shard; the confusion matrices are summed).
    Writes ``metrics.json``, ``confusion.png``, ``per_class_iou.png`` (and panels) to
    ``out_dir`` and prints the metrics table.
    """
    from fcnseg.engine.distributed import setup

    amp = autocast_for(checkpoint, precision)
    dist, dev = setup(device)
    options = options or InferenceOptions()
    model = _load_model(checkpoint, dev)
    cfg = _eval_config(model, config, overrides)
    split = split or cfg.data.val_split
    predictor = model.predictor
    if isinstance(predictor.model, nn.Module):
        predictor.amp = cfg.train.amp if precision is None else amp
    if compile:
        predictor.compile()
    # The training's scale (--scale train): images the data does not resize are resized for
    # the network one at a time; data resized to the training size already are left alone.
    scaled = options.scale == "train" and predictor.train_size is not None
    data_size = tuple(cfg.data.resize) if cfg.data.resize else None
    dataset, loader, ignore_index = _eval_inputs(
        model, cfg, split, dist, dev, per_image=scaled and data_size is None
    )
    matrix, kept = evaluate_predictor(predictor, loader, ignore_index=ignore_index, device=dev,
                                      progress=progress and dist.is_main, keep=save_panels,
                                      options=options)  # fmt: skip
    out = Path(out_dir) if out_dir else model.path.parent / f"eval-{split}"
    if not dist.is_main:
        return matrix.compute(predictor.classes)
    network_size = predictor.train_size if scaled else data_size
    extra = {
        "checkpoint": str(model.path),
        "split": split,
        "images": len(dataset),
        "inference": options.as_dict(),
        "precision": _precision(model, predictor),
        "network_input_size": list(network_size) if network_size else None,
    }
    return _write_outputs(out, matrix, kept, predictor, extra, ignore_index)
