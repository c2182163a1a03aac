"""Joint transforms: masks only nearest-resampled, image/mask alignment, padding, collation."""

from __future__ import annotations

import functools
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torchvision import tv_tensors

from fcnseg.data.transforms import (
    PadCollate,
    eval_transforms,
    fill_from_preprocess,
    pad_collate,
    train_transforms,
)
from fcnseg.weights import IMAGENET_TORCHVISION, Preprocess

IGNORE = 255
FILL = (124, 117, 104)
PALETTE = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=torch.uint8)


def block_sample(h: int = 48, w: int = 64, block: int = 8, *, seed: int = 0):
    """An image whose colour encodes the label (PALETTE), labels in block×block squares, and a
    2-pixel ignore border painted grey."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, len(PALETTE), (h // block, w // block), generator=g)
    labels = blocks.repeat_interleave(block, 0).repeat_interleave(block, 1)
    image = PALETTE[labels].permute(2, 0, 1).contiguous()
    labels[:2], labels[-2:], labels[:, :2], labels[:, -2:] = IGNORE, IGNORE, IGNORE, IGNORE
    image[:, labels == IGNORE] = 128
    return tv_tensors.Image(image), tv_tensors.Mask(labels)


def coordinate_sample(h: int, w: int):
    """Image channels R = row, G = column; mask = 1000·row + column: any crop/flip is readable."""
    rows = torch.arange(h).view(h, 1).expand(h, w)
    cols = torch.arange(w).view(1, w).expand(h, w)
    image = torch.stack([rows, cols, torch.full_like(rows, 7)]).to(torch.uint8)
    return tv_tensors.Image(image), tv_tensors.Mask(rows * 1000 + cols)


def interior(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Non-ignored pixels whose whole (2r+1)² neighbourhood has the same label, at least r
    pixels from the border (where the image was interpolated from pixels cropped away)."""
    m = mask.float()[None, None]
    k = 2 * radius + 1
    same = F.max_pool2d(m, k, stride=1) == -F.max_pool2d(-m, k, stride=1)
    return F.pad(same[0, 0], (radius,) * 4, value=False) & (mask != IGNORE)


def colour_mismatch(image: torch.Tensor, mask: torch.Tensor, radius: int = 1) -> tuple[int, int]:
    """(checked pixels, pixels whose colour is not their label's PALETTE colour) away from
    label edges, where interpolation cannot mix colours."""
    keep = interior(mask, radius)
    labels = mask[keep]
    colours = (image * 255).permute(1, 2, 0)[keep]
    wrong = (colours - PALETTE[labels].float()).abs().amax(-1) > 1.0
    return int(keep.sum()), int(wrong.sum())


def test_masks_are_only_nearest_resampled():
    image, mask = block_sample()
    mask[10:20, 10:30] = 7  # a few label values: 0–3, 7 and the ignore border
    allowed = set(mask.unique().tolist()) | {IGNORE}
    seen: set[int] = set()
    torch.manual_seed(0)
    for crop in ((40, 40), None):
        t = train_transforms(crop_size=crop, jitter=0.4, fill=FILL, scale_range=(0.3, 2.5))
        for _ in range(25):
            _, out = t(image, mask)
            assert out.dtype == torch.int64 and type(out) is torch.Tensor
            seen |= set(out.unique().tolist())
    assert seen <= allowed, seen - allowed
    assert {0, 1, 2, 3, 7} <= seen


def test_image_and_mask_stay_aligned():
    # Radius-1 neighbourhoods are tight enough to catch a half-pixel offset: legacy ``NEAREST``
    # mask resampling (floor(i / s), not pixel-centred like bilinear) fails this test.
    image, mask = block_sample(seed=1)
    t = train_transforms(crop_size=(40, 44), fill=FILL)
    torch.manual_seed(0)
    checked_total = 0
    for _ in range(25):
        out_image, out_mask = t(image, mask)
        checked, wrong = colour_mismatch(out_image, out_mask)
        assert wrong == 0, f"{wrong} of {checked} interior pixels have another label's colour"
        checked_total += checked
        # The check has teeth: a flipped image no longer matches its mask.
        if checked > 200:
            assert colour_mismatch(out_image.flip(-1), out_mask)[1] > 0
    assert checked_total > 25 * 200


