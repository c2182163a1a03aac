"""Training: exact resume, optimiser recipe, schedules, checkpoints with metadata."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from fcnseg import checkpoint as ckpt
from fcnseg.config import load_config
from fcnseg.engine.build import lr_factor as _lr_lambda
from fcnseg.engine.build import param_groups as _param_groups
from fcnseg.engine.trainer import Trainer
from fcnseg.forward import forward

TINY = [
    "data.options={num_images: 12, size: [48, 64]}",
    "data.batch_size=2",
    "data.val_batch_size=4",
    "data.crop_size=[40, 56]",
    "data.scale_range=[0.75, 1.25]",
    "data.jitter=0.2",
    "train.loss_sample_prob=0.7",
    "train.iterations=6",
    "train.eval_every=3",
    "train.checkpoint_every=2",
    "train.warmup_iters=2",
    "train.iter_size=2",
]


def _cfg(*extra: str):
    return load_config("fcn8s_resnet18_synthetic", [*TINY, *extra])


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(run / "checkpoints" / "last.safetensors").state_dict


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 6-iteration run."""
    run = tmp_path_factory.mktemp("full") / "run"
    Trainer(_cfg(), run, progress=False).train()
    return run


def test_resume_is_bit_identical(tmp_path: Path, full_run: Path) -> None:
    """A run interrupted after 3 of 6 iterations (with workers) and resumed ends with weights
    bit-identical to an uninterrupted run: model, optimiser, scheduler, every RNG (loss
    sampling) and the data order / per-sample augmentation are restored."""
    first = Trainer(_cfg("data.num_workers=2"), tmp_path / "cut", progress=False)
    first.train(stop_at=3)
    assert first.iteration == 3
    second = Trainer(_cfg(), tmp_path / "cut", resume=True, progress=False)
    assert second.iteration == 3
    second.train()
    a, b = _weights(full_run), _weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # ...and it did learn something: weights moved from their initialisation.
    init = Trainer(_cfg(), tmp_path / "init", progress=False).net.state_dict()
    assert not torch.equal(init["score_fr.weight"], a["score_fr.weight"])
    log = (tmp_path / "cut" / "log.csv").read_text().splitlines()
    iterations = [int(r.split(",")[0]) for r in log[1:]]
    assert iterations == sorted(iterations) and iterations[-1] == 6


def test_resume_changes_outcome_if_rng_not_restored(tmp_path: Path, full_run: Path) -> None:
    """Negative control: resuming with a different seed for the data stream diverges."""
    Trainer(_cfg(), tmp_path / "cut", progress=False).train(stop_at=3)
    other = Trainer(_cfg(), tmp_path / "cut", resume=True, progress=False)
    other.cfg.train.seed = 1  # behind --resume's back: it refuses a changed seed
    other.train()
    a, b = _weights(full_run), _weights(tmp_path / "cut")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_carries_everything_needed(tmp_path: Path) -> None:
    """The best checkpoint alone rebuilds the model (classes, palette, normalisation, config,
    metrics) and reproduces the outputs the network had when it was best, not its last ones.

    Evaluated after each of 3 iterations; the val mean IU is scripted (0.2, 0.9, 0.5) so the
    best checkpoint is iteration 2's and differs from last (iteration 3)."""
    trainer = Trainer(
        _cfg("train.iterations=3", "train.eval_every=1"), tmp_path / "run", progress=False
    )
    x = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    outputs: dict[int, torch.Tensor] = {}
    scripted = {1: 0.2, 2: 0.9, 3: 0.5}
    real_eval = trainer.run_eval

    def run_eval(*args, **kwargs):  # type: ignore[no-untyped-def]
        metrics, matrix, kept = real_eval(*args, **kwargs)
        net, training = trainer.net, trainer.net.training
        net.eval()
        with torch.no_grad():
            outputs[trainer.iteration] = net(net.preprocess(x))
        net.train(training)
        return {**metrics, "mean_iu": scripted[trainer.iteration]}, matrix, kept

    trainer.run_eval = run_eval  # type: ignore[method-assign]
    trainer.train()
    assert sorted(outputs) == [1, 2, 3]
    best = ckpt.load_checkpoint(tmp_path / "run")
    last = ckpt.load_checkpoint(tmp_path / "run/checkpoints/last.safetensors")
    assert best.path.name == "best.safetensors"
    assert (best.iteration, last.iteration) == (2, 3)
    assert best.metrics["mean_iu"] == 0.9
    assert best.classes[0] == "background" and len(best.palette) == len(best.classes)
    assert best.config["model"]["backbone"] == "resnet18"
    assert any(not torch.equal(best.state_dict[k], last.state_dict[k]) for k in best.state_dict)
    assert not torch.allclose(outputs[2], outputs[3])
    model = best.build_model().eval()
    assert model.preprocess.to_dict() == trainer.net.preprocess.to_dict()
    with torch.no_grad():
        torch.testing.assert_close(model(model.preprocess(x)), outputs[2])
        model.load_state_dict(last.state_dict)
        torch.testing.assert_close(model(model.preprocess(x)), outputs[3])
    for name in ("metrics.json", "confusion.png", "per_class_iou.png", "curves.png", "log.csv"):
        assert (tmp_path / "run" / name).is_file(), name
    assert list((tmp_path / "run" / "tb").iterdir())
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))


