"""Reliability of training and checkpoints: kills, signals, non-finite losses, full disks,
mismatched or truncated checkpoints (see docs/reliability.md)."""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from fcnseg import checkpoint as ckpt
from fcnseg.cli import main
from fcnseg.config import load_config
from fcnseg.engine.trainer import Trainer, TrainingInterrupted
from fcnseg.models import build_model

REPO = Path(__file__).resolve().parents[1]
CONFIG = "fcn8s_resnet18_synthetic"
TINY = [
    "data.options={num_images: 4, size: [48, 64]}",
    "data.batch_size=2",
    "data.val_batch_size=4",
    "train.iterations=4",
    "train.eval_every=4",
    "train.checkpoint_every=2",
    "train.log_every=1",
]
SOAK_ITERATIONS = 16


def _cfg(*extra: str):
    return load_config(CONFIG, [*TINY, *extra])


def _sets(*extra: str) -> list[str]:
    return [x for item in [*TINY, *extra] for x in ("--set", item)]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    """``tools/kill_soak.py`` as a module."""
    spec = importlib.util.spec_from_file_location("kill_soak", REPO / "tools" / "kill_soak.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["kill_soak"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference(soak: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of the soak's job, in a subprocess like the interrupted ones."""
    run = tmp_path_factory.mktemp("reference") / "run"
    soak.train(run, soak.soak_overrides(SOAK_ITERATIONS, 2))
    return run


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-iteration run (checkpoints at 2 and 4)."""
    run = tmp_path_factory.mktemp("small") / "run"
    Trainer(_cfg(), run, progress=False).train()
    return run


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


# ---------------------------------------------------------------------------- kills


@pytest.mark.slow
def test_kill_soak_three_kills(soak: ModuleType, reference: Path, tmp_path: Path) -> None:
    """3 SIGKILLs (two inside checkpoint writes: after the commit and during it, one at a
    random moment), each followed by ``--resume``: every checkpoint file loads after every
    kill, each resume starts from the last committed checkpoint and redoes at most
    ``checkpoint_every`` iterations, and the final weights are bit-identical."""
    result = soak.run_soak(
        kills=3, iterations=SOAK_ITERATIONS, work=tmp_path, reference=reference, say=print
    )
    assert result["failures"] == [] and result["ok"]
    assert result["kills"] == 3 and result["corrupt"] == 0 and result["identical"] is True
    assert result["kills_inside_checkpoint_write"] >= 2
    assert result["checkpoint_files_checked"] >= 3
    assert result["max_redone_per_kill"] <= 2
    assert result["executed_iterations"] == SOAK_ITERATIONS + result["redone_iterations"]


def test_soak_checks_can_fail(soak: ModuleType, small_run: Path, tmp_path: Path) -> None:
    """Negative controls for the soak's verdicts: a one-ulp change in one tensor is a
    difference, a truncated file is corrupt."""
    a = small_run / "checkpoints" / "last.safetensors"
    assert soak.weights_diff(a, a) == []
    loaded = ckpt.load_checkpoint(a)
    w = loaded.state_dict["score_fr.bias"].clone()
    w[0] = torch.nextafter(w[0], torch.tensor(1.0))
    model = loaded.build_model()
    model.score_fr.bias.data = w
    b = tmp_path / "b.safetensors"
    ckpt.save_checkpoint(b, model, model_spec=loaded.model, classes=loaded.classes,
                         palette=loaded.palette, ignore_index=loaded.ignore_index)  # fmt: skip
    assert soak.weights_diff(a, b) == ["score_fr.bias"]
    run = _copy(small_run, tmp_path / "run")
    last = run / "checkpoints" / "last.safetensors"
    last.write_bytes(last.read_bytes()[:-100])
    found = soak.audit(run)
    assert len(found["corrupt"]) == 1 and "last.safetensors" in found["corrupt"][0]


def test_commit_interrupted_before_rename_is_completed(small_run: Path, tmp_path: Path) -> None:
    """A kill after the state file is committed but before the weights are renamed into place
    leaves a consistent, resumable pair: resuming completes the rename."""
    run = _copy(small_run, tmp_path / "run")
    folder = run / "checkpoints"
    trainer = Trainer(_cfg(), run, resume=True, progress=False)  # at iteration 4
    ckpt.remove_temporary(folder)
    real_replace = os.replace
    calls = []

    def replace(src: Any, dst: Any) -> None:
        calls.append(Path(dst).name)
        if Path(dst).name == "last.safetensors":
            raise KeyboardInterrupt("killed")  # the final rename never happens
        real_replace(src, dst)

    trainer.iteration = 5
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", replace)
        with pytest.raises(KeyboardInterrupt):
            trainer.save("last")
    assert calls == ["last.next.safetensors", "last.state.pt", "last.safetensors"]
    assert ckpt.load_checkpoint(folder / "last.safetensors").iteration == 4
    assert ckpt.load_state(folder / "last.state.pt")["iteration"] == 5
    with pytest.raises(ckpt.CheckpointError, match="disagree"):
        ckpt.load_resumable(folder)  # negative control: unrepaired, the pair is inconsistent
    ckpt.repair_resumable(folder)
    loaded, state = ckpt.load_resumable(folder)
    assert loaded.iteration == state["iteration"] == 5
    assert not (folder / "last.next.safetensors").exists()


def test_uncommitted_write_is_discarded(small_run: Path, tmp_path: Path) -> None:
    """New weights written before a kill that came before the commit (and partial temporary
    files) are discarded on resume; the committed pair is used."""
    run = _copy(small_run, tmp_path / "run")
    folder = run / "checkpoints"
    stale = ckpt.load_checkpoint(folder / "last.safetensors")
    model = stale.build_model()
    meta = {"model_spec": stale.model, "classes": stale.classes, "palette": stale.palette,
            "ignore_index": stale.ignore_index}  # fmt: skip
    ckpt.save_checkpoint(folder / "last.next.safetensors", model, iteration=6, **meta)
    (folder / ".last.state.pt.abc123.tmp").write_bytes(b"partial")
    trainer = Trainer(_cfg(), run, resume=True, progress=False)
    assert trainer.iteration == 4
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.safetensors",
        "last.safetensors",
        "last.state.pt",
    ]


# ---------------------------------------------------------------------------- signals


def _wait_logged(soak: ModuleType, run: Path, proc: subprocess.Popen, at_least: int) -> None:
    deadline = time.monotonic() + 120
    while max(soak.logged_iterations(run), default=0) < at_least:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.01)


def _interrupt(
    soak: ModuleType, cmd: list[str], run: Path, sig: signal.Signals, after: int
) -> tuple[int, list[str]]:
    """Run ``cmd``, send ``sig`` once iteration ``after`` is logged; return the iteration of
    the saved checkpoint and the resume command printed."""
    proc = subprocess.Popen(
        cmd, env=soak.child_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _wait_logged(soak, run, proc, after)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    stderr = err.decode()
    assert proc.returncode == 128 + sig, stderr
    found = re.search(
        rf"{sig.name} received: stopped after iteration (\d+) and saved (\S+)", stderr
    )
    assert found, stderr
    assert "Traceback" not in stderr
    iteration = int(found[1])
    assert Path(found[2]) == run / "checkpoints" / "last.safetensors"
    resume = shlex.split(stderr.split("resume with:\n", 1)[1].splitlines()[0])
    return iteration, resume


@pytest.mark.slow
def test_sigint_and_sigterm_save_and_resume_bit_identical(
    soak: ModuleType, reference: Path, tmp_path: Path
) -> None:
    """Ctrl-C (SIGINT) then SIGTERM mid-run: each saves a checkpoint at the iteration it
    names (periodic checkpoints are off), exits 130/143 and prints the exact resume command;
    running those commands finishes bit-identical to the uninterrupted run."""
    run = tmp_path / "run"
    overrides = soak.soak_overrides(SOAK_ITERATIONS, 1000)
    first, resume = _interrupt(
        soak, soak.train_command(run, overrides, resume=False), run, signal.SIGINT, 2
    )
    assert 2 <= first < SOAK_ITERATIONS
    assert soak.committed_iteration(run) == first
    assert ckpt.load_checkpoint(run / "checkpoints" / "last.safetensors").iteration == first
    assert resume[:2] == ["fcnseg", "train"] and resume[-1] == "--resume"
    assert resume[resume.index("-o") + 1] == str(run)
    assert [s for s in resume if s.startswith("train.")] == [
        s for s in overrides if s.startswith("train.")
    ]
    second, resume2 = _interrupt(
        soak, [sys.executable, "-m", *resume], run, signal.SIGTERM, first + 2
    )
    assert first + 2 <= second < SOAK_ITERATIONS and resume2 == resume
    assert soak.committed_iteration(run) == second
    done = subprocess.run(
        [sys.executable, "-m", *resume], env=soak.child_env(), cwd=REPO, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()
    assert soak.logged_iterations(run) == list(range(1, SOAK_ITERATIONS + 1))
    final = run / "checkpoints" / "last.safetensors"
    assert soak.weights_diff(reference / "checkpoints" / "last.safetensors", final) == []


def test_signal_in_process_saves_current_iteration(tmp_path: Path) -> None:
    """A SIGINT during iteration 3 stops after it with a checkpoint of iteration 3 (none was
    due); a second signal quits at once and leaves that checkpoint as it was."""
    trainer = Trainer(_cfg("train.checkpoint_every=100"), tmp_path / "run", progress=False)
    step = trainer.step

    def step_and_signal(batches: Any) -> float:
        if trainer.iteration == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return step(batches)

    trainer.step = step_and_signal  # type: ignore[method-assign]
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as stop:
        trainer.train()
    assert stop.value.iteration == 3 and stop.value.signum == signal.SIGINT
    folder = tmp_path / "run" / "checkpoints"
    assert ckpt.load_resumable(folder)[1]["iteration"] == 3
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    before = _files(folder)

    again = Trainer(_cfg("train.checkpoint_every=100"), tmp_path / "run", resume=True,
                    progress=False)  # fmt: skip
    step2 = again.step

    def step_and_signal_twice(batches: Any) -> float:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return step2(batches)

    again.step = step_and_signal_twice  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt) as quit_now:
        again.train()
    assert not isinstance(quit_now.value, TrainingInterrupted)
    assert _files(folder) == before


# ---------------------------------------------------------------------------- non-finite


def _nan_at(trainer: Trainer, iteration: int) -> None:
    """Make the loss NaN during ``iteration`` (1-based)."""
    criterion = trainer.criterion.forward

    def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
        loss = criterion(*args, **kwargs)
        return loss * float("nan") if trainer.iteration + 1 == iteration else loss

    trainer.criterion.forward = forward  # type: ignore[method-assign]


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    """Default ``on_nonfinite: stop``: a NaN loss at iteration 3 stops the run with a message
    naming the iteration and the last good checkpoint, which stays finite and untouched."""
    trainer = Trainer(_cfg(), tmp_path / "run", progress=False)
    _nan_at(trainer, 3)
    with pytest.raises(FloatingPointError) as err:
        trainer.train()
    message = str(err.value)
    folder = tmp_path / "run" / "checkpoints"
    assert "loss is nan at iteration 3" in message
    assert f"last good checkpoint: {folder / 'last.safetensors'} (iteration 2)" in message
    loaded, state = ckpt.load_resumable(folder)
    assert loaded.iteration == state["iteration"] == 2
    assert ckpt.nonfinite_tensors(loaded.state_dict) == []


def test_nonfinite_loss_skip_mode(tmp_path: Path) -> None:
    """``on_nonfinite: skip``: the NaN step is skipped (weights unchanged by it, schedule and
    data stream move on) and the run finishes with finite weights."""
    cfg = _cfg("train.on_nonfinite=skip")
    skipping = Trainer(cfg, tmp_path / "skip", progress=False)
    _nan_at(skipping, 3)
    skipping.train(stop_at=3)
    reference = Trainer(cfg, tmp_path / "ref", progress=False)
    reference.save = lambda *a, **k: None  # type: ignore[method-assign]  # (only its weights count)
    reference.train(stop_at=2)
    after_two = {k: v.clone() for k, v in reference.net.state_dict().items()}
    for k, v in skipping.net.state_dict().items():
        assert torch.equal(v, after_two[k]), k
    assert skipping.skipped_steps == 1
    assert skipping.scheduler.last_epoch == 3
    # Negative control: without the NaN, iteration 3 changes the weights.
    reference.train(stop_at=3)
    moved = reference.net.state_dict()["score_fr.weight"]
    assert not torch.equal(moved, after_two["score_fr.weight"])
    result = skipping.train()
    assert result.iteration == 4 and result.skipped_steps == 1
    last = ckpt.load_checkpoint(tmp_path / "skip" / "checkpoints" / "last.safetensors")
    assert last.iteration == 4 and ckpt.nonfinite_tensors(last.state_dict) == []


def test_overflowing_weights_are_never_saved(tmp_path: Path) -> None:
    """A huge learning rate overflows the weights while the loss is still finite: the save
    is refused (naming the tensor and the last good checkpoint), in skip mode too, and every
    checkpoint on disk stays finite."""
    for mode in ("stop", "skip"):
        run = tmp_path / mode
        trainer = Trainer(_cfg("train.lr=1.0e+30", "train.checkpoint_every=1",
                               f"train.on_nonfinite={mode}"), run, progress=False)  # fmt: skip
        with pytest.raises(FloatingPointError, match=r"(?i)last good checkpoint") as err:
            trainer.train()
        assert "not finite" in str(err.value)
        for path in (run / "checkpoints").glob("*.safetensors"):
            assert ckpt.nonfinite_tensors(ckpt.load_checkpoint(path).state_dict) == [], path


def test_refuses_to_save_nonfinite_weights(small_run: Path, tmp_path: Path) -> None:
    run = _copy(small_run, tmp_path / "run")
    folder = run / "checkpoints"
    trainer = Trainer(_cfg(), run, resume=True, progress=False)
    trainer.save("last")  # negative control: finite weights save
    before = _files(folder)
    with torch.no_grad():
        trainer.net.score_fr.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"score_fr\.weight holds NaN/inf.*iteration 4"):
        trainer.save("last")
    with pytest.raises(ckpt.CheckpointError, match="refusing to write"):
        ckpt.save_checkpoint(folder / "x.safetensors", trainer.net, iteration=4, **trainer.meta())
    assert _files(folder) == before


# ---------------------------------------------------------------------------- disk errors


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _failing(after: int, error: OSError) -> Any:
    """An ``os.fsync`` that works ``after`` times, then raises ``error``."""
    real = os.fsync
    calls = [0]

    def fsync(fd: int) -> None:
        calls[0] += 1
        if calls[0] > after:
            raise error
        real(fd)

    return fsync


@pytest.mark.parametrize("after", [0, 2], ids=["writing-weights", "writing-state"])
def test_disk_full_keeps_previous_checkpoint(
    small_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: int
) -> None:
    """ENOSPC while writing the weights or the state: a clear error naming the checkpoint and
    what to do; the previous pair is byte-identical, nothing half-written is left, and the
    run resumes from it."""
    run = _copy(small_run, tmp_path / "run")
    folder = run / "checkpoints"
    trainer = Trainer(_cfg(), run, resume=True, progress=False)
    before = _files(folder)
    trainer.iteration = 5
    monkeypatch.setattr(os, "fsync", _failing(after, _enospc()))
    with pytest.raises(ckpt.CheckpointWriteError) as err:
        trainer.save("last")
    monkeypatch.undo()
    message = str(err.value)
    assert f"cannot write checkpoint {folder / 'last.safetensors'}" in message
    assert "No space left on device" in message and "free space" in message
    assert "--resume" in message and "iteration 4" in message
    assert _files(folder) == before
    assert Trainer(_cfg(), run, resume=True, progress=False).iteration == 4


def test_unwritable_run_dir(
    small_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EACCES creating the temporary file (tests run as root, so chmod would not block)."""
    run = _copy(small_run, tmp_path / "run")
    folder = run / "checkpoints"
    trainer = Trainer(_cfg(), run, resume=True, progress=False)
    before = _files(folder)

    def mkstemp(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied", str(folder))

    monkeypatch.setattr(ckpt.tempfile, "mkstemp", mkstemp)
    with pytest.raises(ckpt.CheckpointWriteError, match=rf"make {re.escape(str(folder))} writable"):
        trainer.save("last")
    assert _files(folder) == before


def test_cli_disk_full_and_nan_are_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fcnseg train` reports a full disk and a diverged run as one-line errors (exit 1), not
    tracebacks."""
    run = tmp_path / "run"
    with monkeypatch.context() as mp:
        mp.setattr(os, "fsync", _failing(0, _enospc()))
        with pytest.raises(SystemExit) as err:
            main(["train", CONFIG, "-o", str(run), "--no-progress", *_sets("train.iterations=2")])
    pattern = r"fcnseg train: cannot write checkpoint \S+/(best|last)\.safetensors: No space"
    assert re.match(pattern, str(err.value.code))
    with pytest.raises(SystemExit) as err:
        main(["train", CONFIG, "-o", str(tmp_path / "nan"), "--no-progress",
              *_sets("train.lr=1.0e+12", "train.checkpoint_every=1")])  # fmt: skip
    assert re.match(r"(?i)fcnseg train: .*iteration \d+.*last good checkpoint", str(err.value.code))


# ---------------------------------------------------------------------------- loading errors


def test_resume_with_another_model_names_both_values(small_run: Path, tmp_path: Path) -> None:
    """`--resume` with a changed backbone, or into a checkpoint of another class count: a
    clear error naming both values (no shape-mismatch traceback)."""
    run = _copy(small_run, tmp_path / "run")
    argv = ["train", CONFIG, "-o", str(run), "--no-progress", "--resume", *_sets()]
    with pytest.raises(SystemExit) as err:
        main([*argv, "--set", "model.backbone=mobilenet_v3_large"])
    message = str(err.value.code)
    assert "backbone: checkpoint 'resnet18', this run 'mobilenet_v3_large'" in message
    assert str(run / "checkpoints" / "last.safetensors") in message and "config.yaml" in message
    # A checkpoint of 3 classes where the synthetic data has 6.
    folder = run / "checkpoints"
    loaded = ckpt.load_checkpoint(folder / "last.safetensors")
    spec = dict(loaded.model, num_classes=3)
    other = build_model(**spec)
    ckpt.save_checkpoint(folder / "last.safetensors", other, model_spec=spec, iteration=4,
                         classes=loaded.classes[:3], palette=loaded.palette[:3],
                         ignore_index=loaded.ignore_index)  # fmt: skip
    with pytest.raises(SystemExit, match=r"num_classes: checkpoint 3, this run \d+"):
        main(argv)


def test_init_from_another_model_names_both_values(small_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ckpt.CheckpointError) as err:
        Trainer(_cfg("model.backbone=mobilenet_v3_large", f"model.init_from={small_run}"),
                tmp_path / "run", progress=False)  # fmt: skip
    message = str(err.value)
    assert message.startswith(f"model.init_from: {small_run / 'checkpoints' / 'best.safetensors'}")
    assert "backbone: checkpoint 'resnet18', this run 'mobilenet_v3_large'" in message
    # Negative control: the same backbone initialises fine.
    Trainer(_cfg(f"model.init_from={small_run}"), tmp_path / "ok", progress=False)


def test_truncated_checkpoints_are_named(small_run: Path, tmp_path: Path) -> None:
    """Bytes cut off a .safetensors or a .state.pt: an error naming the file (and the size
    it should have), from the library and from `fcnseg train --resume`."""
    run = _copy(small_run, tmp_path / "run")
    last = run / "checkpoints" / "last.safetensors"
    data = last.read_bytes()
    last.write_bytes(data[:-1000])
    expected = rf"{re.escape(str(last))} is truncated \(\d+ bytes, the header expects {len(data)}\)"
    with pytest.raises(ckpt.CheckpointError, match=expected):
        ckpt.load_checkpoint(last)
    argv = ["train", CONFIG, "-o", str(run), "--no-progress", "--resume", *_sets()]
    with pytest.raises(SystemExit, match=rf"^fcnseg train: {re.escape(str(last))} is truncated"):
        main(argv)
    last.write_bytes(data[:5])
    with pytest.raises(ckpt.CheckpointError, match="not even the 8-byte header"):
        ckpt.load_checkpoint(last)
    last.write_bytes(data)
    state = run / "checkpoints" / "last.state.pt"
    state.write_bytes(state.read_bytes()[:-1000])
    unreadable = rf"^fcnseg train: {re.escape(str(state))} is not a readable training state"
    with pytest.raises(SystemExit, match=unreadable):
        main(argv)
