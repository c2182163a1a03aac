"""SegmentationLoss (sum/mean, ignore, class weights, weight maps, loss sampling) and
median-frequency weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from fcnseg.losses import SegmentationLoss, median_frequency_weights

IGNORE = 255


def batch(n: int = 2, c: int = 5, h: int = 7, w: int = 9, *, seed: int = 0, ignore: bool = True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g)
    target = torch.randint(0, c, (n, h, w), generator=g)
    if ignore:
        target[:, 0, :] = IGNORE  # a void border row
        target[0, :, :2] = IGNORE
    return logits, target


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_equals_cross_entropy(reduction):
    logits, target = batch()
    loss = SegmentationLoss(reduction=reduction)(logits, target)
    expected = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction=reduction)
    assert loss.dim() == 0
    assert_close(loss, expected)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_class_weights_equal_cross_entropy(reduction):
    logits, target = batch(seed=1)
    weights = torch.tensor([0.5, 2.0, 1.0, 0.0, 3.0])
    loss = SegmentationLoss(reduction=reduction, class_weights=weights)(logits, target)
    expected = F.cross_entropy(
        logits, target, weight=weights, ignore_index=IGNORE, reduction=reduction
    )
    assert_close(loss, expected)


def test_sum_is_mean_times_counted_pixels():
    logits, target = batch(seed=2)
    counted = int((target != IGNORE).sum())
    assert 0 < counted < target.numel()
    total = SegmentationLoss(reduction="sum")(logits, target)
    mean = SegmentationLoss(reduction="mean")(logits, target)
    assert_close(total, mean * counted)


def test_ignored_pixels_contribute_nothing():
    logits, target = batch(seed=3)
    logits.requires_grad_(True)
    criterion = SegmentationLoss(reduction="sum")
    loss = criterion(logits, target)
    loss.backward()
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    assert torch.count_nonzero(logits.grad[ignored]) == 0
    assert torch.count_nonzero(logits.grad[~ignored]) > 0
    # Changing logits at ignored pixels changes nothing.
    other = logits.detach().clone()
    other[ignored] = 100.0
    assert_close(criterion(other, target), loss.detach())
    # A different ignore label.
    custom = target.clone()
    custom[target == IGNORE] = 4
    expected = F.cross_entropy(logits.detach(), custom, ignore_index=4)
    assert_close(SegmentationLoss(ignore_index=4)(logits.detach(), custom), expected)


def test_all_ignored_is_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), IGNORE)
    for reduction in ("mean", "sum"):
        loss = SegmentationLoss(reduction=reduction)(logits, target)
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(grad).all() and torch.count_nonzero(grad) == 0


def test_weight_map():
    logits, target = batch(seed=4)
    sum_loss, mean_loss = SegmentationLoss(reduction="sum"), SegmentationLoss(reduction="mean")
    ones = torch.ones(target.shape)
    assert_close(sum_loss(logits, target, ones), sum_loss(logits, target))
    assert_close(mean_loss(logits, target, ones), mean_loss(logits, target))

    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
    weight_map = torch.rand(target.shape, generator=torch.Generator().manual_seed(5)) + 0.5
    counted = (target != IGNORE).float()
    assert_close(sum_loss(logits, target, weight_map), (per_pixel * weight_map).sum())
    # "mean" is the weighted mean Σ w_i l_i / Σ w_i over counted pixels.
    expected = (per_pixel * weight_map).sum() / (weight_map * counted).sum()
    assert_close(mean_loss(logits, target, weight_map), expected)

    with pytest.raises(ValueError, match="weight_map"):
        sum_loss(logits, target, torch.ones(1, 7, 9))


def test_weight_map_with_class_weights():
    logits, target = batch(seed=6)
    class_weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    weight_map = torch.rand(target.shape, generator=torch.Generator().manual_seed(7))
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
    w = class_weights[target.clamp(max=4)] * weight_map * (target != IGNORE)
    loss = SegmentationLoss(class_weights=class_weights)(logits, target, weight_map)
    assert_close(loss, (w * per_pixel).sum() / w.sum())


def test_sampling_keeps_about_p_of_pixels_in_training_only():
    p = 0.25
    h = w = 200
    # Zero logits: every counted pixel's loss is exactly log C, so sum / log C = kept pixels.
    logits = torch.zeros(1, 4, h, w)
    target = torch.randint(0, 4, (1, h, w), generator=torch.Generator().manual_seed(0))
    target[:, :50] = IGNORE  # a quarter ignored: 30 000 valid pixels
    valid = int((target != IGNORE).sum())
    criterion = SegmentationLoss(reduction="sum", sample_prob=p)
    assert criterion.training

    torch.manual_seed(0)
    kept = [criterion(logits, target).item() / math.log(4) for _ in range(3)]
    # Binomial(30 000, 0.25): mean 7 500, sd 75; ±4 % is ±4 sd.
    for k in kept:
        assert abs(k - p * valid) < 0.04 * p * valid, (k, p * valid)
    assert len({round(k) for k in kept}) > 1  # a fresh draw each call

    torch.manual_seed(1)
    first = criterion(logits, target)
    torch.manual_seed(1)
    assert_close(criterion(logits, target), first)  # seeded: reproducible

    criterion.eval()
    assert round(criterion(logits, target).item() / math.log(4)) == valid
    assert_close(criterion(logits, target), SegmentationLoss(reduction="sum")(logits, target))


def test_sampled_mean_normalises_by_kept_pixels():
    # Half the pixels cost log 2 (uniform over 2 classes), half almost 0 (confident and right).
    h = w = 100
    logits = torch.zeros(1, 2, h, w)
    target = torch.zeros(1, h, w, dtype=torch.long)
    logits[0, 0, :, : w // 2] = 30.0
    full = SegmentationLoss(reduction="mean")(logits, target)
    assert_close(full, torch.tensor(math.log(2) / 2), atol=1e-6, rtol=0)

    torch.manual_seed(0)
    sampled = SegmentationLoss(reduction="mean", sample_prob=0.1)(logits, target)
    # Normalising by all pixels instead would give ≈ 0.1 · log 2 / 2.
    assert abs(sampled.item() - full.item()) < 0.15 * full.item()


def test_sampling_gradients_only_at_kept_pixels():
    logits, target = batch(n=1, c=3, h=40, w=40, seed=8, ignore=False)
    logits.requires_grad_(True)
    torch.manual_seed(3)
    SegmentationLoss(reduction="sum", sample_prob=0.5)(logits, target).backward()
    touched = (logits.grad != 0).any(1).float().mean().item()
    assert 0.4 < touched < 0.6


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="reduction"):
        SegmentationLoss(reduction="none")
    for p in (0.0, 1.5):
        with pytest.raises(ValueError, match="sample_prob"):
            SegmentationLoss(sample_prob=p)
    logits, target = batch()
    with pytest.raises(ValueError, match="class weights"):
        SegmentationLoss(class_weights=torch.ones(3))(logits, target)
    with pytest.raises(ValueError, match="target"):
        SegmentationLoss()(logits, target[:, :3])


def test_class_weights_follow_the_module():
    criterion = SegmentationLoss(class_weights=torch.tensor([1.0, 2.0]))
    assert "class_weights" in dict(criterion.named_buffers())
    criterion.to(torch.float64)
    assert criterion.class_weights is not None and criterion.class_weights.dtype == torch.float64


# --- median-frequency balancing ---------------------------------------------------------


def test_median_frequency_hand_computed():
    masks = [
        torch.tensor([[0, 0], [0, 1]]),  # 4 labelled pixels
        torch.tensor([[0, 0, 1], [1, 2, IGNORE]]),  # 5 labelled pixels
        torch.tensor([[2, 2], [2, IGNORE]]),  # 3 labelled pixels
    ]
    weights = median_frequency_weights(masks, num_classes=4)
    # freq(c) = pixels of c / labelled pixels of the images containing c:
    #   class 0: (3 + 2) / (4 + 5) = 5/9;  class 1: (1 + 2) / (4 + 5) = 1/3;
    #   class 2: (1 + 3) / (5 + 3) = 1/2;  class 3: never present.
    # median(5/9, 1/3, 1/2) = 1/2 → w = (1/2)/(5/9), (1/2)/(1/3), (1/2)/(1/2), 0
    assert weights.dtype == torch.float32
    assert_close(weights, torch.tensor([9 / 10, 3 / 2, 1.0, 0.0]))


def test_median_frequency_even_count_and_batches():
    # One image, classes 0 and 1: freq 1/4 and 3/4, median (1/4 + 3/4)/2 = 1/2.
    weights = median_frequency_weights([torch.tensor([[0, 1], [1, 1]])], num_classes=2)
    assert_close(weights, torch.tensor([2.0, 2 / 3]))

    masks = [torch.tensor([[0, 0], [0, 1]]), torch.tensor([[2, 2], [2, 0]])]
    as_batch = median_frequency_weights([torch.stack(masks)], num_classes=3)
    assert_close(as_batch, median_frequency_weights(masks, num_classes=3))
    assert_close(median_frequency_weights([], num_classes=3), torch.zeros(3))
    with pytest.raises(ValueError, match="outside"):
        median_frequency_weights([torch.tensor([[0, 5]])], num_classes=3)


def test_class_weightings_from_the_config():
    """``train.class_weights``: median frequency, its square root, or unknown → one line."""
    from fcnseg.config import Config
    from fcnseg.config.validate import validate
    from fcnseg.engine.build import class_weights

    masks = [
        torch.tensor([[0, 0], [0, 1]]),
        torch.tensor([[0, 0, 1], [1, 2, IGNORE]]),
        torch.tensor([[2, 2], [2, IGNORE]]),
    ]

    class Masks:
        ignore_index = IGNORE

        def __len__(self) -> int:
            return len(masks)

        def load(self, i: int) -> tuple[None, torch.Tensor]:
            return None, masks[i]

    cfg = Config()
    full = torch.tensor([9 / 10, 3 / 2, 1.0, 0.0])  # as test_median_frequency_hand_computed
    cfg.train.class_weights = "median_frequency"
    assert_close(class_weights(cfg, Masks(), None, 4), full)
    cfg.train.class_weights = "sqrt_median_frequency"
    assert_close(class_weights(cfg, Masks(), None, 4), full.sqrt())
    cfg.train.class_weights = "median_freq"
    with pytest.raises(ValueError, match="did you mean 'median_frequency'"):
        validate(cfg, "cfg")
