"""Inference: overlap-tiled prediction in strips, TTA, any image size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcnseg.inference import Predictor, tile_positions, tile_weight
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
    whole = p.probabilities(image)
    tiled = p.probabilities(image, tile=tile, overlap=overlap)
    assert tiled.shape == whole.shape == (4, *size)
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-6)
    assert torch.equal(p.predict(image, tile=tile, overlap=overlap), whole.argmax(0).byte())


def test_tile_covering_the_image_is_whole_image_inference() -> None:
    p = _predictor()
    image = torch.rand(3, 30, 40)
    torch.testing.assert_close(p.probabilities(image, tile=40), p.probabilities(image))


def test_tiles_cover_every_pixel_and_blend_weights() -> None:
    assert tile_positions(100, 32, 24) == [0, 24, 48, 68]
    assert tile_positions(10, 32, 24) == [0]
    w = tile_weight(8, 8, 3)
    assert w[4, 4] == 1 and w[0, 0] == pytest.approx(1 / 16) and w.min() > 0
    with pytest.raises(ValueError, match="overlap"):
        _predictor().probabilities(torch.rand(3, 40, 40), tile=16, overlap=16)


def test_tta_flip_and_scales() -> None:
    """Flip TTA is exact for a flip-equivariant net; multi-scale returns full-size maps."""
    p = _predictor()
    image = torch.rand(3, 24, 31)
    torch.testing.assert_close(p.probabilities(image, flip=True), p.probabilities(image))
    ms = p.probabilities(image, scales=(0.75, 1.0, 1.25), flip=True)
    assert ms.shape == (4, 24, 31)
    torch.testing.assert_close(ms.sum(0), torch.ones(24, 31))


def test_predictor_from_checkpoint_any_size(tmp_path, make_fcn_checkpoint) -> None:
    """A saved FCN-8s checkpoint predicts 1×1, odd and tiled images; uint8 and [0, 1] inputs
    give the same answer (the checkpoint's normalisation is applied)."""
    path = make_fcn_checkpoint(tmp_path / "m.safetensors", classes=["x", "y", "z"],
                               palette=[[0, 0, 0]] * 3)  # fmt: skip
    p = Predictor.from_checkpoint(path, device="cpu")
    assert p.predict(torch.zeros(3, 1, 1, dtype=torch.uint8)).shape == (1, 1)
    image = torch.randint(0, 256, (3, 97, 101), dtype=torch.uint8)
    labels = p.predict(image, tile=64, overlap=16)
    assert labels.shape == (97, 101) and labels.dtype == torch.uint8
    torch.testing.assert_close(p.probabilities(image), p.probabilities(image.float() / 255))
    torch.testing.assert_close(p.probabilities(image, tile=128), p.probabilities(image))


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
        read_image(folder / "a.png"), tile=16, overlap=4
    )
    assert np.array_equal(np.array(Image.open(out / "a.png")), expected.numpy())
    with pytest.raises(SystemExit, match="no such file"):
        main(["predict", str(ckpt), str(tmp_path / "missing.png"), "-o", str(out)])


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
                                flip=True, progress=False, failures=failures)  # fmt: skip
        assert [w.name for w in written] == ["0.png", "1.png", "2.png", "3.png", "4.png"]
        assert len(failures) == 1 and failures[0][0].name == "3b.png"
        assert "3b.png" in failures[0][1]
        outputs[batch] = [np.array(Image.open(w)) for w in written]
    for one, many in zip(outputs[1], outputs[3], strict=True):
        np.testing.assert_array_equal(one, many)
