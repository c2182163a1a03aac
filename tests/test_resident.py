"""Device-resident data: batched affine augmentation keeps images and masks aligned."""

from __future__ import annotations

import torch

from fcnseg.data.registry import build_dataset
from fcnseg.data.resident import ResidentData, affine_augment


def _stripes(b: int = 3, h: int = 40, w: int = 56) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of vertical/horizontal bands with labels 0..4; the image encodes the label."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    masks = torch.stack([(xx // 8 + k * (yy // 10)) % 5 for k in range(b)]).to(torch.uint8)
    images = (masks[:, None].repeat(1, 3, 1, 1) * 50).to(torch.uint8)
    return images, masks


def test_identity_without_augmentation() -> None:
    images, masks = _stripes()
    out, m = affine_augment(images, masks, crop=(40, 56))
    torch.testing.assert_close(out, images.float() / 255, atol=1e-5, rtol=0)
    assert torch.equal(m, masks.long())


def test_augmented_masks_stay_label_valued_and_aligned() -> None:
    images, masks = _stripes()
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        out, m = affine_augment(images, masks, crop=(48, 48), scale_range=(0.6, 1.7),
                                hflip=True, generator=gen)  # fmt: skip
        assert out.shape == (3, 3, 48, 48) and m.shape == (3, 48, 48)
        assert set(m.unique().tolist()) <= {0, 1, 2, 3, 4, 255}
        inside = m != 255
        # Where the image is not blended across a label border, it still encodes the label.
        label_from_image = out[:, 0] * 255 / 50
        clean = inside & ((label_from_image - label_from_image.round()).abs() < 1e-3)
        assert clean.float().mean() > 0.5
        assert torch.equal(label_from_image.round().long()[clean], m[clean])
        # Away from the scaled image (>1 px): the fill colour (0) in the image.
        near = torch.nn.functional.max_pool2d(inside[:, None].float(), 3, 1, 1)[:, 0] > 0
        assert (out[:, 0][~near].abs() < 1e-5).all()


def test_flip_is_a_mirror() -> None:
    images, masks = _stripes(b=1)
    gen = torch.Generator().manual_seed(3)
    flipped = []
    while len(flipped) < 1:  # draw until a sample flips (probability ½ each)
        out, m = affine_augment(images, masks, crop=(40, 56), hflip=True, generator=gen)
        if not torch.equal(m, masks.long()):
            flipped.append((out, m))
    out, m = flipped[0]
    assert torch.equal(m, masks.long().flip(-1))
    torch.testing.assert_close(out, images.float().flip(-1) / 255, atol=1e-5, rtol=0)


def test_resident_camvid_subset(shared_dir) -> None:
    dataset = build_dataset("camvid", root=str(shared_dir / "data" / "camvid"), split="val")
    data = ResidentData.from_dataset(dataset, size=(90, 120), limit=3, progress=False)
    assert data.images.shape == (3, 3, 90, 120) and data.images.dtype == torch.uint8
    assert len(data.classes) == 11 and data.nbytes == 3 * 90 * 120 * 4
    images, masks = data.sample(2, crop=(64, 64), scale_range=(0.5, 1.5), hflip=True,
                                generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert images.shape == (2, 3, 64, 64) and masks.dtype == torch.int64
    assert set(masks.unique().tolist()) <= set(range(11)) | {255}
    (x, y), *_ = data.batches(2)
    assert x.shape == (2, 3, 90, 120) and y.shape == (2, 90, 120)