def test_crop_and_flip_move_image_and_mask_together():
    # Without scaling the exact source coordinates of every output pixel are readable.
    image, mask = coordinate_sample(60, 80)
    t = train_transforms(crop_size=(32, 48), scale_range=None, fill=FILL)
    flipped = set()
    torch.manual_seed(0)
    for _ in range(20):
        out_image, out_mask = t(image, mask)
        assert out_image.shape == (3, 32, 48) and out_mask.shape == (32, 48)
        rows = (out_image[0] * 255).round().long()
        cols = (out_image[1] * 255).round().long()
        assert torch.equal(out_mask, rows * 1000 + cols)  # pixel-exact alignment
        assert IGNORE not in out_mask  # large enough: no padding
        # A contiguous window (rows increase downwards; columns one way or the other).
        assert torch.equal(rows, rows[:, :1].expand_as(rows))
        assert torch.equal(rows[:, 0], rows[0, 0] + torch.arange(32))
        step = int(cols[0, 1] - cols[0, 0])
        assert step in (1, -1)
        assert torch.equal(cols[0], cols[0, 0] + step * torch.arange(48))
        flipped.add(step == -1)
    assert flipped == {True, False}


def test_hflip_flips_both():
    image, mask = coordinate_sample(10, 12)
    t = train_transforms(crop_size=None, scale_range=None, hflip=True, fill=FILL)
    seen = set()
    torch.manual_seed(0)
    for _ in range(16):
        out_image, out_mask = t(image, mask)
        is_flipped = not torch.equal(out_mask, mask.as_subclass(torch.Tensor))
        if is_flipped:
            assert torch.equal(out_mask, mask.flip(-1).as_subclass(torch.Tensor))
            assert_close(out_image, image.flip(-1).float() / 255, rtol=0, atol=1e-7)
        else:
            assert_close(out_image, image.float() / 255, rtol=0, atol=1e-7)
        seen.add(is_flipped)
    assert seen == {True, False}
    no_flip = train_transforms(crop_size=None, scale_range=None, hflip=False, fill=FILL)
    for _ in range(5):
        assert torch.equal(no_flip(image, mask)[1], mask.as_subclass(torch.Tensor))


def test_small_image_is_padded_with_fill_and_ignore():
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8, generator=g)
    mask = torch.randint(0, 3, (20, 30), generator=g)
    t = train_transforms(crop_size=(32, 48), scale_range=None, hflip=False, fill=FILL)
    torch.manual_seed(0)
    for _ in range(5):
        out_image, out_mask = t(tv_tensors.Image(image), tv_tensors.Mask(mask))
        assert out_image.shape == (3, 32, 48) and out_mask.shape == (32, 48)
        padded = out_mask == IGNORE
        assert int(padded.sum()) == 32 * 48 - 20 * 30
        fill = torch.tensor(FILL, dtype=torch.float32) / 255
        assert_close(out_image.permute(1, 2, 0)[padded], fill.expand(int(padded.sum()), 3))
        # The unpadded part is the whole original, unchanged, somewhere inside the crop.
        ys, xs = torch.nonzero(~padded, as_tuple=True)
        top, left = int(ys.min()), int(xs.min())
        assert torch.equal(out_mask[top : top + 20, left : left + 30], mask)
        assert_close(out_image[:, top : top + 20, left : left + 30], image.float() / 255)


@pytest.mark.parametrize("size", [(20, 24), (90, 120)])
def test_crop_size_is_honoured_at_any_scale(size):
    image, mask = coordinate_sample(*size)
    t = train_transforms(crop_size=(33, 47), fill=FILL)
    torch.manual_seed(0)
    for _ in range(10):
        out_image, out_mask = t(image, mask)
        assert out_image.shape == (3, 33, 47) and out_mask.shape == (33, 47)
        assert out_image.dtype == torch.float32 and type(out_image) is torch.Tensor
        assert float(out_image.min()) >= 0.0 and float(out_image.max()) <= 1.0


