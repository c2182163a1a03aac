"""``fcnseg eval`` of exported ``.onnx`` files and at the training's scale; files that are not
checkpoints are named in one line (never with torch.load's ``weights_only`` advice)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from fcnseg.checkpoint import load_checkpoint, save_checkpoint
from fcnseg.cli import main

pytest.importorskip("onnxruntime")

TINY = ["--set", "data.options={num_images: 8, size: [48, 64]}", "--set", "train.iterations=2",
        "--set", "train.eval_every=2", "--set", "data.batch_size=2"]  # fmt: skip
#: The data of the random-weight checkpoint: synthetic images of 40×56, not resized.
DATA = ["--config", "fcn8s_resnet18_synthetic", "--set",
        "data.options={num_images: 3, size: [40, 56]}", "--set", "data.val_batch_size=2",
        "--device", "cpu", "--no-progress"]  # fmt: skip
METRICS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic run trained on images resized to 32×48."""
    run = tmp_path_factory.mktemp("eval-onnx") / "run"
    args = ["train", "fcn8s_resnet18_synthetic", "-o", str(run), "--no-progress", *TINY,
            "--set", "data.resize=[32, 48]"]  # fmt: skip
    assert main(args) == 0
    return run


@pytest.fixture(scope="module")
def random_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic-class FCN-8s with random score layers (varied predictions), recorded as
    trained at 32×48."""
    from fcnseg.data.registry import build_dataset
    from fcnseg.models import fcn8s

    data = build_dataset("synthetic", None, "val", num_images=1, size=[40, 56])
    torch.manual_seed(0)
    model = fcn8s(backbone="resnet18", num_classes=len(data.classes))
    with torch.no_grad():
        for layer in (model.score_fr, *model.scorers.values()):
            layer.weight.normal_(0, 0.1)
    spec = {"name": "fcn8s", "backbone": "resnet18", "num_classes": len(data.classes),
            "mode": "exact"}  # fmt: skip
    path = tmp_path_factory.mktemp("random") / "m.safetensors"
    return save_checkpoint(path, model, model_spec=spec, classes=list(data.classes),
                           palette=[list(c) for c in data.palette], ignore_index=255,
                           train_scale={"resize": [32, 48], "scale_range": [1.0, 1.0],
                                        "crop_size": None})  # fmt: skip


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_training_records_its_scale_and_the_export_carries_it(run: Path, tmp_path: Path) -> None:
    """The trained run's checkpoint records data.resize; its .onnx carries it and the config,
    so `fcnseg eval m.onnx` needs no --config and gives the run's metrics."""
    from fcnseg.export import export_model, read_onnx_metadata

    policy = load_checkpoint(run).train_scale
    assert policy == {"resize": [32, 48], "scale_range": [1.0, 1.0], "crop_size": None}
    onnx = export_model(run, tmp_path / "m.onnx")
    meta = read_onnx_metadata(onnx)
    assert meta["train_scale"] == policy and meta["config"]["data"]["resize"] == [32, 48]
    common = ["--device", "cpu", "--no-progress"]
    assert main(["eval", str(run), "-o", str(tmp_path / "a"), *common]) == 0
    assert main(["eval", str(onnx), "-o", str(tmp_path / "b"), *common]) == 0
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    for key in METRICS:
        assert a[key] == pytest.approx(b[key], abs=1e-4)
    # the data is resized to 32×48 by its config already: shown to the network as it is
    assert a["network_input_size"] == b["network_input_size"] == [32, 48]
    assert b["checkpoint"] == str(onnx)


def test_eval_onnx_equals_eval_checkpoint(random_ckpt: Path, tmp_path: Path, capsys) -> None:
    """With varied predictions: eval of the .onnx = eval of the checkpoint (--config: the
    checkpoint carries no config); both at the training scale, image by image."""
    from fcnseg.export import export_model

    onnx = export_model(random_ckpt, tmp_path / "m.onnx")
    assert main(["eval", str(random_ckpt), "-o", str(tmp_path / "a"), *DATA]) == 0
    assert main(["eval", str(onnx), "-o", str(tmp_path / "b"), *DATA]) == 0
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    for key in METRICS:
        assert a[key] == pytest.approx(b[key], abs=1e-4)
    assert a["per_class_iu"] == pytest.approx(b["per_class_iu"], abs=1e-4, nan_ok=True)
    capsys.readouterr()
    with pytest.raises(SystemExit, match=r"carries no config.*--config") as err:
        main(["eval", str(onnx), "--no-progress"])
    assert "\n" not in str(err.value)


