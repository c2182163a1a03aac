"""Inference at the training's scale: a checkpoint trained on images resized to ``data.resize``
predicts any image resized to that size, with the results resized back to the image's size;
``scale="native"`` turns it off; tiling and TTA apply to the resized image; exported ONNX
files carry the policy and apply it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fcnseg.checkpoint import load_checkpoint, save_checkpoint
from fcnseg.inference import InferenceOptions, Predictor
from fcnseg.inference.scale import resize_images, resized_rows
from fcnseg.models import fcn8s

TRAIN = (32, 48)
NATIVE = InferenceOptions(scale="native")
CLASSES = ["background", "a", "b"]
PALETTE = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]


def _save(path: Path, resize: list[int] | None) -> Path:
    """A small FCN-8s with random score layers (predictions vary across classes), saved with
    a recorded training scale (``resize``), or as an old checkpoint without one (``None``)."""
    torch.manual_seed(0)
    model = fcn8s(backbone="resnet18", num_classes=3)
    with torch.no_grad():
        for layer in (model.score_fr, *model.scorers.values()):
            layer.weight.normal_(0, 0.1)
    spec = {"name": "fcn8s", "backbone": "resnet18", "num_classes": 3, "mode": "exact"}
    policy = {"resize": resize, "scale_range": [1.0, 1.0], "crop_size": None}
    return save_checkpoint(path, model, model_spec=spec, classes=CLASSES, palette=PALETTE,
                           ignore_index=255, train_scale=policy if resize else None)  # fmt: skip


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(tmp_path_factory.mktemp("scale") / "m.safetensors", list(TRAIN))


def _image(k: int) -> torch.Tensor:
    """A smooth 3×(32k)×(48k) uint8 image: a 32×48 one upsampled k× (bilinear)."""
    g = torch.Generator().manual_seed(1)
    small = torch.rand(1, 3, 8, 12, generator=g)
    x = F.interpolate(small, size=(TRAIN[0] * k, TRAIN[1] * k), mode="bilinear")
    return (x[0] * 255).round().byte()


def _upsampled(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]


def test_large_image_is_predicted_at_the_training_size(ckpt: Path) -> None:
    """A 4× larger image gives the labels of the image resized to the training size,
    upsampled, at the large image's size; ``scale="native"`` predicts at full resolution
    (different labels: the network sees another scale)."""
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    assert predictor.train_size == TRAIN
    big = _image(4)
    small = resize_images(big[None], TRAIN)[0]
    expected = _upsampled(predictor.probabilities(small, NATIVE), big.shape[-2:])
    probs = predictor.probabilities(big)
    assert probs.shape == (3, *big.shape[-2:])
    torch.testing.assert_close(probs, expected, rtol=0, atol=1e-5)
    labels = predictor.predict(big)  # strip by strip
    assert labels.shape == big.shape[-2:]
    assert (labels == expected.argmax(0)).float().mean() > 0.999
    batch = predictor.probabilities_batch(torch.stack([big, big.flip(-1)]))
    torch.testing.assert_close(batch[0], probs, rtol=0, atol=1e-5)
    # The probabilities of the image at the training size itself, upsampled, are nearly those
    # of the large one; predicted at full resolution they are not.
    ref = _upsampled(predictor.probabilities(_image(1)), big.shape[-2:])
    native_probs = predictor.probabilities(big, NATIVE)
    assert (probs - ref).abs().mean() < 0.01 < 0.1 < (native_probs - ref).abs().mean()
    native = predictor.predict(big, NATIVE)
    assert native.shape == big.shape[-2:]
    assert torch.equal(native, native_probs.argmax(0).byte())
    native_whole = Predictor(predictor.model, CLASSES, PALETTE).predict(big)
    assert torch.equal(native, native_whole)


def test_image_at_the_training_size_and_old_checkpoints_are_untouched(
    ckpt: Path, tmp_path: Path
) -> None:
    """An image already at the training size goes through unresized; a checkpoint without a
    recorded policy predicts every image at its own size, as before."""
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    image = _image(1)
    torch.testing.assert_close(
        predictor.probabilities(image), predictor.probabilities(image, NATIVE)
    )
    old = Predictor.from_checkpoint(_save(tmp_path / "old.safetensors", None), device="cpu")
    assert (
        old.train_size is None and load_checkpoint(tmp_path / "old.safetensors").train_scale is None
    )
    big = _image(3)
    assert torch.equal(old.predict(big), old.predict(big, NATIVE))
    assert not torch.equal(predictor.predict(big), predictor.predict(big, NATIVE))


def test_tiles_and_tta_apply_to_the_resized_image(ckpt: Path) -> None:
    """Tiled inference with TTA on a large image = the same options on the image resized to
    the training size (tiles of that image), upsampled."""
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    big = _image(3)
    options = InferenceOptions(tile=24, overlap=8, flip=True)
    small = resize_images(big[None], TRAIN)[0]
    native = InferenceOptions(tile=24, overlap=8, flip=True, scale="native")
    expected = _upsampled(predictor.probabilities(small, native), big.shape[-2:])
    torch.testing.assert_close(predictor.probabilities(big, options), expected, rtol=0, atol=1e-5)
    whole = predictor.probabilities(big, InferenceOptions(flip=True))
    assert not torch.allclose(whole, expected, atol=1e-3)  # the tiles did matter


@pytest.mark.parametrize(
    ("h", "w", "size"), [(5, 7, (37, 50)), (16, 24, (300, 17)), (6, 6, (6, 6))]
)
def test_resized_rows_equal_bilinear_interpolation(h: int, w: int, size: tuple[int, int]) -> None:
    probs = torch.rand(3, h, w, generator=torch.Generator().manual_seed(h))
    rows = list(resized_rows(probs, size, rows=7))
    assert [top for top, _ in rows] == list(range(0, size[0], 7))
    torch.testing.assert_close(torch.cat([r for _, r in rows], 1), _upsampled(probs, size),
                               rtol=0, atol=1e-5)  # fmt: skip


def test_onnx_and_torchscript_exports_carry_the_policy(ckpt: Path, tmp_path: Path) -> None:
    """The exported file records the training scale; the Predictor of the .onnx applies it
    (same probabilities as the checkpoint's on a large image)."""
    pytest.importorskip("onnxruntime")
    from fcnseg.export import export_model, read_onnx_metadata

    path = export_model(ckpt, tmp_path / "m.onnx")
    assert read_onnx_metadata(path)["train_scale"]["resize"] == list(TRAIN)
    onnx = Predictor.from_checkpoint(path)
    assert onnx.train_size == TRAIN
    big = _image(3)
    want = Predictor.from_checkpoint(ckpt, device="cpu").probabilities(big)
    torch.testing.assert_close(onnx.probabilities(big), want, rtol=0, atol=1e-4)
    ts = export_model(ckpt, tmp_path / "m.pt", fmt="torchscript")
    files = {"fcnseg.train_scale": ""}
    torch.jit.load(str(ts), _extra_files=files)
    assert b'"resize": [32, 48]' in files["fcnseg.train_scale"]


def test_scale_option_is_validated_and_on_the_command_line() -> None:
    with pytest.raises(ValueError, match="scale must be 'train' or 'native'"):
        InferenceOptions(scale="half")
    from fcnseg.cli import build_parser

    for command in (["predict", "m", "x", "-o", "o"], ["eval", "m"], ["serve", "m"]):
        args = build_parser().parse_args([*command, "--scale", "native"])
        assert args.scale == "native"
        assert build_parser().parse_args(command).scale == "train"
