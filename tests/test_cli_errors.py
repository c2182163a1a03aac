"""A user's mistake on the command line is one line naming what is wrong and what to do (the
nearest valid name and all of them, for a name); ``fcnseg --debug`` shows the traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from fcnseg.cli import main
from fcnseg.data.datasets.synthetic import SyntheticShapes

#: A config that trains nothing heavy (the checks fire before any training).
CONFIG = "fcn8s_resnet18_synthetic"


def fail(argv: list[str]) -> str:
    """Run ``fcnseg argv`` in-process; it must stop with one line ``fcnseg <command>: …``."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    message = info.value.code
    assert isinstance(message, str), f"exit status {message!r}, not a message"
    command = next(a for a in argv if not a.startswith("-"))
    assert message.startswith(f"fcnseg {command}: "), message
    assert "\n" not in message and "Traceback" not in message, message
    return message


@pytest.fixture(scope="module")
def synthetic_checkpoint(tmp_path_factory: pytest.TempPathFactory, make_fcn_checkpoint) -> Path:
    """An FCN-8s checkpoint with the synthetic data set's classes (no stored config)."""
    n = len(SyntheticShapes.classes)
    return make_fcn_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "m.safetensors",
        classes=list(SyntheticShapes.classes),
        palette=[[i * 40, 0, 0] for i in range(n)],
    )


def test_unknown_backbone_suggests_the_nearest(tmp_path: Path) -> None:
    message = fail(["train", CONFIG, "-o", str(tmp_path), "--set", "model.backbone=resnet34"])
    assert "unknown backbone 'resnet34'; did you mean 'resnet" in message
    assert "choices: alexnet, googlenet, mobilenet_v3_large, resnet18, resnet50, vgg16" in message
    # Negative control: nothing close, no suggestion (but still the choices).
    message = fail(["summary", "fcn8s", "--backbone", "zzzz"])
    assert "did you mean" not in message and "choices: alexnet" in message


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--set", "model.mode=caffe"], "mode='caffe' is VGG16-only"),
        (["--set", "train.lrr=1"], "unknown key(s) ['lrr']; did you mean 'lr'?"),
        (["--set", "train.schedule=pol"], "unknown schedule 'pol'; did you mean 'poly'?"),
        (["--set", "train.optimizer=adamw"], "unknown optimizer 'adamw'; did you mean 'adam'?"),
        (["--set", "train.loss_reduction=avg"], "choices: mean, sum"),
        (["--set", "data.dataset=camvd"], "unknown dataset 'camvd'; did you mean 'camvid'?"),
        (["--set", "model.name=fcn8"], "unknown model 'fcn8'; did you mean 'fcn8s'"),
        (["--set", "model.backbone"], "expected key=value"),
        (["--set", "model.backbon=vgg16"], "['backbon']; did you mean 'backbone'"),
        (["--set", "model.num_classes=3"], "model.num_classes: the number of classes comes from"),
    ],
)
def test_config_mistakes(tmp_path: Path, argv: list[str], expected: str) -> None:
    assert expected in fail(["train", CONFIG, "-o", str(tmp_path / "run"), *argv])
    assert not (tmp_path / "run").exists()  # refused before any run folder is made


def test_unknown_shipped_config_and_folder(tmp_path: Path) -> None:
    message = fail(["train", "fcn8s_resnt18_synthetic", "-o", str(tmp_path)])
    assert "did you mean 'fcn8s_resnet18_synthetic'" in message and "unet_isbi2012" in message


def test_missing_weights_file_is_a_config_mistake(tmp_path: Path) -> None:
    weights = tmp_path / "nope.pth"
    argv = ["train", CONFIG, "-o", str(tmp_path / "run"), "--no-progress"]
    message = fail([*argv, "--set", f"model.backbone_weights={weights}"])
    assert f"weights file {weights} does not exist" in message
    assert "--resume" not in message  # not an I/O failure of the run


def test_imagenet_weights_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    def unreachable(address: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))  # no cached copy
    argv = ["train", CONFIG, "-o", str(tmp_path / "run"), "--no-progress"]
    try:
        message = fail([*argv, "--set", "model.backbone_weights=imagenet"])
    finally:
        torch.hub.set_dir(old)
    assert "cannot download ImageNet weights" in message and "backbone_weights=" in message


def test_eval_unknown_split(synthetic_checkpoint: Path, tmp_path: Path) -> None:
    argv = ["eval", str(synthetic_checkpoint), "--config", CONFIG, "-o", str(tmp_path)]
    message = fail([*argv, "--split", "tst", "--no-progress"])
    assert "unknown split 'tst' for synthetic; did you mean 'test'? splits: train, val, test" in (
        message
    )


