"""``benchmarks/unet_vs_fcn.py`` trains through the Trainer with shipped configs: every model,
variant and dataset resolves to the intended config, and one tiny run goes end to end."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from unet_vs_fcn import DATASETS, MODELS, VARIANTS, configure, predictions, run, summarise

from fcnseg.config import shipped_configs


def _args(**kw: object) -> argparse.Namespace:
    base = dict(dataset="isbi", folds=5, seed=0, iterations=None, size=None, crop=None,
                unet_width=None, lr=None, batch=None, workers=None, device=None)  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_model_and_variant_is_a_shipped_config(dataset: str) -> None:
    shared = Path("/shared")
    for model in MODELS:
        for variant in VARIANTS:
            name, _, cfg = configure(_args(dataset=dataset), shared, model, variant, 3)
            assert name in shipped_configs()
            m, d, t = cfg.model, cfg.data, cfg.train
            assert m.name == ("unet" if model.startswith("unet") else "fcn8s")
            if model.startswith("unet"):
                assert (m.fuse, m.padding) == (
                    "sum" if model == "unet-sum" else "concat",
                    "same" if model == "unet-same" else "valid",
                )
                assert m.in_channels == (1 if dataset == "isbi" else 3)
            else:
                pretrained = m.backbone_weights is not None
                assert pretrained == (model == "fcn8s-vgg16")
                assert not pretrained or Path(m.backbone_weights).parent == shared / "weights"
            assert d.options["fold"] == 3 and d.options["folds"] == 5 and t.seed == 3
            assert d.options.get("fold_seed") == (0 if dataset == "horse" else None)
            assert d.root == str(shared / "data" / DATASETS[dataset][1])
            assert (d.elastic_sigma > 0) == ("elastic" in variant)
            assert t.weight_map == ("wmap" in variant)
            # the documented recipe
            assert (t.optimizer, t.lr, t.weight_decay, t.bias_lr_mult) == ("adam", 1e-4, 0, 1)
            assert (d.batch_size, d.crop_size, d.hflip, d.scale_range) == (
                2, [128, 128], False, [1.0, 1.0]
            )  # fmt: skip
            assert t.iterations == (80 if dataset == "isbi" else 200)
            assert t.eval_every == t.checkpoint_every == t.iterations
            assert d.resize == (None if dataset == "isbi" else [192, 192])


def test_cli_options_become_overrides() -> None:
    args = _args(dataset="horse", seed=7, iterations=30, size=96, crop=128, unet_width=8, lr=0.01)
    _, sets, cfg = configure(args, Path("/s"), "unet", "plain", 1)
    assert cfg.train.iterations == cfg.train.eval_every == cfg.train.checkpoint_every == 30
    assert cfg.data.crop_size == [96, 96] and cfg.data.resize == [96, 96]  # crop ≤ image
    assert (cfg.model.base_width, cfg.train.lr, cfg.train.seed) == (8, 0.01, 8)
    assert cfg.data.options["fold_seed"] == 7 and "data.options.fold=1" in sets


def test_one_tiny_run_end_to_end(shared_path: Callable[..., Path], tmp_path: Path) -> None:
    shared = shared_path("data", "isbi2012-em").parents[1]
    args = _args(iterations=2, size=64, crop=32, unet_width=2, batch=1, workers=0, device="cpu")
    row, trainer = run(args, shared, "unet", "elastic+wmap", 4, tmp_path)
    assert row["val_ids"] == [str(i) for i in range(24, 30)]  # fold 4: the last block
    metrics = json.loads((tmp_path / "unet-elastic+wmap" / "fold4" / "metrics.json").read_text())
    assert row["mean_iu"] == pytest.approx(metrics["mean_iu"])  # the Trainer's final evaluation
    assert row["pixel_error"] == pytest.approx(1 - metrics["pixel_acc"])
    assert row["fg_iou"] == pytest.approx(metrics["per_class_iu"]["cell"])
    assert row["train_s"] <= row["seconds"] and len(row["overrides"]) > 5
    ((image, truth, pred),) = predictions(trainer, 1)  # overlay panels: the resized slice 24
    assert image.shape == (64, 64, 3) and truth.shape == pred.shape == (64, 64)
    (entry,) = summarise([row, {**row, "fold": 3, "mean_iu": row["mean_iu"] + 0.1}])
    assert entry["folds"] == 2 and entry["mean_iu_std"] > 0
