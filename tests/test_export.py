"""Export: ONNX with dynamic batch/height/width matching PyTorch, TorchScript, metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fcnseg.checkpoint import load_checkpoint, save_checkpoint
from fcnseg.export import export_model, read_onnx_metadata
from fcnseg.models import fcn8s
from fcnseg.models.unet import unet

onnxruntime = pytest.importorskip("onnxruntime")

#: Max |ONNX Runtime − PyTorch| allowed on logits of magnitude ~1 (float32 op reordering).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, make_fcn_checkpoint) -> Path:
    return make_fcn_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "m.safetensors",
        classes=["bg", "a", "b"],
        palette=[[0, 0, 0], [255, 0, 0], [0, 0, 255]],
    )


def test_onnx_dynamic_shapes_match_pytorch(checkpoint: Path, tmp_path: Path) -> None:
    """One ONNX file runs at batch 1 and 2 and at 67×45, 31×33, 100×101 and 1×1 with outputs
    within 1e-4 of PyTorch's, and carries class names and normalisation."""
    path = export_model(checkpoint, tmp_path / "m.onnx", fmt="onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = load_checkpoint(checkpoint).build_model().eval()
    for batch, size in [(1, (67, 45)), (2, (31, 33)), (1, (100, 101)), (2, (1, 1))]:
        x = torch.randn(batch, 3, *size)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == expected.shape == (batch, 3, *size)
        assert np.abs(got - expected).max() < TOLERANCE, size
    meta = read_onnx_metadata(path)
    assert meta["classes"] == ["bg", "a", "b"]
    assert meta["preprocess"]["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_torchscript_export_generalises(checkpoint: Path, tmp_path: Path) -> None:
    path = export_model(checkpoint, tmp_path / "m.pt", fmt="torchscript")
    files = {"fcnseg.classes": ""}
    scripted = torch.jit.load(str(path), _extra_files=files)
    classes = files["fcnseg.classes"]
    assert (classes.decode() if isinstance(classes, bytes) else classes) == '["bg", "a", "b"]'
    model = load_checkpoint(checkpoint).build_model().eval()
    x = torch.randn(1, 3, 53, 71)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_unet_exports_keep_mirror_padding_dynamic(padding: str, tmp_path: Path) -> None:
    """A U-Net's mirror padding depends on the image size: ONNX and TorchScript files must
    compute it at run time, not keep the sample's (sizes below, above and off the sample)."""
    torch.manual_seed(0)
    model = unet(num_classes=2, base_width=2, depth=2, padding=padding).eval()
    spec = {"name": "unet", "num_classes": 2, "base_width": 2, "depth": 2, "padding": padding}
    ckpt = save_checkpoint(tmp_path / "u.safetensors", model, model_spec=spec,
                           classes=["bg", "fg"], palette=[[0, 0, 0], [9, 9, 9]],
                           ignore_index=255)  # fmt: skip
    session = onnxruntime.InferenceSession(
        str(export_model(ckpt, tmp_path / "u.onnx")), providers=["CPUExecutionProvider"]
    )
    scripted = torch.jit.load(str(export_model(ckpt, tmp_path / "u.pt", fmt="torchscript")))
    for shape in [(1, 3, 1, 1), (1, 3, 7, 3), (2, 3, 70, 45), (1, 3, 64, 64)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            want = model(x)
            torch.testing.assert_close(scripted(x), want, rtol=1e-4, atol=1e-4)
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == want.shape == (shape[0], 2, *shape[2:])
        assert np.abs(got - want.numpy()).max() <= TOLERANCE * max(1.0, want.abs().max())


def test_export_rejects_unknown_format(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="onnx"):
        export_model(checkpoint, tmp_path / "m.x", fmt="tflite")


def test_cli_export(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fcnseg.cli import main

    out = tmp_path / "m.ts"
    assert main(["export", str(checkpoint), "--format", "torchscript", "-o", str(out)]) == 0
    assert out.stat().st_size > 1_000_000 and str(out) in capsys.readouterr().out
    with pytest.raises(SystemExit, match="does not exist"):
        main(["export", str(tmp_path / "none.safetensors"), "-o", str(out)])


def test_predict_with_the_onnx_file(checkpoint: Path, tmp_path: Path) -> None:
    """`Predictor.from_checkpoint(x.onnx)` (ONNX Runtime) gives the PyTorch label map."""
    from fcnseg.inference import InferenceOptions, Predictor

    onnx_path = export_model(checkpoint, tmp_path / "m.onnx", fmt="onnx")
    image = torch.randint(0, 256, (3, 41, 59), dtype=torch.uint8)
    tiled = InferenceOptions(tile=32, overlap=8)
    torch_probs = Predictor.from_checkpoint(checkpoint).probabilities(image, tiled)
    onnx_probs = Predictor.from_checkpoint(onnx_path).probabilities(image, tiled)
    torch.testing.assert_close(onnx_probs, torch_probs, rtol=0, atol=TOLERANCE)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["alexnet", "googlenet"])
def test_onnx_ceil_mode_backbones(backbone: str, tmp_path: Path) -> None:
    """AlexNet and GoogLeNet (ceil-mode pools, minimum input sizes) export to one dynamic ONNX
    file that matches PyTorch at odd sizes, below the minimum size, and at batch 2."""
    torch.manual_seed(0)
    model = fcn8s(backbone=backbone, num_classes=2).eval()
    with torch.no_grad():
        for layer in (model.score_fr, *model.scorers.values()):
            layer.weight.normal_(0, 0.1)
    spec = {"name": "fcn8s", "backbone": backbone, "num_classes": 2, "mode": "exact"}
    ckpt = save_checkpoint(tmp_path / "m.safetensors", model, model_spec=spec,
                           classes=["bg", "fg"], palette=[[0, 0, 0], [9, 9, 9]],
                           ignore_index=255)  # fmt: skip
    path = export_model(ckpt, tmp_path / "m.onnx", fmt="onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, size in [(1, (97, 61)), (2, (40, 35)), (1, (7, 3))]:
        x = torch.randn(batch, 3, *size)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == expected.shape == (batch, 2, *size)
        assert np.abs(got - expected).max() <= TOLERANCE * max(1.0, np.abs(expected).max())
    assert read_onnx_metadata(path)["classes"] == ["bg", "fg"]


def _tiny_unet_checkpoint(path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = unet(num_classes=2, base_width=2, depth=2).eval()
    spec = {"name": "unet", "num_classes": 2, "base_width": 2, "depth": 2}
    ckpt = save_checkpoint(path, model, model_spec=spec, classes=["bg", "fg"],
                           palette=[[0, 0, 0], [9, 9, 9]], ignore_index=255)  # fmt: skip
    return ckpt, model


def _run_onnx(path: Path, model: torch.nn.Module) -> None:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 37, 50)
    with torch.no_grad():
        want = model(x).numpy()
    got = session.run(None, {"images": x.numpy()})[0]
    assert np.abs(got - want).max() <= TOLERANCE * max(1.0, np.abs(want).max())


def test_onnx_export_is_one_self_contained_file(tmp_path: Path) -> None:
    """The exporter itself writes NAME.onnx.data beside NAME.onnx even for tiny models; the
    export stages that and writes exactly the one file it names, which runs on its own."""
    from fcnseg.export import exported_files

    ckpt, model = _tiny_unet_checkpoint(tmp_path / "u.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    path = export_model(ckpt, out / "u.onnx")
    assert sorted(p.name for p in out.iterdir()) == ["u.onnx"]  # no .data, no staging folder
    assert exported_files(path) == [path]
    moved = tmp_path / "elsewhere.onnx"
    path.rename(moved)  # self-contained: runs after a move
    _run_onnx(moved, model)
    assert read_onnx_metadata(moved)["classes"] == ["bg", "fg"]


def test_onnx_over_the_single_file_limit_uses_external_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over protobuf's 2 GB (here: a limit lowered to 1 kB) the export is NAME.onnx plus
    NAME.onnx.data, both named in the command's output, and the pair runs."""
    import fcnseg.export as export_mod
    from fcnseg.cli import main

    monkeypatch.setattr(export_mod, "ONNX_SINGLE_FILE_LIMIT", 1024)
    ckpt, model = _tiny_unet_checkpoint(tmp_path / "u.safetensors")
    out = tmp_path / "out"
    assert main(["export", str(ckpt), "-o", str(out / "u.onnx")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["u.onnx", "u.onnx.data"]
    assert export_mod.exported_files(out / "u.onnx") == [out / "u.onnx", out / "u.onnx.data"]
    printed = capsys.readouterr().out
    assert str(out / "u.onnx") in printed and str(out / "u.onnx.data") in printed
    modes = {(out / name).stat().st_mode for name in ("u.onnx", "u.onnx.data")}
    assert len(modes) == 1  # the weights are as readable as the graph
    _run_onnx(out / "u.onnx", model)
