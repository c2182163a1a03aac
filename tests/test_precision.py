"""``--precision fp32|bf16``: bf16 autocast really runs, agrees with fp32 on the labels, is
reached from the command line, and is refused for ONNX models (their precision is the file's)."""

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
from fcnseg.inference import Predictor

SYNTHETIC = build_dataset("synthetic", None, "val", num_images=2, size=[48, 64])
CLASSES = list(SYNTHETIC.classes)
COMMON = ["--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("precision") / "m.safetensors"
    return varied_fcn8s_checkpoint(path, CLASSES, [list(c) for c in SYNTHETIC.palette])


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Two 48×64 synthetic scenes (shapes on backgrounds), uint8."""
    return torch.stack([SYNTHETIC[i][0] for i in range(2)])


def test_bf16_runs_and_agrees_with_fp32(checkpoint: Path, images: torch.Tensor) -> None:
    """The network's layers compute in bfloat16; the labels match fp32's on ≥ 95% of pixels,
    while the probabilities differ by more than fp32 rounding (which two fp32 runs share)."""
    fp32 = Predictor.from_checkpoint(checkpoint, "cpu")
    bf16 = Predictor.from_checkpoint(checkpoint, "cpu", amp="bf16")
    dtypes: list[torch.dtype] = []
    conv = next(m for m in bf16.model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    a, a2 = fp32.probabilities_batch(images), fp32.probabilities_batch(images)
    b = bf16.probabilities_batch(images)
    assert dtypes == [torch.bfloat16]
    assert a.dtype == b.dtype == torch.float32  # results come back as float32
    torch.testing.assert_close(a2, a, rtol=0, atol=1e-6)
    assert (a - b).abs().max() > 1e-3
    shares = a.argmax(1).flatten().bincount(minlength=len(CLASSES)) / a.argmax(1).numel()
    assert (shares >= 0.1).sum() >= 3, shares  # agreement is not one class everywhere
    agreement = (a.argmax(1) == b.argmax(1)).float().mean().item()
    assert agreement >= 0.95, agreement


def test_bf16_casts_the_weights_once_only_of_a_network_it_owns(
    checkpoint: Path, images: torch.Tensor
) -> None:
    """A loaded checkpoint's weights become bf16 at the first bf16 prediction (autocast would
    recast them at every call), the normalisation stays fp32, and results match autocast over
    the fp32 weights; a network passed in (the Trainer's) keeps its fp32 weights; going back
    to fp32 after the cast is refused rather than run on rounded weights."""
    owned = Predictor.from_checkpoint(checkpoint, "cpu", amp="bf16")
    conv = next(m for m in owned.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.dtype == torch.float32
    p = owned.probabilities_batch(images)
    assert conv.weight.dtype == torch.bfloat16
    assert all(t.dtype == torch.float32 for t in owned.model.preprocess.state_dict().values())
    model = Predictor.from_checkpoint(checkpoint, "cpu").model
    borrowed = Predictor(model, CLASSES, [], amp="bf16", channels_last=True)
    q = borrowed.probabilities_batch(images)
    assert all(t.dtype == torch.float32 for t in model.parameters())
    torch.testing.assert_close(p, q, rtol=0, atol=1e-6)  # autocast casts the same weights
    owned.amp = None
    with pytest.raises(RuntimeError, match="load the checkpoint again"):
        owned.probabilities_batch(images)


def _write_image(folder: Path, image: torch.Tensor) -> Path:
    folder.mkdir()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / "x.png")
    return folder


def test_cli_flag_reaches_the_predictor(
    checkpoint: Path, images: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fcnseg predict --precision bf16`` loads the model with bf16 autocast (fp32 without)
    and its probabilities differ from fp32's."""
    seen: list[str | None] = []
    load = Predictor.from_checkpoint.__func__  # type: ignore[attr-defined]

    def spy(cls: type[Predictor], path: str, device: str = "auto", *, amp: str | None = None):
        seen.append(amp)
        return load(cls, path, device, amp=amp)

    monkeypatch.setattr(Predictor, "from_checkpoint", classmethod(spy))
    inputs = _write_image(tmp_path / "in", images[0])
    probs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        args = ["predict", str(checkpoint), str(inputs), "-o", str(out), "--probabilities"]
        assert main([*args, "--precision", precision, *COMMON]) == 0
        assert (out / "x.png").is_file()
        probs[precision] = np.load(out / "x_probs.npy").astype(np.float32)
    assert seen == [None, "bf16"]
    assert np.abs(probs["fp32"] - probs["bf16"]).max() > 1e-3


def test_precision_an_export_or_checkpoint_cannot_run_is_one_line(
    checkpoint: Path, images: torch.Tensor, tmp_path: Path
) -> None:
    """An .onnx file runs at its exported precision: asking for another (bf16, int8 of an fp32
    export) is one line naming it; int8 of a checkpoint says how to make an int8 export; the
    file's own precision is accepted."""
    from fcnseg.export import export_model

    model = export_model(checkpoint, tmp_path / "m.onnx")
    inputs = _write_image(tmp_path / "in", images[0])
    for precision, words in (("bf16", "is an fp32 export"), ("int8", "--quantize int8")):
        for command in (
            ["predict", str(model), str(inputs), "-o", str(tmp_path / "out")],
            ["eval", str(model)],
        ):
            with pytest.raises(SystemExit) as stop:
                main([*command, "--precision", precision, *COMMON])
            message = str(stop.value.code)
            assert message.startswith(f"fcnseg {command[0]}: ") and "\n" not in message
            assert words in message and f"drop --precision {precision}" in message
    out = tmp_path / "ok"
    assert main(["predict", str(model), str(inputs), "-o", str(out), "--precision", "fp32",
                 *COMMON]) == 0  # fmt: skip
    with pytest.raises(SystemExit, match="int8 runs an int8 ONNX export, not a checkpoint"):
        main(["predict", str(checkpoint), str(inputs), "-o", str(out), "--precision", "int8",
              *COMMON])  # fmt: skip
    with pytest.raises(ValueError, match="precision it was exported at"):
        Predictor.from_checkpoint(model, amp="bf16")


def test_eval_records_the_precision(checkpoint: Path, tmp_path: Path) -> None:
    """``fcnseg eval --precision bf16`` records it in metrics.json (beside ``inference``); without
    the flag the synthetic config's train.amp (none) gives fp32."""
    data = ["--config", "fcn8s_resnet18_synthetic", "--set",
            "data.options={num_images: 2, size: [48, 64]}", *COMMON]  # fmt: skip
    for flag, want in ((["--precision", "bf16"], "bf16"), ([], "fp32")):
        out = tmp_path / want
        assert main(["eval", str(checkpoint), "-o", str(out), *flag, *data]) == 0
        assert json.loads((out / "metrics.json").read_text())["precision"] == want


def test_compile_gives_the_same_probabilities(
    checkpoint: Path, images: torch.Tensor, tmp_path: Path
) -> None:
    """``--compile`` (torch.compile, weights frozen) really replaces the network and gives the
    eager network's probabilities to float rounding; from ``predict`` and ``eval`` alike; an
    .onnx model refuses it in one line."""
    eager = Predictor.from_checkpoint(checkpoint, "cpu")
    compiled = Predictor.from_checkpoint(checkpoint, "cpu").compile()
    assert type(compiled.model).__name__ == "OptimizedModule"
    a, b = eager.probabilities_batch(images), compiled.probabilities_batch(images)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-4)
    assert (a.argmax(1) == b.argmax(1)).float().mean() > 0.999
    inputs = _write_image(tmp_path / "in", images[0])
    out = tmp_path / "pred"
    args = ["predict", str(checkpoint), str(inputs), "-o", str(out), "--compile", *COMMON]
    assert main(args) == 0
    labels = np.array(Image.open(out / "x.png"))
    np.testing.assert_array_equal(labels, eager.predict(images[0]).numpy())
    data = ["--config", "fcn8s_resnet18_synthetic", "--set",
            "data.options={num_images: 2, size: [48, 64]}", *COMMON]  # fmt: skip
    metrics = {}
    for flag in ([], ["--compile"]):
        folder = tmp_path / f"eval{len(flag)}"
        assert main(["eval", str(checkpoint), "-o", str(folder), *flag, *data]) == 0
        metrics[len(flag)] = json.loads((folder / "metrics.json").read_text())["mean_iu"]
    assert metrics[1] == pytest.approx(metrics[0], abs=1e-3)
    from fcnseg.export import export_model

    model = export_model(checkpoint, tmp_path / "m.onnx")
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(model), str(inputs), "-o", str(out), "--compile", *COMMON])
    message = str(stop.value.code)
    assert message.startswith("fcnseg predict: --compile applies to checkpoints")
    assert "\n" not in message