def test_random_scale_without_crop():
    image, mask = block_sample(40, 56)
    t = train_transforms(crop_size=None, scale_range=(0.5, 2.0), hflip=False, fill=FILL)
    torch.manual_seed(0)
    sizes = set()
    for _ in range(10):
        out_image, out_mask = t(image, mask)
        assert out_image.shape[-2:] == out_mask.shape
        h, w = out_mask.shape
        assert 20 <= h <= 80 and 28 <= w <= 112
        assert abs(w / h - 56 / 40) < 0.1  # one factor for both axes
        sizes.add((h, w))
    assert len(sizes) > 5


def test_deterministic_under_manual_seed():
    image, mask = block_sample(seed=2)
    t = train_transforms(crop_size=(32, 32), jitter=0.3, fill=FILL)

    def run(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        torch.manual_seed(seed)
        return [t(image, mask) for _ in range(4)]

    first, again, other = run(3), run(3), run(4)
    for (a_img, a_mask), (b_img, b_mask) in zip(first, again, strict=True):
        assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask)
    assert any(
        not torch.equal(a_img, b_img) for (a_img, _), (b_img, _) in zip(first, other, strict=True)
    )


def test_jitter_changes_the_image_only():
    image, mask = block_sample(seed=3)
    t = train_transforms(crop_size=None, scale_range=None, hflip=False, jitter=0.5, fill=FILL)
    torch.manual_seed(0)
    changed = 0
    for _ in range(5):
        out_image, out_mask = t(image, mask)
        assert torch.equal(out_mask, mask.as_subclass(torch.Tensor))
        changed += (out_image - image.float() / 255).abs().max().item() > 1e-3
    assert changed >= 4
    with pytest.raises(ValueError, match="jitter"):
        train_transforms(crop_size=None, jitter=-0.1, fill=FILL)


def test_eval_transforms_only_convert():
    image, mask = block_sample(seed=4)
    out_image, out_mask = eval_transforms()(image, mask)
    assert type(out_image) is torch.Tensor and type(out_mask) is torch.Tensor
    assert out_image.dtype == torch.float32 and out_mask.dtype == torch.int64
    assert_close(out_image, image.float() / 255, rtol=0, atol=1e-7)
    assert torch.equal(out_mask, mask.as_subclass(torch.Tensor))
    # Plain tensors, ndarrays and uint8 masks are wrapped as Image/Mask.
    hwc = image.permute(1, 2, 0).numpy()
    out2 = eval_transforms()(hwc, mask.numpy().astype(np.uint8))
    assert torch.equal(out2[0], out_image) and torch.equal(out2[1], out_mask)
    with pytest.raises(ValueError, match="same size"):
        eval_transforms()(image, mask[:-1])


def test_float_images_are_accepted_in_training():
    image, mask = block_sample(seed=5)
    t = train_transforms(crop_size=(24, 24), scale_range=None, hflip=False, fill=FILL)
    torch.manual_seed(0)
    a = t(image, mask)
    torch.manual_seed(0)
    b = t(image.float() / 255, mask)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_transforms_are_picklable():
    t = train_transforms(crop_size=(16, 16), jitter=0.2, fill=FILL)
    clone = pickle.loads(pickle.dumps(t))
    image, mask = block_sample()
    torch.manual_seed(0)
    a = t(image, mask)
    torch.manual_seed(0)
    b = clone(image, mask)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_fill_from_preprocess():
    caffe = Preprocess((123.68, 116.779, 103.939), input_range=255)
    assert fill_from_preprocess(caffe) == (124, 117, 104)
    bgr = Preprocess((103.939, 116.779, 123.68), (58.4, 57.1, 57.4), input_range=255,
                     channel_order="BGR")  # fmt: skip
    assert fill_from_preprocess(bgr) == (124, 117, 104)
    imagenet = Preprocess(IMAGENET_TORCHVISION.mean, IMAGENET_TORCHVISION.std)
    assert fill_from_preprocess(imagenet) == (124, 116, 104)  # 123.675, 116.28, 103.53
    assert fill_from_preprocess(imagenet.to_dict()) == (124, 116, 104)
    # The fill colour normalises to ≈ 0 (within half a grey level).
    for pre in (caffe, bgr, imagenet):
        pixel = torch.tensor(fill_from_preprocess(pre), dtype=torch.uint8).view(1, 3, 1, 1)
        std = torch.tensor(pre.std).view(1, 3, 1, 1)
        assert (pre(pixel) * std).abs().max() <= 0.5 * pre.input_range / 255 + 1e-6


