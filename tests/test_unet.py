"""U-Net: the paper's valid-convolution geometry, mirror-padded same-size output, seamless
overlap-tile inference, tiling through the Predictor, and both fusion variants training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from fcnseg.inference import InferenceOptions, Predictor
from fcnseg.losses import SegmentationLoss
from fcnseg.models import geometry as G
from fcnseg.models.unet import UNet, mirror_pad, overlap_tile, unet
from fcnseg.weightmap import unet_weight_map
from fcnseg.weights import Preprocess


def _net(depth: int = 2, **kwargs: object) -> UNet:
    torch.manual_seed(0)
    kwargs.setdefault("base_width", 4)
    return unet(num_classes=2, depth=depth, **kwargs).eval()  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Geometry of the valid network
# --------------------------------------------------------------------------------------------


def test_paper_geometry_572_gives_388() -> None:
    """Fig. 1 of the paper, read from the layer list (full depth, channel width is irrelevant)."""
    net = unet(num_classes=2, base_width=1)
    assert net.output_size(572) == 388
    assert net.input_size(388) == 572
    assert net.context == 92  # (572 − 388) / 2 pixels eaten per side
    assert net.output_grid == G.Grid(1, 92, 200)
    # Every map size of Fig. 1, conv by conv (last entry: the 1×1 output layer).
    sizes = [out for _, _, out in G.layer_sizes(net, 572)]
    assert sizes == [
        570, 568, 284, 282, 280, 140, 138, 136, 68, 66, 64, 32, 30, 28,
        56, 54, 52, 104, 102, 100, 200, 198, 196, 392, 390, 388, 388,
    ]  # fmt: skip
    # The crop-and-copy crops: 64 → 56, 136 → 104, 280 → 200, 568 → 392.
    assert [level.crop for level in net.decoder] == [4, 16, 40, 88]
    # Every 2×2 pool sees an even size at 572; at 574 the second pool gets 285.
    assert G.exact_fit(net, 572) and not G.exact_fit(net, 574)
    # The real forward pass agrees (width 1 keeps it cheap).
    with torch.no_grad():
        assert net.forward_valid(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_output_size_matches_forward(depth: int, padding: str) -> None:
    net = _net(depth, base_width=2, padding=padding)
    sizes = range(G.min_input_size(net), G.min_input_size(net) + 2**depth + 3)
    with torch.no_grad():
        for size in sizes:  # exact and misfitting sizes alike
            out = net.forward_valid(torch.zeros(1, 1, size, size + 1))
            assert out.shape[-2:] == (net.output_size(size), net.output_size(size + 1))
    for want in (1, 5, 16, 33):
        size = net.input_size(want)
        assert net.output_size(size) >= want > net.output_size(size - 1)
        assert G.exact_fit(net, size)
    if padding == "same":
        assert net.context == 0 and net.input_size(16) == 16


def test_same_size_padding_comes_from_geometry() -> None:
    net = _net(3)
    top, bottom = net.same_size_padding(50)
    assert top == net.context == 44
    assert net.output_size(top + 50 + bottom) >= 50
    assert top + 50 + bottom == net.input_size(50)


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_closed_form_padding_equals_the_geometry_search(depth: int, padding: str) -> None:
    """The closed form used for symbolic sizes (export) agrees with the geometry's search."""
    net = unet(num_classes=2, base_width=2, depth=depth, padding=padding)
    for size in range(1, 120):
        symbolic = net.same_size_padding(torch.tensor(size))  # not an int: the closed form
        assert tuple(int(v) for v in symbolic) == G.same_size_padding(net, size), size


@pytest.mark.parametrize("n,before,after", [(5, 2, 3), (5, 4, 4), (3, 9, 11), (7, 20, 1)])
def test_mirror_pad_is_numpy_reflect(n: int, before: int, after: int) -> None:
    x = torch.arange(n * 4, dtype=torch.float32).view(1, 1, n, 4)
    out = mirror_pad(x, before, after, 1, 2)
    ref = np.pad(x.numpy(), ((0, 0), (0, 0), (before, after), (1, 2)), mode="reflect")
    assert_close(out, torch.from_numpy(ref))
    assert mirror_pad(torch.ones(1, 1, 1, 1), 3, 3, 3, 3).shape == (1, 1, 7, 7)


