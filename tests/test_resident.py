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


def test_resident_training_resumes_bit_identically(tmp_path) -> None:
    """``data.resident``: batches are a pure function of (seed, position), so 2 iterations, a
    stop, and 2 resumed ones end with exactly the weights of 4 uninterrupted iterations; and the
    resident batches differ from batch to batch (the augmentation is not frozen)."""
    from fcnseg import checkpoint as ckpt
    from fcnseg.config import load_config
    from fcnseg.engine.trainer import Trainer

    tiny = [
        "data.options={num_images: 8, size: [40, 48]}",
        "data.resident=true",
        "data.resize=[40, 48]",
        "data.crop_size=[32, 40]",
        "data.scale_range=[0.75, 1.25]",
        "data.batch_size=2",
        "data.val_batch_size=4",
        "train.iterations=4",
        "train.eval_every=4",
        "train.checkpoint_every=2",
    ]
    cfg = load_config("fcn8s_resnet18_synthetic", tiny)
    full = Trainer(cfg, tmp_path / "full", progress=False)
    first, second = next(full.batches(0)), next(full.batches(2))
    assert first[0].shape == (2, 3, 32, 40) and not torch.equal(first[0], second[0])
    full.train()
    Trainer(cfg, tmp_path / "split", progress=False).train(stop_at=2)
    Trainer(cfg, tmp_path / "split", resume=True, progress=False).train()
    a = ckpt.load_checkpoint(tmp_path / "full" / "checkpoints" / "last.safetensors").state_dict
    b = ckpt.load_checkpoint(tmp_path / "split" / "checkpoints" / "last.safetensors").state_dict
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resident_refuses_per_sample_augmentation() -> None:
    import pytest

    from fcnseg.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"data\.elastic_sigma is a per-sample augmentation"):
        load_config("fcn8s_resnet18_synthetic", ["data.resident=true", "data.elastic_sigma=5"])


def test_resized_masks_match_the_resident_path() -> None:
    """One resize rule for labels: the per-sample path (``Resized``, used for evaluation and
    non-resident training) gives the masks the device-resident path decodes (nearest-exact)."""
    from fcnseg.engine.loaders import Resized

    dataset = build_dataset("synthetic", None, "val", num_images=3, size=(48, 64))
    resident = ResidentData.from_dataset(dataset, size=(30, 38), progress=False)
    dataset.transforms = Resized([30, 38])
    for i in range(len(dataset)):
        _, mask = dataset[i]
        assert torch.equal(torch.as_tensor(mask).as_subclass(torch.Tensor), resident.masks[i])
