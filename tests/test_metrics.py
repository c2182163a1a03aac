"""ConfusionMatrix: the paper's four metrics against hand-computed examples."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from fcnseg.metrics import ConfusionMatrix

IGNORE = 255


def pixels_from_matrix(n: list[list[int]], *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, target) as 1×1×P tensors whose confusion matrix is ``n`` (rows = ground truth)."""
    target, pred = [], []
    for i, row in enumerate(n):
        for j, count in enumerate(row):
            target += [i] * count
            pred += [j] * count
    order = torch.randperm(len(target), generator=torch.Generator().manual_seed(seed))
    return (
        torch.tensor(pred)[order].view(1, 1, -1),
        torch.tensor(target)[order].view(1, 1, -1),
    )


def close(value: float, expected: Fraction | float) -> bool:
    return math.isclose(value, float(expected), rel_tol=0, abs_tol=1e-12)


# Three classes, every one present:
#   rows = ground truth, cols = prediction; t = (4, 6, 6), column sums (5, 6, 5), 16 pixels.
BASIC = [
    [3, 1, 0],
    [2, 4, 0],
    [0, 1, 5],
]


def test_hand_computed_three_classes():
    cm = ConfusionMatrix(3)
    pred, target = pixels_from_matrix(BASIC)
    cm.update(pred, target)
    assert cm.matrix.dtype == torch.int64
    assert cm.matrix.tolist() == BASIC
    m = cm.compute()
    # pixel acc = (3 + 4 + 5) / 16
    assert close(m["pixel_acc"], Fraction(12, 16))
    # mean acc = (3/4 + 4/6 + 5/6) / 3 = 27/36
    assert close(m["mean_acc"], (Fraction(3, 4) + Fraction(4, 6) + Fraction(5, 6)) / 3)
    assert close(m["mean_acc"], Fraction(3, 4))
    # IU_i = n_ii / (t_i + Σ_j n_ji − n_ii): 3/(4+5−3), 4/(6+6−4), 5/(6+5−5)
    ius = [Fraction(1, 2), Fraction(1, 2), Fraction(5, 6)]
    assert all(close(v, e) for v, e in zip(m["per_class_iu"], ius, strict=True))
    assert close(m["mean_iu"], Fraction(11, 18))
    # fw IU = (4·1/2 + 6·1/2 + 6·5/6) / 16 = 10/16
    assert close(m["fw_iu"], Fraction(5, 8))
    accs = [Fraction(3, 4), Fraction(2, 3), Fraction(5, 6)]
    assert all(close(v, e) for v, e in zip(m["per_class_acc"], accs, strict=True))
    assert m["present"] == [True, True, True]


# Four classes: class 2 only ever predicted (t_2 = 0), class 3 in neither.
#   t = (3, 4, 0, 0), column sums (2, 3, 2, 0), 7 pixels.
PARTIAL = [
    [2, 0, 1, 0],
    [0, 3, 1, 0],
    [0, 0, 0, 0],
    [0, 0, 0, 0],
]


def test_absent_and_prediction_only_classes():
    cm = ConfusionMatrix(4)
    cm.update(*pixels_from_matrix(PARTIAL))
    m = cm.compute(class_names=["a", "b", "c", "d"])
    assert close(m["pixel_acc"], Fraction(5, 7))
    # mean acc over classes with t_i > 0 only: (2/3 + 3/4) / 2
    assert close(m["mean_acc"], Fraction(17, 24))
    # IU: 2/(3+2−2), 3/(4+3−3), 0/(0+2−0) = 0 counted; class d excluded: (2/3 + 3/4 + 0) / 3
    assert close(m["mean_iu"], Fraction(17, 36))
    assert close(m["per_class_iu"]["c"], 0)
    assert math.isnan(m["per_class_iu"]["d"])
    assert math.isnan(m["per_class_acc"]["c"]) and math.isnan(m["per_class_acc"]["d"])
    # fw IU = (3·2/3 + 4·3/4 + 0·0) / 7
    assert close(m["fw_iu"], Fraction(5, 7))
    assert m["present"] == {"a": True, "b": True, "c": True, "d": False}


def test_empty_matrix_gives_nan():
    m = ConfusionMatrix(3).compute()
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert math.isnan(m[key])
    assert m["present"] == [False, False, False]


def test_whole_set_is_not_the_mean_of_batches():
    # Batch A: 4 pixels of class 0, all right.  Batch B: GT (0, 1, 1, 1), everything predicted 1.
    target_a, pred_a = (
        torch.zeros(1, 2, 2, dtype=torch.long),
        torch.zeros(1, 2, 2, dtype=torch.long),
    )
    target_b = torch.tensor([[[0, 1], [1, 1]]])
    pred_b = torch.ones(1, 2, 2, dtype=torch.long)

    per_batch = []
    for pred, target in ((pred_a, target_a), (pred_b, target_b)):
        cm = ConfusionMatrix(2)
        cm.update(pred, target)
        per_batch.append(cm.compute()["mean_iu"])
    # A: IU_0 = 1, class 1 absent → 1.  B: IU_0 = 0/(1+0−0) = 0, IU_1 = 3/(3+4−3) → 3/8.
    assert close(per_batch[0], 1) and close(per_batch[1], Fraction(3, 8))

    accumulated = ConfusionMatrix(2)
    accumulated.update(pred_a, target_a)
    accumulated.update(pred_b, target_b)
    # Whole set: n = [[4, 1], [0, 3]]: IU_0 = 4/(5+4−4), IU_1 = 3/(3+4−3) → (4/5 + 3/4) / 2
    assert accumulated.matrix.tolist() == [[4, 1], [0, 3]]
    whole = accumulated.compute()["mean_iu"]
    assert close(whole, Fraction(31, 40))
    assert not close(sum(per_batch) / 2, whole)  # 11/16 ≠ 31/40

    joint = ConfusionMatrix(2)
    joint.update(torch.cat([pred_a, pred_b]), torch.cat([target_a, target_b]))
    assert torch.equal(joint.matrix, accumulated.matrix)
    assert joint.compute() == accumulated.compute()


