"""The U-Net elastic deformation: coarse-grid displacements in pixels, one warp for image and
mask, masks only nearest-sampled, identity at sigma 0, seeded by torch's RNG."""

from __future__ import annotations

import pickle

import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from fcnseg.data.transforms import ElasticDeform, elastic_displacement, train_transforms

IGNORE = 255
STEP = 60  # image grey level per label: labels 0..3 → 0, 60, 120, 180
FILLS = {tv_tensors.Image: (250, 250, 250), tv_tensors.Mask: IGNORE}


def blocks(h: int = 64, w: int = 80, block: int = 8, seed: int = 0):
    """Labels 0–3 in block×block squares; the image's grey level is ``STEP × label``."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (h // block, w // block), generator=g)
    labels = labels.repeat_interleave(block, 0).repeat_interleave(block, 1)
    image = (labels * STEP).to(torch.uint8).expand(3, -1, -1).clone()
    return tv_tensors.Image(image), tv_tensors.Mask(labels)


def near_label_edge(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Pixels with another label, or the image border, within ``radius`` (Chebyshev): where
    bicubic sampling may blend labels or the fill outside the image."""
    m = F.pad(mask.float()[None, None], (radius,) * 4, value=-1.0)
    k = 2 * radius + 1
    return (F.max_pool2d(m, k, stride=1) != -F.max_pool2d(-m, k, stride=1))[0, 0]


def test_sigma_zero_is_the_identity() -> None:
    image, mask = blocks()
    t = ElasticDeform(sigma=0.0, fill=FILLS)
    out_image, out_mask = t(image, mask)
    assert torch.equal(out_image, image) and torch.equal(out_mask, mask)
    as_float = tv_tensors.Image(image.float() / 255)
    assert_close(t(as_float), as_float, rtol=0, atol=5e-4)  # float32 grid coordinates


def test_displacements_are_in_pixels() -> None:
    """A constant coarse field (x +3, y −2 px) shifts by exactly that: out(p) = in(p + d)."""
    h, w = 20, 30
    coords = tv_tensors.Mask(torch.arange(h * w).view(h, w))
    field = elastic_displacement(torch.tensor([3.0, -2.0]).view(2, 1, 1).expand(2, 3, 3), (h, w))
    out = TF.elastic(coords, field, fill=-1)
    assert torch.equal(out[2:, : w - 3], coords[:-2, 3:])
    assert torch.all(out[:2] == -1) and torch.all(out[:, w - 3 :] == -1)
    # Grid points sit on the corner (and, odd sizes, centre) pixels: there the field is the
    # coarse value itself.
    coarse = torch.randn(2, 3, 3) * 10
    dense = elastic_displacement(coarse, (21, 31))[0] * torch.tensor([31 / 2, 21 / 2])
    for y, x, i, j in ((0, 0, 0, 0), (20, 30, 2, 2), (10, 15, 1, 1), (0, 30, 0, 2)):
        assert_close(dense[y, x], coarse[:, i, j], rtol=1e-5, atol=1e-4)


def test_masks_keep_label_values() -> None:
    image, mask = blocks()
    mask = tv_tensors.Mask(mask * 7 + 3)  # labels 3, 10, 17, 24
    allowed = set(mask.unique().tolist()) | {IGNORE}
    t = ElasticDeform(sigma=10.0, fill=FILLS)
    torch.manual_seed(0)
    seen: set[int] = set()
    for _ in range(20):
        _, out = t(image, mask)
        assert out.dtype == torch.int64
        seen |= set(out.unique().tolist())
    assert seen <= allowed, seen - allowed
    assert {3, 10, 17, 24} <= seen


def test_image_and_mask_stay_aligned() -> None:
    """Deform an image whose grey level encodes the label: the nearest-sampled mask equals the
    bicubic image's level everywhere except next to label edges, where bicubic blends."""
    image, mask = blocks(block=16, seed=1)
    t = ElasticDeform(sigma=10.0, fill=FILLS)
    torch.manual_seed(0)
    for _ in range(10):
        out_image, out_mask = t(image, mask)
        assert not torch.equal(out_mask, mask)  # a real deformation
        level = (out_image[0].float() / STEP).round().long()
        check = (out_mask != IGNORE) & ~near_label_edge(out_mask, 2)
        assert int(check.sum()) > 0.3 * check.numel()
        assert torch.equal(level[check], out_mask[check])
        # The check has teeth: the mask shifted by one block no longer matches.
        assert not torch.equal(level[check], out_mask.roll(16, 1)[check])


def test_uint8_images_do_not_wrap_around() -> None:
    """Bicubic overshoot at hard edges is clamped (a plain uint8 cast would wrap 256 → 0)."""
    g = torch.Generator().manual_seed(0)
    binary = (torch.rand(3, 32, 32, generator=g) > 0.5).to(torch.uint8) * 255
    t = ElasticDeform(sigma=6.0)
    torch.manual_seed(3)
    out_u8 = t(tv_tensors.Image(binary))
    torch.manual_seed(3)
    out_f = t(tv_tensors.Image(binary.float() / 255))
    assert out_f.min() >= 0 and out_f.max() <= 1
    assert (out_u8.float() - out_f * 255).abs().max() <= 0.51


def test_seeded_by_torch_rng_and_picklable() -> None:
    image, mask = blocks()
    t = pickle.loads(pickle.dumps(ElasticDeform(sigma=10.0, fill=FILLS)))
    torch.manual_seed(5)
    a = t(image, mask)
    torch.manual_seed(5)
    b = t(image, mask)
    c = t(image, mask)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    assert not torch.equal(b[1], c[1])
    never = ElasticDeform(sigma=10.0, p=0.0)
    assert torch.equal(never(image, mask)[1], mask)


def test_in_the_training_pipeline() -> None:
    image, mask = blocks(seed=2)
    t = train_transforms(crop_size=(48, 48), fill=(128,) * 3, elastic_sigma=10.0)
    assert any(isinstance(op, ElasticDeform) for op in t.pipeline.transforms)
    assert not any(
        isinstance(op, ElasticDeform)
        for op in train_transforms(crop_size=None, fill=(128,) * 3).pipeline.transforms
    )
    torch.manual_seed(0)
    for _ in range(5):
        out_image, out_mask = t(image, mask)
        assert out_image.shape == (3, 48, 48) and out_image.dtype == torch.float32
        assert set(out_mask.unique().tolist()) <= {0, 1, 2, 3, IGNORE}
    assert isinstance(v2.Compose([ElasticDeform()]), v2.Compose)
