"""Dense CRF: sharpens a blurred (FCN-32s-like) prediction along image edges; wiring into
Predictor and evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from fcnseg.crf import CRFParams, dense_crf
from fcnseg.inference import InferenceOptions, Predictor, tta_probabilities

pytest.importorskip("pydensecrf.densecrf")


def _scene(size: int = 96) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """A diamond and a box on a background, colours with noise; the 'prediction' is the true
    one-hot pooled ×16 and bilinearly upsampled (rounded corners, a lost thin part), made
    unconfident — what a coarse FCN layer yields."""
    yy, xx = np.mgrid[:size, :size]
    gt = ((np.abs(xx - 48) + np.abs(yy - 48)) < 30) | ((xx > 70) & (yy < 20))
    gt = gt.astype(np.int64)
    rng = np.random.default_rng(0)
    colours = np.where(gt[..., None] == 1, [200, 60, 60], [40, 90, 160])
    image = np.clip(colours + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
    onehot = F.one_hot(torch.from_numpy(gt), 2).permute(2, 0, 1).float()[None]
    blurred = F.interpolate(F.avg_pool2d(onehot, 16), size=(size, size), mode="bilinear")[0]
    probs = blurred * 0.6 + 0.2
    return image, gt, probs / probs.sum(0)


def _edge_error(probs: torch.Tensor, gt: np.ndarray) -> float:
    band = ndimage.binary_dilation(gt, iterations=6) & ~ndimage.binary_erosion(gt, iterations=6)
    return float((probs.argmax(0).numpy() != gt)[band].mean())


def test_crf_sharpens_blurred_prediction_along_image_edges() -> None:
    image, gt, blurred = _scene()
    before = _edge_error(blurred, gt)
    assert before > 0.1  # the coarse prediction is wrong near the boundary
    refined = dense_crf(image, blurred, CRFParams(bilateral_sxy=20))
    assert refined.shape == blurred.shape
    torch.testing.assert_close(refined.sum(0), torch.ones(96, 96))
    assert _edge_error(refined, gt) < 0.25 * before
    # Control: without image edges to follow, the same CRF cannot recover the boundary.
    flat = np.full_like(image, 128)
    assert _edge_error(dense_crf(flat, blurred, CRFParams(bilateral_sxy=20)), gt) > before


def test_crf_accepts_tensor_layouts_and_rejects_mismatch() -> None:
    image, _, probs = _scene()
    chw = torch.from_numpy(image).permute(2, 0, 1)
    torch.testing.assert_close(dense_crf(chw, probs), dense_crf(image, probs))
    torch.testing.assert_close(dense_crf(chw.float() / 255, probs), dense_crf(image, probs))
    with pytest.raises(ValueError, match="does not match"):
        dense_crf(image[:50], probs)


class _Pointwise(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.preprocess = torch.nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * 4


def test_predictor_applies_crf_after_tta() -> None:
    image, _, _ = _scene()
    p = Predictor(_Pointwise(), ["bg", "fg"], [[0, 0, 0], [255, 0, 0]])
    chw = torch.from_numpy(image).permute(2, 0, 1)
    params = CRFParams(iterations=3)
    plain = p.probabilities(chw, InferenceOptions(flip=True))
    torch.testing.assert_close(p.probabilities(chw, InferenceOptions(flip=True, crf=params)),
                               dense_crf(chw, plain, params))  # fmt: skip
    labels = p.predict(chw, InferenceOptions(flip=True, crf=params))
    assert torch.equal(labels, dense_crf(chw, plain, params).argmax(0).byte())


def test_tta_probabilities_is_mean_of_flipped_softmax() -> None:
    net = _Pointwise()
    x = torch.rand(2, 3, 10, 13)
    want = (net(x).softmax(1) + net(x.flip(-1)).softmax(1).flip(-1)) / 2
    torch.testing.assert_close(tta_probabilities(net, x, flip=True), want)
    ms = tta_probabilities(net, x, scales=(0.5, 1.5))
    assert ms.shape == (2, 2, 10, 13)
    with pytest.raises(ValueError, match="scales"):
        tta_probabilities(net, x, scales=())