def test_ignore_pixels_are_dropped():
    pred, target = pixels_from_matrix(BASIC)
    reference = ConfusionMatrix(3)
    reference.update(pred, target)

    g = torch.Generator().manual_seed(1)
    extra_pred = torch.randint(0, 3, (1, 1, 50), generator=g)
    cm = ConfusionMatrix(3)
    cm.update(
        torch.cat([pred, extra_pred], -1),
        torch.cat([target, torch.full((1, 1, 50), IGNORE)], -1),
    )
    assert torch.equal(cm.matrix, reference.matrix)
    assert cm.matrix.sum() == 16

    custom = ConfusionMatrix(3, ignore_index=7)
    custom.update(
        torch.cat([pred, extra_pred], -1), torch.cat([target, torch.full_like(extra_pred, 7)], -1)
    )
    assert torch.equal(custom.matrix, reference.matrix)


def test_logits_are_accepted():
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    target[0, 0] = IGNORE
    logits = torch.randn(2, 4, 5, 6, generator=g)
    from_logits, from_labels = ConfusionMatrix(4), ConfusionMatrix(4)
    from_logits.update(logits, target)
    from_labels.update(logits.argmax(1), target)
    assert torch.equal(from_logits.matrix, from_labels.matrix)
    assert from_logits.matrix.sum() == 2 * 5 * 6 - 6
    with pytest.raises(ValueError, match="channels"):
        ConfusionMatrix(3).update(logits, target)


def test_merge_equals_joint_update():
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 5, (4, 7, 9), generator=g)
    target[target == 4] = IGNORE
    pred = torch.randint(0, 5, (4, 7, 9), generator=g)
    joint = ConfusionMatrix(5)
    joint.update(pred, target)
    first, second = ConfusionMatrix(5), ConfusionMatrix(5)
    first.update(pred[:1], target[:1])
    second.update(pred[1:], target[1:])
    assert first.merge(second) is first
    assert torch.equal(first.matrix, joint.matrix)
    with pytest.raises(ValueError, match="merge"):
        first.merge(ConfusionMatrix(4))


def test_reset_and_errors():
    cm = ConfusionMatrix(3)
    cm.update(*pixels_from_matrix(BASIC))
    cm.reset()
    assert cm.matrix.sum() == 0
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        cm.update(torch.tensor([[0, 5]]), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="class names"):
        cm.compute(class_names=["a"])
    assert cm.matrix.sum() == 0  # failed updates add nothing
    cm.update(torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 4, dtype=torch.long))
    cm.update(torch.ones(1, 4, dtype=torch.long), torch.full((1, 4), IGNORE))
    assert cm.matrix.sum() == 0


def test_all_reduce_is_noop_without_process_group():
    cm = ConfusionMatrix(3)
    cm.update(*pixels_from_matrix(BASIC))
    assert not dist.is_initialized()
    assert cm.all_reduce() is cm
    assert cm.matrix.tolist() == BASIC


# Rank 1's counts: every cell differs from BASIC's, so neither rank's own matrix, nor an
# element-wise max or min, equals the sum.
OTHER = [
    [1, 4, 2],
    [0, 2, 3],
    [5, 0, 1],
]


def _all_reduce_rank(rank: int, store: str, out: str) -> None:
    """One of two gloo processes: count its own pixels, all-reduce, write what it holds."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        cm = ConfusionMatrix(3)
        cm.update(*pixels_from_matrix([BASIC, OTHER][rank], seed=rank))
        before = cm.matrix.tolist()
        assert cm.all_reduce() is cm
        Path(out, f"rank{rank}.json").write_text(
            json.dumps({"before": before, "after": cm.matrix.tolist()})
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_all_reduce_sums_in_a_process_group(tmp_path):
    """Two gloo ranks count different pixels; after all_reduce each holds the sum."""
    # fork (well under a second) where there is one; spawn re-imports torch in each rank.
    fork = "fork" in torch.multiprocessing.get_all_start_methods()
    torch.multiprocessing.start_processes(
        _all_reduce_rank,
        args=(str(tmp_path / "store"), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="fork" if fork else "spawn",
    )
    total = [
        [a + b for a, b in zip(r0, r1, strict=True)] for r0, r1 in zip(BASIC, OTHER, strict=True)
    ]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["before"] for r in ranks] == [BASIC, OTHER]
    assert [r["after"] for r in ranks] == [total, total]


def test_reports_name_classes_absent_from_the_ground_truth() -> None:
    """One class of two in the ground truth, predicted perfectly: mean IU 1.0, and every report
    line says the other class was not measured (the 0/255-as-ignore failure looked like this)."""
    from fcnseg.engine.evaluate import format_metrics
    from fcnseg.metrics import absent_note

    m = ConfusionMatrix(2)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    m.update(labels, labels)
    metrics = m.compute(["background", "horse"])
    assert metrics["mean_iu"] == 1.0
    assert metrics["in_ground_truth"] == {"background": True, "horse": False}
    note = absent_note(metrics)
    assert "horse absent from the ground truth" in note
    assert note in format_metrics(metrics).splitlines()[0]
    both = torch.tensor([[[0, 1], [1, 0]]])
    m2 = ConfusionMatrix(2)
    m2.update(both, both)
    assert absent_note(m2.compute(["background", "horse"])) == ""  # control
