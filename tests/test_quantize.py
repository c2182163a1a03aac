"""``fcnseg export --quantize int8``: ONNX Runtime static quantization (QDQ, per-channel int8
weights) calibrated on a folder of images, checked against the float model, carrying the
metadata; the int8 file predicts and evaluates like any export; mistakes are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from varied_model import varied_fcn8s_checkpoint

from fcnseg.cli import main
from fcnseg.data.registry import build_dataset
from fcnseg.inference import InferenceOptions, Predictor

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SIZE = [48, 64]
SYNTHETIC = build_dataset("synthetic", None, "val", num_images=6, size=SIZE)
CLASSES = list(SYNTHETIC.classes)
COMMON = ["--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("quantize") / "m.safetensors"
    return varied_fcn8s_checkpoint(path, CLASSES, [list(c) for c in SYNTHETIC.palette])


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder whose images/ holds six synthetic scenes."""
    folder = tmp_path_factory.mktemp("data")
    (folder / "images").mkdir()
    for i in range(len(SYNTHETIC)):
        image = SYNTHETIC[i][0].permute(1, 2, 0).numpy()
        Image.fromarray(image).save(folder / "images" / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def int8(checkpoint: Path, calibration: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "model-int8.onnx"
    args = ["export", str(checkpoint), "--format", "onnx", "--quantize", "int8"]
    args += ["--calibrate", str(calibration), "--calibration-images", "4", "-o", str(out)]
    assert main(args) == 0
    return out


def test_int8_file_is_quantized_and_carries_its_metadata(
    int8: Path, checkpoint: Path, calibration: Path
) -> None:
    """One file, holding QuantizeLinear/DequantizeLinear, int8 weights (under half the float
    weights' bytes), the checkpoint's metadata, precision int8 and its calibration."""
    from fcnseg.export import read_onnx_metadata

    assert sorted(p.name for p in int8.parent.iterdir()) == [int8.name]
    proto = onnx.load(str(int8))
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 20  # the convolutions'
    float_bytes = sum(4 * t.numel() for t in fcn8s_params(checkpoint))
    assert int8.stat().st_size < float_bytes / 2
    meta = read_onnx_metadata(int8)
    assert meta["classes"] == CLASSES and meta["preprocess"]["mean"][0] == pytest.approx(0.485)
    assert meta["precision"] == "int8"
    cal = meta["calibration"]
    assert cal["source"] == str(calibration) and cal["images"] == 4 and cal["agreement"] >= 0.9


def fcn8s_params(checkpoint: Path) -> list[torch.Tensor]:
    from fcnseg.checkpoint import load_checkpoint

    return list(load_checkpoint(checkpoint).build_model().parameters())


def test_int8_labels_agree_with_float(int8: Path, checkpoint: Path) -> None:
    """On the scenes and at an odd size (the graph stays dynamic), ≥ 90% of the int8 labels
    are the float model's, and several classes are predicted (agreement is not trivial)."""
    native = InferenceOptions(scale="native")
    float_model = Predictor.from_checkpoint(checkpoint, "cpu")
    int8_model = Predictor.from_checkpoint(int8)
    other = build_dataset("synthetic", None, "val", num_images=1, size=[67, 45])
    images = [SYNTHETIC[i][0] for i in range(len(SYNTHETIC))] + [other[0][0]]
    same = total = 0
    labels = []
    for image in images:
        want = float_model.predict(image, native)
        got = int8_model.predict(image, native)
        assert got.shape == image.shape[-2:]
        same, total = same + int((want == got).sum()), total + want.numel()
        labels.append(want.flatten())
    shares = torch.cat(labels).long().bincount(minlength=len(CLASSES)) / total
    assert (shares >= 0.1).sum() >= 3, shares
    assert same / total >= 0.9, same / total


def test_int8_predicts_and_evaluates(int8: Path, tmp_path: Path) -> None:
    """``fcnseg predict model-int8.onnx`` writes labels; ``fcnseg eval`` records int8."""
    (tmp_path / "in").mkdir()
    Image.fromarray(SYNTHETIC[0][0].permute(1, 2, 0).numpy()).save(tmp_path / "in" / "x.png")
    out = tmp_path / "pred"
    args = ["predict", str(int8), str(tmp_path / "in"), "-o", str(out), *COMMON]
    assert main([*args, "--precision", "int8"]) == 0  # the file's own precision
    with pytest.raises(SystemExit, match="is an int8 export and runs at int8: drop --precision"):
        main([*args, "--precision", "fp32"])
    labels = np.array(Image.open(out / "x.png"))
    assert labels.shape == tuple(SIZE) and labels.max() < len(CLASSES)
    data = ["--config", "fcn8s_resnet18_synthetic", "--set",
            "data.options={num_images: 2, size: [48, 64]}"]  # fmt: skip
    assert main(["eval", str(int8), "-o", str(tmp_path / "eval"), *data, *COMMON]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["precision"] == "int8" and 0 <= metrics["mean_iu"] <= 1


def test_disagreeing_int8_model_is_not_written(
    checkpoint: Path, calibration: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below the agreement bar the export fails in one line and leaves nothing behind."""
    import fcnseg.quantize

    monkeypatch.setattr(fcnseg.quantize, "MIN_AGREEMENT", 1.01)
    out = tmp_path / "out" / "m.onnx"
    args = ["export", str(checkpoint), "--quantize", "int8", "--calibrate", str(calibration)]
    with pytest.raises(SystemExit) as stop:
        main([*args, "--calibration-images", "1", "-o", str(out)])
    message = str(stop.value.code)
    assert (
        message.startswith("fcnseg export: the int8 model's labels agree") and "\n" not in message
    )
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--quantize", "int8", "--calibrate", "{missing}"], "does not exist"),
        (["--quantize", "int8", "--calibrate", "{empty}"], "holds no images"),
        (["--quantize", "int8", "--calibrate", "{ckpt}"], "is a file"),
        (["--quantize", "int8"], "needs --calibrate"),
        (["--calibrate", "{empty}"], "--calibrate is for --quantize int8"),
        (["--quantize", "int8", "--calibrate", "{empty}", "--format", "torchscript"],
         "applies to ONNX exports"),
        (["--quantize", "int8", "--calibrate", "{empty}", "--calibration-images", "0"],
         "at least 1"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line(
    extra: list[str], expected: str, checkpoint: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "ckpt": checkpoint}
    extra = [e.format(**paths) for e in extra]
    out = tmp_path / "out" / "m.onnx"
    with pytest.raises(SystemExit) as stop:
        main(["export", str(checkpoint), *extra, "-o", str(out)])
    message = str(stop.value.code)
    assert message.startswith("fcnseg export: ") and "\n" not in message
    assert expected in message
    assert not out.parent.exists()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_bytes(b"not an image"), "is not an image"),
        (lambda p: Image.new("F", (8, 8)).save(p.with_suffix(".tif")), "unsupported mode 'F'"),
    ],
    ids=["unreadable", "no-rgb-rendering"],
)
def test_bad_calibration_image_is_named_and_nothing_written(
    make: object, expected: str, checkpoint: Path, calibration: Path, tmp_path: Path
) -> None:
    """An image that does not read as predictions read images (corrupt, or a one-channel float
    image with no 8-bit RGB rendering) stops the export before anything is written, naming it."""
    folder = tmp_path / "cal"
    folder.mkdir()
    for f in (calibration / "images").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    make(folder / "zz-bad.png")  # type: ignore[operator]
    bad = next(f for f in folder.iterdir() if f.stem == "zz-bad")
    out = tmp_path / "out" / "m.onnx"
    args = ["export", str(checkpoint), "--quantize", "int8", "--calibrate", str(folder)]
    with pytest.raises(SystemExit) as stop:
        main([*args, "--calibration-images", "7", "-o", str(out)])
    message = str(stop.value.code)
    assert message.startswith("fcnseg export: ") and "\n" not in message
    assert str(bad) in message and expected in message
    assert not out.parent.exists()


def test_few_calibration_images_warn(
    checkpoint: Path, calibration: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Fewer than MIN_CALIBRATION images (asked for, or all a folder holds) draw a warning."""
    from fcnseg.quantize import MIN_CALIBRATION, calibration_files

    assert len(calibration_files(calibration, 6)) == 6
    assert "fewer than" in caplog.text and "all the folder holds" not in caplog.text
    caplog.clear()
    calibration_files(calibration, MIN_CALIBRATION)
    assert "fewer than" in caplog.text and "all the folder holds" in caplog.text


HORSE = Path(__file__).resolve().parents[2] / "shared" / "data" / "weizmann-horse" / "images"


@pytest.mark.skipif(not HORSE.is_dir(), reason="needs ../shared/data/weizmann-horse")
def test_int8_agrees_with_float_on_real_photographs(tmp_path: Path) -> None:
    """Calibrated on 16 Weizmann Horse photographs, the int8 export labels 8 other photographs
    (and a batch of two, at a size it was not exported at) as the float model does on ≥ 97% of
    the pixels; no class takes every pixel."""
    from fcnseg.data.io import read_image
    from fcnseg.export import export_model

    names = ["background", "a", "b", "c"]
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]
    checkpoint = varied_fcn8s_checkpoint(tmp_path / "m.safetensors", names, palette)
    photos = sorted(HORSE.iterdir())
    (tmp_path / "cal").mkdir()
    for f in photos[0:160:10]:
        Image.open(f).convert("RGB").resize((128, 96)).save(tmp_path / "cal" / f"{f.stem}.png")
    int8 = export_model(checkpoint, tmp_path / "m-int8.onnx", quantize="int8",
                        calibrate=tmp_path / "cal", calibration_images=16)  # fmt: skip
    float_model = Predictor.from_checkpoint(checkpoint, "cpu")
    int8_model = Predictor.from_checkpoint(int8)
    native = InferenceOptions(scale="native")
    images = [read_image(f) for f in photos[165:245:10]]
    images = [torch.nn.functional.interpolate(x[None].float(), size=(90, 124), mode="bilinear")
              .round().byte()[0] for x in images]  # fmt: skip
    want = torch.stack([float_model.predict(x, native) for x in images])
    got = torch.stack([int8_model.predict(x, native) for x in images])
    assert want.shape == got.shape == (8, 90, 124)
    agreement = (want == got).float().mean().item()
    assert agreement >= 0.97, agreement
    assert want.flatten().long().bincount(minlength=4).max() < want.numel()
    onnx_model = int8_model.model  # a batch of two through the session: dynamic N, H and W
    logits = onnx_model(onnx_model.preprocess(torch.stack(images[:2]).float() / 255))
    assert logits.shape == (2, 4, 90, 124)
    assert (logits.argmax(1) == got[:2]).float().mean() > 0.999


def test_calibration_inputs_are_what_predictions_see(calibration: Path, tmp_path: Path) -> None:
    """Calibration takes images spread over the folder, normalised, at the training's size when
    the export records one, else at their own size with the longer side capped."""
    from fcnseg.quantize import MAX_SIDE, calibration_files, calibration_inputs

    files = calibration_files(calibration, 2)
    assert [f.name for f in files] == ["0.png", "3.png"]
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    scaled = calibration_inputs(
        files, {"preprocess": preprocess, "train_scale": {"resize": [32, 40]}}
    )
    assert [x.shape for x in scaled] == [(1, 3, 32, 40)] * 2
    native = calibration_inputs(files, {"preprocess": preprocess, "train_scale": None})
    raw = np.array(Image.open(files[0]), dtype=np.float32).transpose(2, 0, 1)[None] / 255
    np.testing.assert_allclose(native[0], (raw - 0.5) / 0.25, atol=1e-5)
    big = tmp_path / "big"
    big.mkdir()
    Image.new("RGB", (2 * MAX_SIDE, MAX_SIDE // 2)).save(big / "wide.png")
    (x,) = calibration_inputs(calibration_files(big, 5), {"preprocess": preprocess})
    assert x.shape == (1, 3, MAX_SIDE // 4, MAX_SIDE)


def test_int8_serves(int8: Path) -> None:
    """``fcnseg serve model-int8.onnx``'s app answers with the int8 model's own labels."""
    import io

    from fastapi.testclient import TestClient

    from fcnseg.serve import create_app

    predictor = Predictor.from_checkpoint(int8)
    image = SYNTHETIC[1][0]
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    files = {"image": ("x.png", buffer.getvalue(), "image/png")}
    res = TestClient(create_app(predictor)).post("/predict", files=files)
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    labels = np.array(Image.open(io.BytesIO(res.content)))
    np.testing.assert_array_equal(labels, predictor.predict(image).numpy())
    assert len(np.unique(labels)) >= 2
