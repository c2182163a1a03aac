"""``fcnseg demo``: train a small FCN-8s on generated shapes, then predict on held-out images."""

from __future__ import annotations

import json
from pathlib import Path

from fcnseg.config import load_config
from fcnseg.data.registry import build_dataset
from fcnseg.data.transforms import eval_transforms
from fcnseg.engine.evaluate import jsonable
from fcnseg.engine.trainer import Trainer
from fcnseg.inference import Predictor
from fcnseg.metrics import ConfusionMatrix

__all__ = ["DEMO_CONFIG", "run_demo"]

#: The shipped config the demo trains.
DEMO_CONFIG = "fcn8s_resnet18_synthetic"


def run_demo(out: Path, *, iterations: int | None = None, progress: bool = True) -> dict:
    """Train on the synthetic set, evaluate on its val split, predict its test split (with a
    :class:`~fcnseg.inference.Predictor`, as ``fcnseg predict`` does).

    Writes ``out/run`` (the training run: checkpoints, log.csv, curves.png, metrics.json) and
    ``out/predictions`` (an overlay with legend per test image, and their metrics.json).
    """
    from fcnseg.viz import save_overlay

    overrides = [f"train.iterations={iterations}"] if iterations else []
    cfg = load_config(DEMO_CONFIG, overrides)
    run_dir = out / "run"
    trainer = Trainer(cfg, run_dir, progress=progress)
    result = trainer.train()

    test = build_dataset(cfg.data.dataset, cfg.data.root, "test", **cfg.data.options)
    test.transforms = eval_transforms()
    predictor = Predictor(
        trainer.net.eval(),
        list(trainer.classes),
        [list(c) for c in test.palette],
        trainer.device,
        channels_last=cfg.train.channels_last,
        amp=cfg.train.amp,
    )
    matrix = ConfusionMatrix(trainer.num_classes, ignore_index=trainer.ignore_index)
    pred_dir = out / "predictions"
    for i in range(len(test)):
        image, mask = test[i]
        pred = predictor.predict(image)
        matrix.update(pred[None], mask[None])
        if i < 12:
            rgb = (image * 255).round().byte().permute(1, 2, 0).numpy()
            save_overlay(
                pred_dir / f"{test.name(i)}.png", rgb, pred.numpy(), test.palette, test.classes
            )
    test_metrics = matrix.compute(trainer.classes)
    (pred_dir / "metrics.json").write_text(json.dumps(jsonable(test_metrics), indent=2) + "\n")
    print(f"\nval mean IU {result.metrics['mean_iu']:.4f} (iteration {result.iteration})")
    print(f"test mean IU {test_metrics['mean_iu']:.4f} on {len(test)} held-out images")
    print(f"training run:  {run_dir}  (log.csv, curves.png, metrics.json, checkpoints/)")
    print(f"predictions:   {pred_dir}  (overlays with legend, metrics.json)")
    return {"val": result.metrics, "test": test_metrics}
