"""The shipped CamVid CPU configs (the 30- and 60-minute rows of docs/results.md) load and
train a few iterations on the shared CamVid at a tiny size, and ``fcnseg eval`` of the result
writes the four metrics and the per-class IoU of CamVid's 11 classes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from fcnseg.cli import main

CAMVID = ["Sky", "Building", "Pole", "Road", "Sidewalk", "Tree", "SignSymbol", "Fence", "Car",
          "Pedestrian", "Bicyclist"]  # fmt: skip
TINY = ["train.iterations=2", "train.eval_every=2", "train.checkpoint_every=2",
        "data.resize=[48, 64]", "data.crop_size=[48, 64]", "data.batch_size=2"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "amp", "weighting"),
    [
        ("fcn8s-atonce_vgg16_camvid-180x240_cpu30", None, "median_frequency"),
        ("fcn8s-atonce_vgg16_camvid-180x240_cpu60", "bf16", "sqrt_median_frequency"),
    ],
)
def test_camvid_cpu_config_trains_and_evaluates(
    name: str,
    amp: str | None,
    weighting: str,
    shared_dir: Path,
    shared_path: Callable[..., Path],
    vgg16_shared_weights: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shared_path("data", "camvid")
    monkeypatch.setenv("FCNSEG_SHARED", str(shared_dir))
    run = tmp_path / "run"
    sets = [x for o in TINY for x in ("--set", o)]
    assert main(["train", name, "-o", str(run), "--no-progress", *sets]) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["train"]["amp"], config["train"]["class_weights"]) == (amp, weighting)
    assert config["model"]["backbone_weights"] == str(vgg16_shared_weights)
    out = tmp_path / "eval"
    last = run / "checkpoints" / "last.safetensors"
    assert main(["eval", str(last), "-o", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"))
    assert list(metrics["per_class_iu"]) == CAMVID and metrics["images"] == 101
