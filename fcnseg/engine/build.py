"""Everything a run is built from its config: datasets and transforms, the batch stream, the
model, the loss, the optimiser and the learning-rate schedule.

The Trainer calls these and only these, so reading this module tells what a config key does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fcnseg import checkpoint as ckpt
from fcnseg.config import Config, ConfigError
from fcnseg.data.base import SegmentationDataset
from fcnseg.data.registry import build_dataset
from fcnseg.data.resident import ResidentData
from fcnseg.data.transforms import PadCollate, eval_transforms, train_transforms
from fcnseg.engine.loaders import Resized, SampleStream, SeededSamples, ShardSampler, make_loader
from fcnseg.losses import CLASS_WEIGHTINGS, SegmentationLoss, median_frequency_weights
from fcnseg.models import build_model, spec_differences
from fcnseg.models.base import Margins
from fcnseg.models.finetune import load_for_finetuning
from fcnseg.weights import Preprocess

__all__ = [
    "build_criterion",
    "build_optimizer",
    "build_scheduler",
    "build_split",
    "build_train_model",
    "dataset_for_eval",
    "init_weights",
    "lr_factor",
    "param_groups",
    "prepare_train_set",
    "resident_train_data",
    "train_batches",
    "train_context",
    "val_loader",
]

log = logging.getLogger("fcnseg")


# ---------------------------------------------------------------------- data


def build_split(cfg: Config, split: str) -> SegmentationDataset:
    """The dataset of ``split`` without transforms: the validation split may come from
    ``data.val_*`` (another dataset, root or options)."""
    d = cfg.data
    if split == d.val_split and (d.val_dataset or d.val_root or d.val_options is not None):
        options = d.val_options if d.val_options is not None else d.options
        return build_dataset(d.val_dataset or d.dataset, d.val_root or d.root, split, **options)
    return build_dataset(d.dataset, d.root, split, **d.options)


def dataset_for_eval(cfg: Config, split: str) -> SegmentationDataset:
    """The dataset of ``split`` with evaluation transforms (resized as in training)."""
    dataset = build_split(cfg, split)
    plain = eval_transforms()
    dataset.transforms = Resized(cfg.data.resize, plain) if cfg.data.resize else plain
    return dataset


def train_context(cfg: Config, model: nn.Module) -> Margins | None:
    """The input margins ``model`` wants around each ``data.crop_size`` training crop (its
    ``training_context``: a valid U-Net's context); ``None`` without a crop or a want."""
    crop = cfg.data.crop_size
    context = model.training_context(*crop) if crop else None
    if context is not None and cfg.data.resident:
        raise ConfigError(
            "data.resident does not support a model that trains on crops with context from the "
            f"image ({type(model).__name__}, margins {context}): set data.resident=false"
        )
    return context


def prepare_train_set(
    cfg: Config,
    dataset: SegmentationDataset,
    fill: tuple[int, int, int],
    run_dir: Any,
    *,
    context: Margins | None = None,
) -> SegmentationDataset:
    """Give the training set its augmentation (and U-Net weight maps, if configured); with
    ``context`` (:func:`train_context`), images carry those margins around each crop."""
    d = cfg.data
    augment = train_transforms(
        crop_size=tuple(d.crop_size) if d.crop_size else None,
        scale_range=tuple(d.scale_range),
        hflip=d.hflip,
        jitter=d.jitter,
        fill=fill,
        ignore_index=dataset.ignore_index,
        elastic_sigma=d.elastic_sigma,
        elastic_grid=d.elastic_grid,
        context=context,
    )
    dataset.transforms = Resized(d.resize, augment) if d.resize else augment
    if not cfg.train.weight_map:
        return dataset
    # U-Net's border weights, computed once per label file and moved with the mask.
    from fcnseg.weightmap import WeightMapCache, WithWeightMaps

    t = cfg.train
    cache = WeightMapCache(
        cache_dir=run_dir / "weightmaps",
        w0=t.weight_map_w0,
        sigma=t.weight_map_sigma,
        class_weights=t.weight_map_class_weights,
        ignore_index=dataset.ignore_index,
    )
    return WithWeightMaps(dataset, cache)  # type: ignore[return-value]


def resident_train_data(
    cfg: Config, dataset: SegmentationDataset, device: torch.device, progress: bool
) -> ResidentData:
    """``data.resident``: the training set decoded once into ``device`` memory (at
    ``data.resize``)."""
    dataset.transforms = None
    size = tuple(cfg.data.resize) if cfg.data.resize else None
    return ResidentData.from_dataset(dataset, size=size, device=device, progress=progress)  # type: ignore[arg-type]


def train_batches(
    cfg: Config,
    data: SegmentationDataset | ResidentData,
    *,
    collate: PadCollate,
    start_sample: int,
    rank: int,
    world_size: int,
    device: torch.device,
) -> Iterator[Any]:
    """The endless stream of training batches, resuming after ``start_sample`` samples (of this
    rank); a pure function of (seed, position), so a resumed run sees what an uninterrupted one
    would have."""
    d = cfg.data
    stream = SampleStream(
        len(data), seed=cfg.train.seed, start=start_sample, rank=rank, world_size=world_size
    )
    if isinstance(data, ResidentData):
        return _resident_batches(cfg, data, stream, collate.fill)
    loader = make_loader(
        SeededSamples(data),
        batch_size=d.batch_size,
        sampler=stream,
        collate=collate,
        num_workers=d.num_workers,
        device=device,
    )
    return iter(loader)


def _resident_batches(
    cfg: Config, data: ResidentData, stream: SampleStream, fill: tuple[float, ...]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of the resident data augmented on its device in one affine warp each, seeded by
    the batch's first sample seed."""
    d = cfg.data
    crop = tuple(d.crop_size) if d.crop_size else tuple(data.images.shape[-2:])
    dev = data.images.device
    samples = iter(stream)
    while True:
        batch = [next(samples) for _ in range(d.batch_size)]
        index = torch.tensor([i for i, _ in batch], device=dev)
        generator = torch.Generator(device=dev).manual_seed(batch[0][1])
        yield data.augment(
            index,
            crop=crop,  # type: ignore[arg-type]
            scale_range=tuple(d.scale_range),  # type: ignore[arg-type]
            hflip=d.hflip,
            fill=fill,
            generator=generator,
        )


def val_loader(
    cfg: Config, dataset: SegmentationDataset, collate: PadCollate, rank: int, world_size: int,
    device: torch.device,
) -> Any:  # fmt: skip
    """Each rank's share of the validation set, in order, padded to the batch's largest size."""
    return make_loader(
        dataset,
        batch_size=cfg.data.val_batch_size,
        sampler=ShardSampler(len(dataset), rank=rank, world_size=world_size),
        collate=collate,
        num_workers=cfg.data.num_workers,
        device=device,
    )


# ---------------------------------------------------------------------- model


def build_train_model(cfg: Config, num_classes: int) -> nn.Module:
    """The configured model with its initial weights: ``backbone_weights`` goes to the builder,
    then ``init_from`` weights are loaded (:func:`init_weights`). Their spec must match the
    configured one field for field except the model name (staged training: FCN-32s → 16s → 8s)
    and the class count (fine-tuning onto other classes); the layers whose shapes depend on the
    class count, or that the weights lack, keep their fresh initialisation
    (:func:`fcnseg.models.finetune.load_for_finetuning`) and are logged."""
    spec = cfg.model.spec(num_classes)
    init = {k: v for k, v in cfg.model.arguments.items() if k not in spec}
    source = init.pop("init_from", None)
    model = build_model(spec, **init)
    if not source:
        return model
    parent_ckpt = init_weights(source)
    state, parent, label = parent_ckpt.state_dict, parent_ckpt.model, str(parent_ckpt.path)
    diffs = spec_differences(
        parent, spec, ignore=("name", "num_classes"), labels=("checkpoint", "this run")
    )
    if diffs:
        raise ckpt.CheckpointError(
            f"model.init_from: {label} does not match the configured model "
            f"({'; '.join(diffs)}); use a checkpoint of the same model family"
        )
    try:
        reset = load_for_finetuning(model, state, spec)
    except ValueError as err:
        raise ckpt.CheckpointError(f"model.init_from: {label}: {err}") from err
    # The weights were trained on inputs normalised their way (e.g. the reference's BGR,
    # 0–255, mean-subtracted): keep feeding them so.
    model.set_preprocess(Preprocess.from_dict(parent_ckpt.preprocess))
    log.info("initialising from %s (input: %s)", label, model.preprocess)
    kept = "; ".join(f"{layer} ({why})" for layer, why in reset.items())
    classes = parent.get("num_classes", num_classes)
    if classes != num_classes:
        log.warning(
            "model.init_from: %s has %s classes, this run %d: these layers depend on the class "
            "count and start from their fresh initialisation: %s; everything else is loaded",
            label, classes, num_classes, kept,
        )  # fmt: skip
    elif reset:
        log.info("model.init_from: layers new to %s keep their fresh initialisation: %s",
                 spec["name"], kept)  # fmt: skip
    return model


def init_weights(source: str | Path) -> ckpt.Checkpoint:
    """What ``model.init_from`` names, as a checkpoint (weights, model spec, preprocess, …):
    an fcnseg run directory or checkpoint, a pretrained-weights name (``torchvision/…``,
    ``reference/…``; downloaded once) or a file in one of their layouts."""
    from fcnseg.models.pretrained import pretrained_state

    is_run = Path(source).is_dir()
    return ckpt.load_checkpoint(source) if is_run else pretrained_state(source)


# ---------------------------------------------------------------------- optimisation


def class_weights(
    cfg: Config, train_set: SegmentationDataset, resident: ResidentData | None, num_classes: int
) -> torch.Tensor | None:
    """``train.class_weights``: none, a list, or one of :data:`~fcnseg.losses.CLASS_WEIGHTINGS`
    over the training masks."""
    w = cfg.train.class_weights
    if w is None:
        return None
    if isinstance(w, list):
        if len(w) != num_classes:
            raise ConfigError(f"train.class_weights has {len(w)} values for {num_classes} classes")
        return torch.tensor(w, dtype=torch.float32)
    if resident is not None:  # the masks as trained on, already in memory
        masks: Any = resident.masks.long().cpu()
    else:
        masks = (train_set.load(i)[1] for i in range(len(train_set)))
    power = CLASS_WEIGHTINGS[w]
    weights = median_frequency_weights(masks, num_classes, train_set.ignore_index) ** power
    log.info("%s class weights: %s", w.replace("_", "-"), [round(float(x), 3) for x in weights])
    return weights


def build_criterion(cfg: Config, ignore_index: int, weights: torch.Tensor | None) -> nn.Module:
    t = cfg.train
    return SegmentationLoss(
        ignore_index=ignore_index,
        reduction=t.loss_reduction,
        class_weights=weights,
        sample_prob=t.loss_sample_prob,
    )


def param_groups(model: nn.Module, cfg: Config) -> list[dict[str, Any]]:
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


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's) or Adam, over :func:`param_groups`."""
    groups = param_groups(model, cfg)
    if cfg.train.optimizer == "adam":
        # The fused kernel: one pass over all tensors (several times faster than the per-tensor
        # loop on CPU for VGG16's 134M parameters); same update up to float rounding.
        fused = all(
            p.is_floating_point() and p.device.type in ("cpu", "cuda")
            for g in groups
            for p in g["params"]
        )
        return torch.optim.Adam(groups, lr=cfg.train.lr, fused=fused)
    return torch.optim.SGD(groups, lr=cfg.train.lr, momentum=cfg.train.momentum)


def lr_factor(cfg: Config) -> Callable[[int], float]:
    """The learning-rate multiplier at each iteration: schedule × linear warm-up."""
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


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Config
) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg))