def test_eval_folder_without_checkpoints(tmp_path: Path) -> None:
    assert "without best/last checkpoints" in fail(["eval", str(tmp_path)])


def test_missing_checkpoint(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    assert f"checkpoint {missing} does not exist" in fail(
        ["predict", str(missing), "x.png", "-o", str(tmp_path)]
    )
    assert "does not exist" in fail(["export", str(missing), "-o", str(tmp_path / "m.onnx")])


def test_device_this_machine_lacks(
    synthetic_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["predict", str(synthetic_checkpoint), str(tmp_path), "-o", str(tmp_path / "out")]
    message = fail([*argv, "--device", "cuda"])
    assert "--device 'cuda': CUDA is not available" in message and "use cpu or auto" in message
    assert "is not a device" in fail([*argv, "--device", "gpu0"])
    message = fail(["train", CONFIG, "-o", str(tmp_path / "r"), "--set", "train.device=cuda"])
    assert "train.device 'cuda': CUDA is not available" in message


def test_export_to_a_folder(synthetic_checkpoint: Path, tmp_path: Path) -> None:
    message = fail(["export", str(synthetic_checkpoint), "-o", str(tmp_path)])
    assert "is a folder; name the file to write" in message
    assert list(tmp_path.iterdir()) == []


def test_summary_input_and_model_mistakes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "fcn32s", "--input", "64x64"]) == 0  # H×W is fine (3 channels)
    assert "(1, 21, 64, 64)" in capsys.readouterr().out
    assert "give HxW or CxHxW" in fail(["summary", "fcn32s", "--input", "1x3x64x64"])
    assert "takes 3-channel images" in fail(["summary", "fcn32s", "--input", "2x64x64"])
    message = fail(["summary", "fcn9s"])
    assert "did you mean 'fcn8s'" in message and "unet" in message
    assert "--backbone applies to FCN models" in fail(["summary", "unet", "--backbone", "vgg16"])
    assert "traces FCN models" in fail(["geometry", "unet"])


def test_serve_port_in_use(synthetic_checkpoint: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = fail(["serve", str(synthetic_checkpoint), "--port", str(port)])
    assert message == f"fcnseg serve: port {port} is in use; choose another with --port"


def test_debug_shows_the_traceback() -> None:
    with pytest.raises(ValueError, match="unknown model 'fcn9s'"):
        main(["--debug", "summary", "fcn9s"])
    plain = subprocess.run(
        [sys.executable, "-m", "fcnseg", "summary", "fcn8s", "--backbone", "resnet34"],
        capture_output=True,
        text=True,
    )
    assert plain.returncode == 1
    assert plain.stderr.strip().splitlines() == [
        "fcnseg summary: unknown backbone 'resnet34'; did you mean 'resnet50' or 'resnet18'? "
        "choices: alexnet, googlenet, mobilenet_v3_large, resnet18, resnet50, vgg16"
    ]
    debug = subprocess.run(
        [sys.executable, "-m", "fcnseg", "--debug", "summary", "fcn8s", "--backbone", "resnet34"],
        capture_output=True,
        text=True,
    )
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "build_backbone" in debug.stderr


def test_debug_shows_the_cause_of_a_commands_own_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Commands that end with their own one-line message still show its cause with --debug."""
    with pytest.raises(SystemExit, match="without best/last"):
        main(["--debug", "eval", str(tmp_path)])
    err = capsys.readouterr().err
    assert "Traceback" in err and "CheckpointError" in err


def test_interrupt_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import fcnseg.cli.model as model_cli

    def interrupted(args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(model_cli, "_summary", interrupted)
    assert main(["summary", "fcn8s"]) == 130
    assert capsys.readouterr().err == "fcnseg summary: interrupted\n"


def test_a_file_where_a_folder_belongs(synthetic_checkpoint: Path, tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    message = fail(["train", CONFIG, "-o", str(file)])
    assert message == f"fcnseg train: -o {file} is a file; give a folder (it is created if missing)"
    assert "is a file" in fail(["predict", str(synthetic_checkpoint), str(file), "-o", str(file)])
    message = fail(["export", str(synthetic_checkpoint), "-o", str(file / "m.onnx")])
    assert f"{file} is a file, not a folder" in message
    assert file.read_text() == "x"


def test_config_not_yaml_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("model: [unclosed\n")
    message = fail(["train", str(config), "-o", str(tmp_path / "run")])
    assert message == (
        f"fcnseg train: {config}: not valid YAML: expected ',' or ']', but got '<stream end>' "
        "at line 2, column 1"
    )
