"""Training crops with context (the U-Net paper's way): a valid U-Net trains on output crops
whose input context is cut from the image around them (mirrored only beyond its border), so a
training tile computes what the whole-image forward computes there; FCN trains on the crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close
from torchvision import tv_tensors

from fcnseg.config import load_config
from fcnseg.data.base import SegmentationDataset
from fcnseg.data.transforms import ContextCrop, PadCollate, WeightMap, train_transforms
from fcnseg.engine import build
from fcnseg.engine.trainer import Trainer
from fcnseg.forward import forward
from fcnseg.models import SegmentationModel
from fcnseg.models.unet import unet

IGNORE = 255

#: A tiny valid U-Net (depth 2: 20 px of context) on synthetic 40×48 images, 16×20 crops.
UNET = [
    "data.dataset=synthetic", "data.root=null", "data.options={num_images: 6, size: [40, 48]}",
    "data.crop_size=[16, 20]", "data.batch_size=2", "data.val_batch_size=2",
    "data.num_workers=0", "model.in_channels=3", "model.base_width=3", "model.depth=2",
    "data.elastic_sigma=0", "train.weight_map=false", "train.iterations=4", "train.eval_every=4",
    "train.checkpoint_every=2", "train.log_every=1",
]  # fmt: skip


def _unet_cfg(*extra: str):
    return load_config("unet_isbi2012", [*UNET, *extra])


def _reflect(image: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """Reference: the window of ``image`` (C×H×W) at (top, left), numpy-reflected outside."""
    pad = max(height, width) + abs(top) + abs(left)
    big = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    return big[:, top + pad : top + pad + height, left + pad : left + pad + width]


def _coordinates(h: int, w: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """Image R = row, G = column, B = random; mask = 1000·row + column."""
    rows = torch.arange(h).view(h, 1).expand(h, w)
    cols = torch.arange(w).view(1, w).expand(h, w)
    noise = torch.randint(0, 256, (h, w), generator=torch.Generator().manual_seed(0))
    image = torch.stack([rows, cols, noise]).to(torch.uint8)
    return tv_tensors.Image(image), tv_tensors.Mask(rows * 1000 + cols)


# --------------------------------------------------------------------------------------------
# The hook
# --------------------------------------------------------------------------------------------


def test_hook_valid_unet_wants_its_mirror_margins_others_none() -> None:
    net = unet(num_classes=2, depth=2, base_width=2, in_channels=3)
    assert net.training_context(16, 21) == (net.same_size_padding(16), net.same_size_padding(21))
    assert net.training_context(16, 21) == ((20, 20), (20, 23))
    assert unet(num_classes=2, depth=2, base_width=2, padding="same").training_context(8, 8) is None
    assert SegmentationModel().training_context(8, 8) is None  # the default (FCN)
    x = torch.rand(1, 3, 56, 60)
    with torch.no_grad():
        assert torch.equal(net(x, valid=True), net.forward_valid(x))


# --------------------------------------------------------------------------------------------
# The crop with context, and its batching
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(30, 40), (9, 11)])  # larger and smaller than the crop
def test_context_crop_cuts_the_real_image_mirrored_beyond_its_border(size) -> None:
    h, w = size
    image, mask = _coordinates(h, w)
    weights = WeightMap(mask.float() + 1)
    crop, context = (12, 16), ((5, 7), (6, 9))
    pipeline = train_transforms(
        crop_size=crop, context=context, scale_range=None, hflip=True, fill=(1, 2, 3)
    )
    flips = set()
    for seed in range(24):
        torch.manual_seed(seed)
        tile, labels, wts = pipeline(image, mask, weights)
        assert tile.shape == (3, 12 + 12, 16 + 15) and labels.shape == wts.shape == crop
        inside = labels != IGNORE
        assert torch.equal(wts[inside], labels[inside].float() + 1)
        assert (wts[~inside] == 0).all()
        # Where the crop lies (and whether the image was flipped first), from one label.
        i, j = (int(v[0]) for v in inside.nonzero(as_tuple=True))
        row, col = divmod(int(labels[i, j]), 1000)
        flipped = w > 1 and bool((labels[i, j + 1 :][inside[i, j + 1 :]] < labels[i, j]).any())
        flips.add(flipped)
        source = image.numpy()[..., ::-1] if flipped else image.numpy()
        y, x = row - i, (w - 1 - col if flipped else col) - j
        expected = _reflect(source, y - 5, x - 6, 24, 31).astype(np.float32) / 255
        assert_close(tile, torch.from_numpy(expected.copy()), rtol=0, atol=1e-6)
    assert flips == {True, False}  # the flip comes before the crop: margins stay in place


def test_pad_collate_takes_images_larger_than_masks_by_one_margin() -> None:
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(3, 4 + 5, 6 + 7, generator=g), torch.randint(0, 3, (4, 6), generator=g))
    b = (torch.rand(3, 8 + 5, 3 + 7, generator=g), torch.randint(0, 3, (8, 3), generator=g))
    images, masks = PadCollate(fill=(0.25, 0.5, 0.75))([a, b])
    assert images.shape == (2, 3, 8 + 5, 6 + 7) and masks.shape == (2, 8, 6)
    assert torch.equal(images[0, :, :9, :13], a[0]) and torch.equal(images[1, :, :13, :10], b[0])
    assert (images[0, 0, 9:] == 0.25).all() and (masks[1, :, 3:] == IGNORE).all()
    c = (torch.rand(3, 8 + 5, 3 + 6), b[1])  # another margin in the same batch
    with pytest.raises(ValueError, match="does not match"):
        PadCollate()([a, c])


def test_context_crop_validates_and_pickles() -> None:
    import pickle

    with pytest.raises(ValueError, match="margins >= 0"):
        ContextCrop((8, 8), ((-1, 0), (0, 0)))
    with pytest.raises(ValueError, match="needs a crop_size"):
        train_transforms(crop_size=None, context=((1, 1), (1, 1)), fill=(0, 0, 0))
    op = pickle.loads(pickle.dumps(ContextCrop((8, 8), ((1, 2), (3, 4)))))
    assert op.context == ((1, 2), (3, 4))


# --------------------------------------------------------------------------------------------
# Through the Trainer
# --------------------------------------------------------------------------------------------


def test_unet_training_batch_carries_the_margins(tmp_path: Path) -> None:
    """(a) Images exceed masks by exactly the margins; ``forward(valid=True)`` gives logits of
    the mask's size (16×20: sizes the depth-2 network yields exactly); weight maps follow the
    mask. A crop the network overruns (18×22 → 20×24 logits) still trains: the Trainer keeps
    the crop's pixels."""
    trainer = Trainer(_unet_cfg("train.weight_map=true"), tmp_path / "run", progress=False)
    (top, bottom), (left, right) = trainer.train_context
    images, masks, weights = next(trainer.batches())
    assert masks.shape == weights.shape == (2, 16, 20)
    assert images.shape == (2, 3, 16 + top + bottom, 20 + left + right)
    with torch.no_grad():
        assert forward(trainer.model, images, valid=True).shape == (2, 6, 16, 20)
    trainer.train()
    assert trainer.iteration == 4 and np.isfinite(trainer.metrics["mean_iu"])

    odd = Trainer(_unet_cfg("data.crop_size=[18, 22]"), tmp_path / "odd", progress=False)
    images, masks = next(odd.batches())
    with torch.no_grad():
        assert forward(odd.model, images, valid=True).shape == (2, 6, 20, 24)
    assert torch.isfinite(odd.train_step(images, masks))


