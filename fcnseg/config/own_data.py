"""A config for a user's own data folder: the survey's classes plus a recipe that learns on a CPU.

The recipe is the demo's (FCN-8s on ResNet-18, Adam 1e-3, poly decay, batch 8 — it learns from
random initialisation in minutes on two CPU cores), with the data decoded once into memory at a
training size near 160×224 pixels that keeps the folder's typical aspect ratio, and batches
augmented there (random scale 0.75–1.25, flips). Everything is an ordinary config key: print it
with ``--save-config``, edit it, train from the file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fcnseg.data.base import DataError
from fcnseg.data.datasets.folder import holdout_counts
from fcnseg.data.survey import FolderSurvey, median_size

__all__ = ["RECIPE", "folder_config", "train_size"]

#: Training pixels per image the recipe aims at (160×224: fast on a CPU, enough for objects).
TARGET_PIXELS = 160 * 224
#: Decode the training set into memory (``data.resident``) up to this many bytes.
RESIDENT_BYTES = 2 * 1024**3

#: The recipe's model and optimisation keys (the demo's; see the module docstring).
RECIPE: dict[str, Any] = {
    "model": {"name": "fcn8s", "backbone": "resnet18", "backbone_weights": None},
    "train": {
        "optimizer": "adam",
        "lr": 1.0e-3,
        "weight_decay": 0.0,
        "bias_lr_mult": 1.0,
        "schedule": "poly",
        "warmup_iters": 0,
        "loss_reduction": "mean",
        "log_every": 10,
        "seed": 0,
    },
}


def train_size(sizes: dict[tuple[int, int], int], target: int = TARGET_PIXELS) -> list[int]:
    """[H, W] to train at: the median image size scaled to about ``target`` pixels (never up),
    multiples of 16, at least 32."""
    h, w = median_size(sizes)
    scale = min(1.0, math.sqrt(target / (h * w)))
    return [max(32, round(h * scale / 16) * 16), max(32, round(w * scale / 16) * 16)]


def _iterations(train_pairs: int, batch: int) -> int:
    """About 15 epochs, at least 300 and at most 3000 iterations."""
    return min(3000, max(300, math.ceil(15 * train_pairs / batch)))


def folder_config(survey: FolderSurvey, *, name: str | None = None) -> dict[str, Any]:
    """The raw config mapping (as in a YAML file) that trains on ``survey``'s folder."""
    meta = {
        "classes": list(survey.classes),
        "palette": [list(c) for c in survey.palette],
        "ignore_index": survey.ignore_index,
    }
    options: dict[str, Any] = {"meta": meta}
    if survey.mask_values is not None:
        options["mask_values"] = dict(survey.mask_values)
    if "all" in survey.splits:
        pairs = len(survey.splits["all"])
        if pairs < 2:
            raise DataError(
                f"{survey.root} holds {pairs} image/mask pair: at least 2 are needed (one to "
                "train on, one to validate)"
            )
        holdout = min(5, pairs)
        options["holdout"] = holdout  # every holdout-th pair (by name) is val
        train_pairs, _ = holdout_counts(pairs, holdout)
    else:
        train_pairs = len(survey.splits["train"])
    size = train_size(survey.sizes)
    batch = 8
    resident = train_pairs * size[0] * size[1] * 4 <= RESIDENT_BYTES
    data = {
        "dataset": "folder",
        "root": str(Path(survey.root).resolve()),
        "train_split": "train",
        "val_split": "val",
        "options": options,
        "resize": size,
        "crop_size": size,
        "scale_range": [0.75, 1.25],
        "hflip": True,
        "resident": resident,
        "batch_size": batch,
        "val_batch_size": batch,
        "num_workers": 0 if resident else 2,
    }
    iterations = _iterations(train_pairs, batch)
    every = max(1, iterations // 3)
    train = {
        **RECIPE["train"],
        "iterations": iterations,
        "eval_every": every,
        "checkpoint_every": every,
    }
    return {
        "name": name or Path(survey.root).resolve().name,
        "model": dict(RECIPE["model"]),
        "data": data,
        "train": train,
    }