# --------------------------------------------------------------------------------------------
# Same-size output, overlap-tile inference
# --------------------------------------------------------------------------------------------


def test_forward_returns_input_size_for_any_size() -> None:
    for padding in ("valid", "same"):
        net = _net(3, padding=padding)
        with torch.no_grad():
            for h, w in ((1, 1), (7, 30), (37, 50)):
                assert net(torch.rand(2, 1, h, w)).shape == (2, 2, h, w)


def test_mirrored_output_is_the_centre_of_a_larger_mirrored_image() -> None:
    """Mirror-padding inside ``forward`` computes exactly what the network computes on a
    larger mirrored copy of the image (shifted by a multiple of the pooling grid, 2^depth)."""
    net = _net(3)
    x = torch.rand(1, 1, 37, 50)
    pad = 56  # a multiple of 8, beyond the context (44) of every centre pixel
    big = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)), "reflect"))
    with torch.no_grad():
        small_out = net(x)
        centre = net(big)[..., pad : pad + 37, pad : pad + 50]
        assert_close(small_out, centre, rtol=1e-4, atol=1e-5)
        # The test has teeth: a shift that is not a multiple of 2^3 moves the pooling grid.
        off = 52
        shifted = torch.from_numpy(
            np.pad(x.numpy(), ((0, 0), (0, 0), (off, off), (off, off)), "reflect")
        )
        other = net(shifted)[..., off : off + 37, off : off + 50]
        assert (other - small_out).abs().max() > 1e-3