class _OneImage(SegmentationDataset):
    """One image with a coordinate mask (1000·row + column): a crop tells where it was cut."""

    classes = tuple(str(c) for c in range(6))

    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        h, w = image.shape[-2:]
        self.image = tv_tensors.Image(image)
        self.mask = tv_tensors.Mask(torch.arange(h).view(h, 1) * 1000 + torch.arange(w))

    def __len__(self) -> int:
        return 1

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        return self.image, self.mask

    def name(self, index: int) -> str:
        return "one"


def test_training_tile_sees_the_image_as_the_whole_image_forward_does(tmp_path: Path) -> None:
    """(b) The logits the Trainer's loss receives for a crop equal the whole-image forward
    (mirrored only at the image border) cut at the crop, for crops on the pooling grid
    (multiples of 2^depth, where the tile's pooling grid is the image's). Negative control: the
    old crop-then-mirror path (``model(crop)``) differs there."""
    cfg = _unet_cfg("data.batch_size=1", "data.hflip=false")
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    image = torch.randint(0, 256, (3, 28, 32), generator=torch.Generator().manual_seed(1))
    image = image.to(torch.uint8)
    fill = (128, 128, 128)
    trainer.train_data = build.prepare_train_set(
        cfg, _OneImage(image), fill, tmp_path, context=trainer.train_context
    )
    seen: list[torch.Tensor] = []

    def capture(logits: torch.Tensor, masks: torch.Tensor, weight_map: object) -> torch.Tensor:
        seen.append(logits.detach())
        return logits.sum() * 0

    trainer.criterion = capture
    net = trainer.net.eval()
    with torch.no_grad():
        whole = forward(net, image[None].float() / 255)
    checked = set()
    batches = trainer.batches()
    for _ in range(150):
        images, masks = next(batches)
        y, x = divmod(int(masks[0, 0, 0]), 1000)
        if y % 4 or x % 4 or (y, x) in checked:
            continue
        trainer.train_step(images, masks)
        expected = whole[..., y : y + 16, x : x + 20]
        assert_close(seen[-1], expected, rtol=1e-4, atol=1e-5)
        with torch.no_grad():  # negative control: the crop mirrored at its own edge
            old = forward(net, image[None, :, y : y + 16, x : x + 20].float() / 255)
        assert (old - expected).abs().max() > 1e-3
        checked.add((y, x))
    assert len(checked) >= 3, checked


