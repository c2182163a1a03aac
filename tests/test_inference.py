"""Inference: overlap-tiled prediction in strips, TTA, any image size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcnseg.crf import CRFParams
from fcnseg.inference import InferenceOptions, Predictor, tile_positions, tile_weight
from fcnseg.models import SegmentationModel
from fcnseg.weights import Preprocess


class PointwiseNet(SegmentationModel):
    """A 1×1-conv 'segmenter': its output at a pixel depends on that pixel only, so any tiling
    must reproduce whole-image inference exactly — a test of the blending and strip logic."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, 1)
        self.preprocess = Preprocess((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * 3


def _predictor() -> Predictor:
    return Predictor(PointwiseNet(), ["a", "b", "c", "d"], [[0, 0, 0]] * 4)


CASES = [((37, 53), 16, 5), ((64, 20), 17, 8), ((9, 100), 32, 0), ((50, 50), 49, 48)]


@pytest.mark.parametrize(("size", "tile", "overlap"), CASES)
def test_tiled_equals_whole_image(size: tuple[int, int], tile: int, overlap: int) -> None:
    """Strips, flush last tiles, overlap 0 and overlap tile−1: all equal whole-image inference."""
    p = _predictor()
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8)
    options = InferenceOptions(tile=tile, overlap=overlap)
    whole = p.probabilities(image)
    tiled = p.probabilities(image, options)
    assert tiled.shape == whole.shape == (4, *size)
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-6)
    assert torch.equal(p.predict(image, options), whole.argmax(0).byte())


def test_tile_covering_the_image_is_whole_image_inference() -> None:
    p = _predictor()
    image = torch.rand(3, 30, 40)
    torch.testing.assert_close(p.probabilities(image, InferenceOptions(tile=40, overlap=8)),
                               p.probabilities(image))  # fmt: skip


def test_tiles_cover_every_pixel_and_blend_weights() -> None:
    assert tile_positions(100, 32, 24) == [0, 24, 48, 68]
    assert tile_positions(10, 32, 24) == [0]
    w = tile_weight(8, 8, 3)
    assert w[4, 4] == 1 and w[0, 0] == pytest.approx(1 / 16) and w.min() > 0


def test_inference_options_are_validated() -> None:
    """Bad options fail when made, with one clear line; ``as_dict`` is plain JSON."""
    for kwargs, match in [
        ({"tile": 16, "overlap": 16}, r"overlap must be in \[0, tile\) = \[0, 16\), got 16"),
        ({"overlap": -1}, "overlap must be in"),
        ({"tile": 0}, "tile must be a positive"),
        ({"scales": ()}, "scales must be one or more positive"),
        ({"scales": (1.0, -0.5)}, "scales must be one or more positive"),
        ({"crf": {"iterations": 3}}, "crf must be CRFParams"),
    ]:
        with pytest.raises(ValueError, match=match):
            InferenceOptions(**kwargs)
    options = InferenceOptions(tile=64, overlap=8, flip=True, scales=[0.5, 1], crf=CRFParams())
    assert options.scales == (0.5, 1.0)
    assert options.as_dict() == {"tile": 64, "overlap": 8, "flip": True, "scales": [0.5, 1.0],
                                 "crf": CRFParams().as_dict(), "scale": "train"}  # fmt: skip