def test_pad_collate_mixed_sizes():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(3, 4, 5, generator=g), torch.randint(0, 3, (4, 5), generator=g))
    b = (torch.rand(3, 6, 3, generator=g), torch.randint(0, 3, (6, 3), generator=g))
    images, masks = pad_collate([a, b], fill=(0.25, 0.5, 0.75))
    assert images.shape == (2, 3, 6, 5) and masks.shape == (2, 6, 5)
    assert images.dtype == torch.float32 and masks.dtype == torch.int64
    assert torch.equal(images[0, :, :4, :5], a[0]) and torch.equal(masks[0, :4, :5], a[1])
    assert torch.equal(images[1, :, :6, :3], b[0]) and torch.equal(masks[1, :6, :3], b[1])
    # Bottom/right padding: fill for images, ignore for masks.
    assert (masks[0, 4:] == IGNORE).all() and (masks[1, :, 3:] == IGNORE).all()
    assert int((masks == IGNORE).sum()) == 2 * 30 - 20 - 18
    fill = torch.tensor([0.25, 0.5, 0.75]).view(3, 1, 1)
    assert torch.equal(images[0, :, 4:], fill.expand(3, 2, 5))
    assert torch.equal(images[1, :, :, 3:], fill.expand(3, 6, 2))

    custom = PadCollate(ignore_index=7)
    assert (custom([a, b])[1][0, 4:] == 7).all()
    # uint8 images and tv_tensors are accepted; equal sizes just stack.
    u8 = (tv_tensors.Image(torch.full((3, 4, 5), 255, dtype=torch.uint8)), tv_tensors.Mask(a[1]))
    images, masks = pad_collate([u8, a])
    assert type(images) is torch.Tensor and type(masks) is torch.Tensor
    assert torch.equal(images[0], torch.ones(3, 4, 5)) and torch.equal(masks[1], a[1])
    with pytest.raises(ValueError, match="does not match"):
        pad_collate([(torch.rand(3, 4, 4), torch.zeros(4, 5, dtype=torch.long))])


def test_pad_collate_is_picklable_for_workers():
    fill = (0.5, 0.5, 0.5)
    for collate in (PadCollate(ignore_index=7, fill=fill),
                    functools.partial(pad_collate, ignore_index=7, fill=fill)):  # fmt: skip
        clone = pickle.loads(pickle.dumps(collate))
        batch = [(torch.rand(3, 2, 2), torch.zeros(2, 2, dtype=torch.long)),
                 (torch.rand(3, 3, 1), torch.ones(3, 1, dtype=torch.long))]  # fmt: skip
        for x, y in zip(collate(batch), clone(batch), strict=True):
            assert torch.equal(x, y)
    loader = torch.utils.data.DataLoader(
        [(torch.rand(3, 2 + i, 3), torch.zeros(2 + i, 3, dtype=torch.long)) for i in range(4)],
        batch_size=2,
        collate_fn=PadCollate(),
    )
    shapes = [tuple(images.shape) for images, _ in loader]
    assert shapes == [(2, 3, 3, 3), (2, 3, 5, 3)]
