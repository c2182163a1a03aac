"""Evaluation: one confusion matrix over the whole split, the paper's four metrics, reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from fcnseg.inference import InferenceOptions, Predictor
from fcnseg.metrics import ConfusionMatrix

if TYPE_CHECKING:
    from fcnseg.checkpoint import Checkpoint
    from fcnseg.config import Config
    from fcnseg.data.base import SegmentationDataset
    from fcnseg.engine.distributed import DistInfo

__all__ = ["evaluate", "format_metrics", "jsonable", "write_report"]


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
    matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    try:
        for images, masks in tqdm(loader, desc="eval", leave=False, disable=not progress):
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True)
            pred = predictor.probabilities_batch(images, options).argmax(1)
            matrix.update(pred, masks)
            for i in range(min(keep - len(kept), len(images))):
                kept.append((images[i].cpu(), masks[i].cpu(), pred[i].cpu()))
    finally:
        net.train(was_training)
    matrix.all_reduce()
    return matrix, kept


def format_metrics(metrics: dict[str, Any]) -> str:
    """A small text table: the four metrics, then per-class IoU."""
    lines = [
        f"pixel acc {metrics['pixel_acc']:.4f}   mean acc {metrics['mean_acc']:.4f}   "
        f"mean IU {metrics['mean_iu']:.4f}   fw IU {metrics['fw_iu']:.4f}",
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


def _eval_config(
    ckpt: Checkpoint, config: str | Path | None, overrides: list[str] | None
) -> Config:
    """The config of ``config`` (file or shipped name), else the one stored in ``ckpt``; with
    ``overrides`` applied."""
    import yaml

    from fcnseg.config import Config, apply_overrides, load_config

    if config is not None:
        return load_config(config, overrides)
    raw = apply_overrides(yaml.safe_load(yaml.safe_dump(ckpt.config)) or {}, overrides or [])
    return Config.from_dict(raw, source=f"config stored in {ckpt.path}")


def _eval_inputs(
    ckpt: Checkpoint, cfg: Config, split: str, dist: DistInfo, dev: torch.device
) -> tuple[nn.Module, SegmentationDataset, DataLoader]:
    """The model of ``ckpt`` on ``dev``, the dataset of ``split`` (its classes must be the
    checkpoint's) and a padded loader over this process's shard of it."""
    from fcnseg.data.transforms import PadCollate, fill_from_preprocess
    from fcnseg.engine.build import dataset_for_eval
    from fcnseg.engine.loaders import ShardSampler, make_loader

    dataset = dataset_for_eval(cfg, split)
    # channels_last: faster on CPU and GPU, same results to float rounding (benchmarks/speed.py)
    model = ckpt.build_model().to(dev, memory_format=torch.channels_last)
    if list(dataset.classes) != list(ckpt.classes):
        raise ValueError(
            f"{ckpt.path} was trained on classes {ckpt.classes}, the data has {dataset.classes}"
        )
    fill = tuple(c / 255 for c in fill_from_preprocess(model.preprocess))
    loader = make_loader(
        dataset,
        batch_size=cfg.data.val_batch_size,
        sampler=ShardSampler(len(dataset), rank=dist.rank, world_size=dist.world_size),
        collate=PadCollate(ignore_index=ckpt.ignore_index, fill=fill),
        num_workers=cfg.data.num_workers,
        device=dev,
    )
    return model, dataset, loader


def _write_outputs(
    out: Path,
    matrix: ConfusionMatrix,
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    ckpt: Checkpoint,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The report (:func:`write_report`) and, for the ``kept`` triples, ``panels.png`` in
    ``out``; prints the metrics table. Returns the report."""
    metrics = write_report(out, matrix, ckpt.classes, extra=extra)
    if kept:
        from fcnseg.viz import save_panels

        rows = [
            ((img * 255).round().byte().permute(1, 2, 0).numpy(), gt.numpy(), pred.numpy())
            for img, gt, pred in kept
        ]
        save_panels(out / "panels.png", rows, ckpt.palette, ckpt.classes)
    print(format_metrics(metrics))
    print(f"\nwrote {out}/metrics.json, confusion.png, per_class_iou.png")
    return metrics


def run_evaluation(
    checkpoint: str | Path,
    *,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    split: str | None = None,
    out_dir: str | Path | None = None,
    save_panels: int = 0,
    device: str = "auto",
    progress: bool = True,
    options: InferenceOptions | None = None,
) -> dict[str, Any]:
    """``fcnseg eval``: evaluate a checkpoint on a split of the data its config names.

    ``options``: how each image is predicted (default: whole images), e.g.
    ``InferenceOptions(tile=256, overlap=64)`` for sliding-window evaluation; recorded in the
    report. Works under torchrun (each process evaluates a shard; the confusion matrices are
    summed).
    Writes ``metrics.json``, ``confusion.png``, ``per_class_iou.png`` (and panels) to
    ``out_dir`` and prints the metrics table.
    """
    from fcnseg.checkpoint import load_checkpoint
    from fcnseg.engine.distributed import setup

    dist, dev = setup(device)
    ckpt = load_checkpoint(checkpoint)
    cfg = _eval_config(ckpt, config, overrides)
    split = split or cfg.data.val_split
    model, dataset, loader = _eval_inputs(ckpt, cfg, split, dist, dev)
    matrix, kept = evaluate(
        model,
        loader,
        num_classes=len(ckpt.classes),
        ignore_index=ckpt.ignore_index,
        device=dev,
        amp=cfg.train.amp,
        channels_last=True,
        progress=progress and dist.is_main,
        keep=save_panels,
        options=options,
    )
    out = Path(out_dir) if out_dir else ckpt.path.parent / f"eval-{split}"
    if not dist.is_main:
        return matrix.compute(ckpt.classes)
    extra = {
        "checkpoint": str(ckpt.path),
        "split": split,
        "images": len(dataset),
        "inference": (options or InferenceOptions()).as_dict(),
    }
    return _write_outputs(out, matrix, kept, ckpt, extra)