@pytest.mark.parametrize("depth,tile", [(2, 12), (3, 16)])
def test_overlap_tile_equals_whole_image(depth: int, tile: int) -> None:
    net = _net(depth)
    x = torch.rand(1, 1, 45, 38)
    with torch.no_grad():
        assert_close(overlap_tile(net, x, tile), net(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="valid"):
        overlap_tile(_net(depth, padding="same"), x, tile)


def test_predictor_tiling_is_overlap_tile_and_equals_whole_image() -> None:
    """The project's Predictor tiles a valid U-Net with the paper's overlap-tile strategy (each
    tile's context from the image): tiled == whole-image everywhere, also for a tile size that
    is not a multiple of the pooling grid (rounded down to one)."""
    net = _net(2)  # pooling grid 4
    predictor = Predictor(net, ["membrane", "cell"], [[0, 0, 0], [255, 255, 255]])
    g = torch.Generator().manual_seed(1)
    grey = torch.randint(0, 256, (1, 150, 131), dtype=torch.uint8, generator=g)
    image = grey.expand(3, -1, -1)  # a grey image stored as RGB, as the loaders give it
    whole = predictor.probabilities(image)
    for tile in (64, 50):
        tiled = predictor.probabilities(image, InferenceOptions(tile=tile, overlap=16))
        assert whole.shape == tiled.shape == (2, 150, 131)
        assert_close(tiled, whole, rtol=1e-4, atol=1e-5)
    # Grey in RGB is the grey network's input: the same as feeding one channel.
    with torch.no_grad():
        one = net(net.preprocess(image[None].float() / 255)[:, :1])
    assert_close(whole, one.softmax(1)[0], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Building and training both variants
# --------------------------------------------------------------------------------------------


def test_preprocess_and_channels() -> None:
    net = _net(2)
    assert isinstance(net.preprocess, Preprocess)
    assert net.preprocess.to_dict()["mean"] == [0.5] * 3
    assert_close(net.preprocess(torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1)).flatten(),
                 torch.tensor([-1.0, 0.0, 1.0]))  # fmt: skip
    rgb = unet(num_classes=3, in_channels=3, depth=2, base_width=4).eval()
    with torch.no_grad():
        assert rgb(torch.rand(1, 3, 20, 20)).shape == (1, 3, 20, 20)
        assert rgb(torch.rand(1, 1, 20, 20)).shape == (1, 3, 20, 20)
        with pytest.raises(ValueError, match="channel"):
            net(torch.rand(1, 2, 20, 20))
    for bad in ({"in_channels": 2}, {"padding": "reflect"}, {"fuse": "max"}, {"dropout": 1.0}):
        with pytest.raises(ValueError):
            unet(num_classes=2, **bad)  # type: ignore[arg-type]


def test_paper_initialisation() -> None:
    """Gaussian weights with std sqrt(2/N), N = inputs of one unit; zero biases."""
    net = unet(num_classes=2, base_width=16, depth=2)
    conv = net.encoder[1][1]
    assert abs(float(conv.weight.detach().std()) - math.sqrt(2 / (16 * 9))) < 0.01
    up = net.decoder[0].up  # 2×2 stride 2: one tap per input channel
    assert abs(float(up.weight.detach().std()) - math.sqrt(2 / 64)) < 0.02
    assert all(float(m.bias.detach().abs().max()) == 0 for m in (conv, up))


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_concat_and_sum_variants_build_and_train(padding: str) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    blobs = torch.nn.functional.avg_pool2d(torch.rand(4, 1, 32, 32, generator=g), 5, 1, 2)
    blobs = (blobs - blobs.amin()) / (blobs.amax() - blobs.amin())  # full contrast in [0, 1]
    target = (blobs[:, 0] > blobs.median()).long()
    images = blobs.expand(-1, 3, -1, -1)
    weight_map = torch.stack([torch.from_numpy(unet_weight_map(t)) for t in target])
    params = {}
    for fuse in ("concat", "sum"):
        torch.manual_seed(0)
        net = unet(num_classes=2, base_width=4, depth=2, padding=padding, fuse=fuse)
        params[fuse] = sum(p.numel() for p in net.parameters())
        loss_fn = SegmentationLoss()
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        losses = []
        for _ in range(12):
            opt.zero_grad()
            logits = net(net.preprocess(images))
            assert logits.shape == (4, 2, 32, 32)
            loss = loss_fn(logits, target, weight_map=weight_map)
            loss.backward()
            assert all(
                p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters()
            )
            opt.step()
            losses.append(float(loss.detach()))
        assert losses[-1] < 0.8 * losses[0], (fuse, losses)
    # Summing halves the input channels of each expanding level's first convolution.
    assert params["sum"] < params["concat"]


def test_dropout_only_in_training() -> None:
    net = unet(num_classes=2, base_width=4, depth=2, dropout=0.5)
    x = torch.rand(1, 1, 24, 24)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))


def test_unet_trains_through_the_pipeline_and_reloads(tmp_path) -> None:
    """`fcnseg train` with model.name=unet, elastic deformation and the weight map: runs,
    checkpoints, and the checkpoint rebuilds a U-Net that predicts through the Predictor."""
    from fcnseg.cli import main

    run = tmp_path / "run"
    overrides = ["data.dataset=synthetic", "data.root=null",
                 "data.options={num_images: 6, size: [40, 48]}",
                 "data.crop_size=[32, 32]", "data.batch_size=2", "data.val_batch_size=2",
                 "data.num_workers=0", "model.in_channels=3", "model.base_width=4",
                 "model.depth=2", "train.iterations=2", "train.eval_every=2",
                 "train.checkpoint_every=2"]  # fmt: skip
    args = ["train", "unet_isbi2012", "-o", str(run), "--no-progress"]
    assert main([*args, *[x for o in overrides for x in ("--set", o)]]) == 0
    p = Predictor.from_checkpoint(run, device="cpu")
    assert p.model.__class__.__name__ == "UNet" and len(p.classes) == 6
    image = torch.randint(0, 256, (3, 37, 45), dtype=torch.uint8)
    assert p.predict(image).shape == (37, 45)
    assert torch.equal(p.predict(image, InferenceOptions(tile=16, overlap=4)), p.predict(image))