def test_eval_at_the_training_scale_equals_predicting_each_image(
    random_ckpt: Path, tmp_path: Path
) -> None:
    """Data its config does not resize: each image is resized to the training size for the
    network and scored at its own size — the confusion matrix of Predictor.predict, image by
    image; --scale native scores full-resolution predictions instead."""
    from fcnseg.data.registry import build_dataset
    from fcnseg.inference import InferenceOptions, Predictor
    from fcnseg.metrics import ConfusionMatrix

    assert main(["eval", str(random_ckpt), "-o", str(tmp_path / "t"), *DATA]) == 0
    assert main(["eval", str(random_ckpt), "-o", str(tmp_path / "n"), *DATA, "--scale",
                 "native"]) == 0  # fmt: skip
    scaled, native = _metrics(tmp_path / "t"), _metrics(tmp_path / "n")
    assert scaled["network_input_size"] == [32, 48] and native["network_input_size"] is None
    predictor = Predictor.from_checkpoint(random_ckpt, device="cpu")
    data = build_dataset("synthetic", None, "val", num_images=3, size=[40, 56])
    for options, got in ((InferenceOptions(), scaled), (InferenceOptions(scale="native"), native)):
        matrix = ConfusionMatrix(len(data.classes), ignore_index=255)
        for image, mask in (data[i] for i in range(len(data))):
            matrix.update(predictor.predict(image, options).long()[None], mask[None])
        want = matrix.compute(list(data.classes))
        for key in METRICS:
            assert got[key] == pytest.approx(float(want[key]), abs=1e-6)
    assert scaled["mean_iu"] != pytest.approx(native["mean_iu"], abs=1e-4)


def _not_checkpoints(tmp_path: Path, png: Path) -> dict[str, tuple[Path, str]]:
    """Files of other kinds under checkpoint names → the words their message must hold."""
    rand = tmp_path / "random.pt"
    rand.write_bytes(torch.randint(0, 256, (5000,), dtype=torch.uint8).numpy().tobytes())
    image = tmp_path / "photo.pt"
    image.write_bytes(png.read_bytes())
    state = tmp_path / "last.state.pt"
    torch.save({"iteration": 3, "optimizer": {}}, state)
    pickled = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2)}, pickled)
    script = tmp_path / "model.ts"
    with zipfile.ZipFile(script, "w") as z:
        z.writestr("model/code/__torch__.py", "")
        z.writestr("model/constants.pkl", "")
    bad_onnx = tmp_path / "broken.onnx"
    bad_onnx.write_bytes(b"\x01\x02garbage" * 10)
    return {
        "random": (rand, "not an fcnseg checkpoint"),
        "image": (image, "is an image"),
        "state": (state, r"training state.*last\.safetensors"),
        "pth": (pickled, "PyTorch file"),
        "torchscript": (script, "TorchScript"),
        "onnx": (bad_onnx, "not a readable ONNX model"),
    }


@pytest.mark.parametrize("kind", ["random", "image", "state", "pth", "torchscript", "onnx"])
def test_files_that_are_not_checkpoints_get_one_line(kind: str, tmp_path: Path) -> None:
    """eval and predict name what the file is, in one line, never suggesting weights_only."""
    import numpy as np
    from PIL import Image

    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    path, words = _not_checkpoints(tmp_path, png)[kind]
    for argv in (["eval", str(path)], ["predict", str(path), str(png), "-o", str(tmp_path / "o")]):
        with pytest.raises(SystemExit, match=words) as err:
            main([*argv, "--no-progress"])
        message = str(err.value)
        assert "weights_only" not in message and "\n" not in message, message
