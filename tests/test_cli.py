"""The ``fcnseg`` command line: summary and geometry."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fcnseg.cli import main


def test_cli_summary_fcn8s_vgg16(capsys: pytest.CaptureFixture[str]) -> None:
    """The paper's FCN-8s/VGG16 (21 classes): ≈134M parameters, 500×500 in, 500×500 out."""
    assert main(["summary", "fcn8s", "--backbone", "vgg16", "--num-classes", "21"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 134,368,799" in out
    assert "(1, 21, 500, 500)" in out
    assert "score_pool3" in out and "upscore" in out


def test_cli_summary_of_unet_and_of_a_checkpoint(
    tmp_path, make_fcn_checkpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fcnseg summary unet` (the paper's 572×572 grey input by default), and the model a
    checkpoint file or run folder describes, at an --input of H×W."""
    assert main(["summary", "unet"]) == 0
    out = capsys.readouterr().out
    assert "Input shape: (1, 572, 572)" in out and "Total params: 31,030,658" in out
    ckpt = make_fcn_checkpoint(tmp_path / "checkpoints" / "best.safetensors",
                               classes=["a", "b", "c"], palette=[[0, 0, 0]] * 3)  # fmt: skip
    for target in (ckpt, tmp_path):
        assert main(["summary", str(target), "--input", "40x56"]) == 0
        out = capsys.readouterr().out
        assert "Input shape: (3, 40, 56)" in out and "(1, 3, 40, 56)" in out  # 3 classes
        assert "layer4" in out  # its ResNet-18 backbone, not the default VGG16


def test_cli_geometry_caffe_derives_reference_crops(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["geometry", "fcn8s", "--mode", "caffe"]) == 0
    out = capsys.readouterr().out
    assert "score_pool4c=5, score_pool3c=9, score=31" in out


def test_cli_errors_name_the_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="--input"):
        main(["summary", "fcn32s", "--input", "3xax500"])
    with pytest.raises(SystemExit, match="unknown backbone 'vgg19'"):
        main(["summary", "fcn32s", "--backbone", "vgg19"])
    with pytest.raises(SystemExit, match="fcn8s only"):
        main(["summary", "fcn16s", "--at-once"])


def test_cli_entry_point_runs_as_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fcnseg", "--help"], capture_output=True, text=True, check=True
    )
    assert "summary" in proc.stdout and "geometry" in proc.stdout


def test_cli_train_eval_demo(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """`fcnseg train` → run dir; `fcnseg eval` → table + metrics.json with the paper's four
    metrics and per-class IoU by name, plots and panels; `fcnseg demo` end to end (shortened)."""
    import json

    tiny = ["--set", "data.options={num_images: 8, size: [48, 64]}", "--set", "train.iterations=2",
            "--set", "train.eval_every=2", "--set", "data.batch_size=2"]  # fmt: skip
    run = tmp_path / "run"
    assert main(["train", "fcn8s_resnet18_synthetic", "-o", str(run), "--no-progress", *tiny]) == 0
    assert "run directory" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--resume"):
        main(["train", "fcn8s_resnet18_synthetic", "-o", str(run), "--no-progress", *tiny])
    out = tmp_path / "eval"
    assert main(["eval", str(run), "-o", str(out), "--save-panels", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "mean IU" in printed and "circle" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"pixel_acc", "mean_acc", "mean_iu", "fw_iu", "per_class_iu"} <= set(metrics)
    assert set(metrics["per_class_iu"]) == {"background", "circle", "square", "triangle", "ring",
                                            "bar"}  # fmt: skip
    for name in ("confusion.png", "per_class_iou.png", "panels.png"):
        assert (out / name).stat().st_size > 0
    refined = tmp_path / "eval-refined"
    assert main(["eval", str(run), "-o", str(refined), "--tta", "--crf", "--no-progress"]) == 0
    capsys.readouterr()
    metrics = json.loads((refined / "metrics.json").read_text())
    inference = metrics["inference"]
    assert inference["flip"] is True and inference["scales"] == [0.75, 1.0, 1.25]
    assert inference["crf"]["iterations"] == 5 and 0 <= metrics["mean_iu"] <= 1
    with pytest.raises(SystemExit, match="does not exist"):
        main(["eval", str(tmp_path / "missing.safetensors")])

    demo = tmp_path / "demo"
    assert main(["demo", "-o", str(demo), "--iterations", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "test mean IU" in printed and str(demo / "predictions") in printed
    assert len(list((demo / "predictions").glob("*.png"))) == 12
    assert (demo / "run" / "curves.png").is_file() and (demo / "run" / "metrics.json").is_file()


def test_cli_eval_sliding_window(tmp_path, make_fcn_checkpoint, capsys) -> None:
    """`fcnseg eval CKPT --tile N --overlap M`: sliding-window evaluation of a small checkpoint
    on the data of a named config, recorded in metrics.json; bad tile options fail clearly."""
    import json

    from fcnseg.data.registry import build_dataset

    data = build_dataset("synthetic", None, "val", num_images=3, size=[40, 56])
    ckpt = make_fcn_checkpoint(tmp_path / "m.safetensors", classes=list(data.classes),
                               palette=[list(c) for c in data.palette])  # fmt: skip
    args = ["eval", str(ckpt), "--config", "fcn8s_resnet18_synthetic", "--device", "cpu",
            "--set", "data.options={num_images: 3, size: [40, 56]}", "--set",
            "data.val_batch_size=2", "--no-progress"]  # fmt: skip
    out = tmp_path / "tiled"
    assert main([*args, "-o", str(out), "--tile", "32", "--overlap", "8"]) == 0
    assert "mean IU" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 3 and 0 <= metrics["mean_iu"] <= 1
    assert metrics["inference"] == {"tile": 32, "overlap": 8, "flip": False, "scales": [1.0],
                                    "crf": None, "scale": "train"}  # fmt: skip
    with pytest.raises(SystemExit, match=r"fcnseg eval: overlap must be in \[0, tile\)"):
        main([*args, "-o", str(tmp_path / "bad"), "--tile", "32"])


@pytest.mark.parametrize("command", ["eval", "predict", "serve"])
def test_cli_inference_flags_in_help(command: str, capsys) -> None:
    """predict, eval and serve take the same inference flags (tiling, TTA, CRF)."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    printed = capsys.readouterr().out
    for flag in ("--tile", "--overlap", "--tta", "--crf", "--crf-sxy"):
        assert flag in printed, (command, flag)