def test_bad_checkpoints_are_named(tmp_path: Path) -> None:
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(ckpt.CheckpointError, match=r"bad\.safetensors"):
        ckpt.load_checkpoint(bad)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(1)}, str(plain))
    with pytest.raises(ckpt.CheckpointError, match="not an fcnseg checkpoint"):
        ckpt.load_checkpoint(plain)


def test_optimiser_groups_no_decay_on_biases() -> None:
    """Caffe's recipe: biases get lr × bias_lr_mult and no weight decay; frozen upsamplers are
    not optimised at all."""
    cfg = _cfg("train.bias_lr_mult=2.0", "train.lr=0.1", "train.weight_decay=0.001")
    from fcnseg.models import fcn8s

    model = fcn8s(backbone="resnet18", num_classes=3)
    weights, biases = _param_groups(model, cfg)
    assert weights["lr"] == 0.1 and weights["weight_decay"] == 0.001
    assert biases["lr"] == 0.2 and biases["weight_decay"] == 0.0
    ids = {id(p) for p in weights["params"]} | {id(p) for p in biases["params"]}
    assert id(model.upscore.weight) not in ids
    assert id(model.score_fr.bias) in {id(p) for p in biases["params"]}


def test_schedules() -> None:
    poly = _lr_lambda(_cfg("train.schedule=poly", "train.iterations=100", "train.warmup_iters=0"))
    assert poly(0) == 1.0 and poly(100) == 0.0
    assert poly(50) == pytest.approx(0.5**0.9)
    step = _lr_lambda(
        _cfg(
            "train.schedule=step",
            "train.step_size=10",
            "train.step_gamma=0.5",
            "train.warmup_iters=0",
        )
    )
    assert [step(i) for i in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    warm = _lr_lambda(
        _cfg("train.schedule=fixed", "train.warmup_iters=10", "train.warmup_factor=0.1")
    )
    assert warm(0) == pytest.approx(0.1) and warm(5) == pytest.approx(0.55) and warm(10) == 1.0


def _logged_loss(run: Path, iteration: int) -> float:
    rows = list(csv.DictReader((run / "log.csv").open()))
    return next(float(r["loss"]) for r in rows if int(r["iteration"]) == iteration)


def test_channels_last_and_sum_loss_train(tmp_path: Path) -> None:
    """channels_last memory format and the paper's summed loss with iter_size train end to end
    and compute what the default layout computes, up to float rounding: the same logits, the
    same first-step loss and the same SGD update. The score layers get random weights first:
    their zero init makes every logit 0 whatever the layout does, which would compare nothing."""
    opts = [
        "train.iterations=1",
        "train.loss_sample_prob=1.0",
        "train.loss_reduction=sum",
        "train.optimizer=sgd",
        "train.momentum=0",
        "train.lr=1.0e-3",
    ]
    x = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(1))
    runs = {}
    for name, extra in (("nchw", []), ("cl", ["train.channels_last=true"])):
        trainer = Trainer(_cfg(*opts, *extra), tmp_path / name, progress=False)
        net = trainer.net
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for key, p in net.named_parameters():
                if key.startswith(("score_fr.", "scorers.")):
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
            net.eval()
            logits = forward(net, x, channels_last=trainer.cfg.train.channels_last)
        before = {k: v.detach().clone() for k, v in net.named_parameters()}
        trainer.train()
        after = dict(net.named_parameters())
        delta = {k: (after[k] - before[k]).detach() for k in before if after[k].requires_grad}
        runs[name] = logits, _logged_loss(tmp_path / name, 1), delta, net
    (la, loss_a, da, net_a), (lb, loss_b, db, net_b) = runs["nchw"], runs["cl"]
    # The layouts differ: the channels_last run really ran channels_last.
    conv1 = next(k for k, p in net_b.named_parameters() if p.dim() == 4 and p.shape[-1] > 1)
    assert dict(net_b.named_parameters())[conv1].is_contiguous(memory_format=torch.channels_last)
    assert not dict(net_b.named_parameters())[conv1].is_contiguous()
    assert dict(net_a.named_parameters())[conv1].is_contiguous()
    # Non-trivial logits, equal to float rounding.
    scale = float(la.abs().max())
    assert scale > 0.1 and float(la.std()) > 0.01
    torch.testing.assert_close(lb, la, rtol=0, atol=1e-5 * scale)
    # The same summed loss and the same update, weight by weight.
    assert loss_a > 0 and loss_b == pytest.approx(loss_a, rel=1e-5)
    assert da.keys() == db.keys()
    assert float(da["score_fr.weight"].abs().max()) > 0
    for k in da:
        step = float(da[k].abs().max())
        torch.testing.assert_close(
            db[k], da[k], rtol=0, atol=1e-4 * step + 1e-12, msg=lambda m, k=k: f"{k}: {m}"
        )