class RampNet(SegmentationModel):
    """Not flip-equivariant: a 3×3 conv with an asymmetric kernel plus a horizontal position
    ramp, so a skipped flip (or one not undone) changes the answer."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, classes, 3, padding=1)
        self.preprocess = Preprocess((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-2, 2, x.shape[-1], device=x.device)
        return self.conv(x) + ramp * torch.arange(self.conv.out_channels)[:, None, None]


def test_tta_flip_and_scales() -> None:
    """TTA is the mean of the softmax over flips and scales, each flipped back and resized to
    the image, computed here independently of ``tta_probabilities``."""
    import torch.nn.functional as F

    net = RampNet()
    p = Predictor(net, ["a", "b", "c"], [[0, 0, 0]] * 3)
    image = torch.rand(3, 24, 31)
    x = image[None]

    def softmax(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(net.preprocess(batch)).softmax(1)

    def resize(batch: torch.Tensor, size: tuple[int, int], shrink: bool) -> torch.Tensor:
        return F.interpolate(batch, size=size, mode="bilinear", antialias=shrink)

    plain = softmax(x)[0]
    flipped = p.probabilities(image, InferenceOptions(flip=True))
    want = (softmax(x) + softmax(x.flip(-1)).flip(-1))[0] / 2
    torch.testing.assert_close(flipped, want)
    assert (flipped - plain).abs().max() > 1e-2  # the flip matters for this net

    scales = (0.75, 1.0, 1.25)
    ms = p.probabilities(image, InferenceOptions(flip=True, scales=scales))
    terms = []
    for s in scales:
        size = (round(24 * s), round(31 * s))
        xs = resize(x, size, s < 1) if s != 1 else x
        for q in (softmax(xs), softmax(xs.flip(-1)).flip(-1)):
            terms.append(q if s == 1 else F.interpolate(q, size=(24, 31), mode="bilinear"))
    torch.testing.assert_close(ms, torch.stack(terms).mean(0)[0])
    assert ms.shape == (3, 24, 31)
    torch.testing.assert_close(ms.sum(0), torch.ones(24, 31))


def test_probabilities_batch_whole_and_tiled() -> None:
    """The batch path equals the per-image path, whole (one TTA batch) and tiled (image by
    image), for uint8 and float inputs."""
    p = _predictor()
    images = torch.randint(0, 256, (3, 3, 29, 41), dtype=torch.uint8)
    for options in (InferenceOptions(flip=True, scales=(0.5, 1.0)),
                    InferenceOptions(tile=16, overlap=4, flip=True)):  # fmt: skip
        batch = p.probabilities_batch(images, options)
        assert batch.shape == (3, 4, 29, 41)
        for image, probs in zip(images, batch, strict=True):
            torch.testing.assert_close(probs, p.probabilities(image, options))
        torch.testing.assert_close(p.probabilities_batch(images.float() / 255, options), batch)
    with pytest.raises(ValueError, match="B×3×H×W"):
        p.probabilities_batch(images[0])


def test_predictor_from_checkpoint_any_size(tmp_path, make_fcn_checkpoint) -> None:
    """A saved FCN-8s checkpoint predicts 1×1, odd and tiled images; uint8 and [0, 1] inputs
    give the same answer (the checkpoint's normalisation is applied)."""
    path = make_fcn_checkpoint(tmp_path / "m.safetensors", classes=["x", "y", "z"],
                               palette=[[0, 0, 0]] * 3)  # fmt: skip
    p = Predictor.from_checkpoint(path, device="cpu")
    assert p.predict(torch.zeros(3, 1, 1, dtype=torch.uint8)).shape == (1, 1)
    image = torch.randint(0, 256, (3, 97, 101), dtype=torch.uint8)
    labels = p.predict(image, InferenceOptions(tile=64, overlap=16))
    assert labels.shape == (97, 101) and labels.dtype == torch.uint8
    torch.testing.assert_close(p.probabilities(image), p.probabilities(image.float() / 255))
    covering = InferenceOptions(tile=128)
    torch.testing.assert_close(p.probabilities(image, covering), p.probabilities(image))


def test_cli_predict_files_folders_globs(tmp_path, make_fcn_checkpoint) -> None:
    """`fcnseg predict CKPT INPUT… -o DIR`: palette PNGs of class indices (equal to the Python
    API's answer), overlays, probabilities; any image mode; clear error for missing input."""
    import numpy as np
    from PIL import Image

    from fcnseg.cli import main

    ckpt = make_fcn_checkpoint(tmp_path / "m.safetensors", classes=["x", "y", "z"],
                               palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0]])  # fmt: skip
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (33, 47, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (20, 21), dtype=np.uint8), "L").save(folder / "b.jpg")
    single = tmp_path / "c.png"
    Image.fromarray(rng.integers(0, 255, (5, 7, 4), dtype=np.uint8), "RGBA").save(single)
    out = tmp_path / "out"
    args = ["predict", str(ckpt), str(folder), str(tmp_path / "*.png"), "-o", str(out)]
    assert main([*args, "--tile", "16", "--overlap", "4", "--probabilities", "--no-progress"]) == 0
    for stem, size in (("a", (47, 33)), ("b", (21, 20)), ("c", (7, 5))):
        label = Image.open(out / f"{stem}.png")
        assert label.mode == "P" and label.size == size
        assert (out / f"{stem}_overlay.png").is_file()
        assert np.load(out / f"{stem}_probs.npy").shape == (3, size[1], size[0])
    from fcnseg.data.io import read_image

    expected = Predictor.from_checkpoint(ckpt).predict(
        read_image(folder / "a.png"), InferenceOptions(tile=16, overlap=4)
    )
    assert np.array_equal(np.array(Image.open(out / "a.png")), expected.numpy())
    with pytest.raises(SystemExit, match="no such file"):
        main(["predict", str(ckpt), str(tmp_path / "missing.png"), "-o", str(out)])
    with pytest.raises(SystemExit, match=r"fcnseg predict: overlap must be in \[0, tile\)"):
        main([*args, "--tile", "32"])