def test_fcn_training_batches_are_crops_alone(tmp_path: Path) -> None:
    """(c) FCN wants no context: images and masks of the crop's size, as before."""
    overrides = ["data.options={num_images: 4, size: [48, 64]}", "data.crop_size=[40, 56]",
                 "data.batch_size=2", "data.num_workers=0"]  # fmt: skip
    cfg = load_config("fcn8s_resnet18_synthetic", overrides)
    trainer = Trainer(cfg, tmp_path / "r", progress=False)
    assert trainer.train_context is None
    images, masks = next(trainer.batches())
    assert images.shape == (2, 3, 40, 56) and masks.shape == (2, 40, 56)


def test_unet_without_crop_or_same_padding_trains_on_the_crop_alone(tmp_path: Path) -> None:
    for extra in ("data.crop_size=null", "model.padding=same"):
        trainer = Trainer(_unet_cfg(extra), tmp_path / extra, progress=False)
        assert trainer.train_context is None
        images, masks = next(trainer.batches())
        assert images.shape[-2:] == masks.shape[-2:]


def test_resident_data_refuses_a_context_model(tmp_path: Path) -> None:
    cfg = _unet_cfg("data.resident=true")
    with pytest.raises(ValueError, match=r"data\.resident does not support .*context"):
        Trainer(cfg, tmp_path / "run", progress=False)


def test_unet_resume_with_context_is_bit_identical(tmp_path: Path) -> None:
    """(e) Interrupted after 2 of 4 iterations (with a worker) and resumed: the weights equal
    an uninterrupted run's (elastic deformation, flips and weight maps on)."""
    extra = ["data.elastic_sigma=4", "train.weight_map=true"]
    cfg = _unet_cfg(*extra)
    Trainer(cfg, tmp_path / "full", progress=False).train()
    cut = Trainer(_unet_cfg(*extra, "data.num_workers=1"), tmp_path / "cut", progress=False)
    cut.train(stop_at=2)
    Trainer(cfg, tmp_path / "cut", resume=True, progress=False).train()
    from fcnseg import checkpoint as ckpt

    a, b = (ckpt.load_checkpoint(tmp_path / r / "checkpoints" / "last.safetensors").state_dict
            for r in ("full", "cut"))  # fmt: skip
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