def test_predict_paths_batches_same_size_images_and_skips_bad_files(tmp_path) -> None:
    """Batched passes give the same label maps as one image at a time; an unreadable file is
    reported and every other image is still written."""
    import numpy as np
    from PIL import Image

    from fcnseg.inference import predict_paths

    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    for i, size in enumerate([(20, 30), (20, 30), (20, 30), (11, 9), (20, 30)]):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "3b.png").write_bytes(b"not a png")
    p = Predictor(
        PointwiseNet(), ["a", "b", "c", "d"], [[0, 0, 0], [9, 9, 9], [5, 5, 5], [1, 2, 3]]
    )
    outputs = {}
    for batch in (1, 3):
        failures: list = []
        written = predict_paths(p, [folder], tmp_path / f"b{batch}", batch_size=batch,
                                options=InferenceOptions(flip=True), progress=False,
                                failures=failures)  # fmt: skip
        assert [w.name for w in written] == ["0.png", "1.png", "2.png", "3.png", "4.png"]
        assert len(failures) == 1 and failures[0][0].name == "3b.png"
        assert "3b.png" in failures[0][1]
        outputs[batch] = [np.array(Image.open(w)) for w in written]
    for one, many in zip(outputs[1], outputs[3], strict=True):
        np.testing.assert_array_equal(one, many)


def test_sliding_window_evaluation_equals_whole_image() -> None:
    """``evaluate`` goes through the Predictor's batch path: with a pointwise net, sliding-window
    evaluation (tiles smaller than the images) gives exactly the whole-image confusion matrix;
    TTA runs through the same path; the model's training mode is restored."""
    from torch.utils.data import DataLoader, TensorDataset

    from fcnseg.engine.evaluate import evaluate

    g = torch.Generator().manual_seed(3)
    images = torch.rand(5, 3, 45, 38, generator=g)
    masks = torch.randint(0, 4, (5, 45, 38), generator=g)
    masks[:, :3] = 255  # ignored rows
    loader = DataLoader(TensorDataset(images, masks), batch_size=2)
    net = PointwiseNet().train()
    kwargs = {"num_classes": 4, "ignore_index": 255, "device": torch.device("cpu"),
              "progress": False}  # fmt: skip
    whole, kept = evaluate(net, loader, keep=3, **kwargs)
    assert net.training and len(kept) == 3 and whole.matrix.sum() == 5 * 42 * 38
    for options in (InferenceOptions(tile=16, overlap=5), InferenceOptions(tile=20, overlap=0),
                    InferenceOptions(tile=16, overlap=4, flip=True)):  # fmt: skip
        tiled, _ = evaluate(net, loader, options=options, **kwargs)
        assert torch.equal(tiled.matrix, whole.matrix), options
