"""``--resume`` is explicit: bookkeeping keys (train.iterations, …) change and are recorded in
RUN/config.yaml; any other change is refused before any work, naming the key and both values;
a finished run says so in one line instead of a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from fcnseg import checkpoint as ckpt
from fcnseg.cli import main
from fcnseg.config import load_config
from fcnseg.engine.resume import NOTE, RESUME_MAY_CHANGE, RunFinished, config_changes
from fcnseg.engine.trainer import Trainer

CONFIG = "fcn8s_resnet18_synthetic"
TINY = ["data.options={num_images: 8, size: [48, 64]}", "train.eval_every=2", "data.batch_size=2"]


def _sets(*extra: str) -> list[str]:
    return [x for item in (*TINY, *extra) for x in ("--set", item)]


def _train(run: Path, *extra: str, config: str = CONFIG) -> int:
    return main(["train", config, "-o", str(run), "--no-progress", *_sets(*extra), "--resume"])


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run that finished its 2 iterations."""
    run = tmp_path_factory.mktemp("finished") / "run"
    argv = ["train", CONFIG, "-o", str(run), "--no-progress", *_sets("train.iterations=2")]
    assert main(argv) == 0
    return run


@pytest.fixture()
def run(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


def test_resume_of_a_finished_run_is_one_line(run: Path) -> None:
    """Same config (given as the shipped config or as RUN/config.yaml): the run is done; a
    lowered train.iterations: past it. No traceback (it was AttributeError), nothing written."""
    before = _files(run)
    expected = (
        f"fcnseg train: run {run} already finished at iteration 2 of 2; raise train.iterations "
        f"with --set train.iterations=4 --resume to train further, or use fcnseg eval {run}"
    )
    with pytest.raises(SystemExit) as err:
        _train(run, "train.iterations=2")
    assert err.value.code == expected
    with pytest.raises(SystemExit) as err:
        main(["train", str(run / "config.yaml"), "-o", str(run), "--no-progress", "--resume"])
    assert err.value.code == expected
    with pytest.raises(SystemExit, match=r"is at iteration 2, past train\.iterations=1; "):
        _train(run, "train.iterations=1")
    assert _files(run) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("train.lr=0.5", "train.lr: checkpoint 0.001, this run 0.5"),
        ("model.backbone=mobilenet_v3_large",
         "model.backbone: checkpoint 'resnet18', this run 'mobilenet_v3_large'"),
        ("data.batch_size=4", "data.batch_size: checkpoint 2, this run 4"),
    ],
)  # fmt: skip
def test_refused_change_names_key_and_values_and_writes_nothing(
    run: Path, change: str, message: str
) -> None:
    """Together with an allowed change (train.iterations 2 → 4), which then does not apply
    either: every file of the run keeps its bytes (checkpoints, config.yaml, log)."""
    before = _files(run)
    with pytest.raises(SystemExit) as err:
        _train(run, "train.iterations=4", change)
    text = str(err.value.code)
    assert text.startswith(f"fcnseg train: --resume: {run / 'checkpoints' / 'last.safetensors'}")
    assert message in text and "train.iterations" not in text.split("(", 1)[1].split(")")[0]
    assert "drop the --set" in text and "another -o" in text and "\n" not in text
    assert _files(run) == before


def test_every_refused_key_is_named_at_once(run: Path) -> None:
    with pytest.raises(SystemExit) as err:
        _train(run, "train.lr=0.5", "train.seed=3")
    assert "train.lr: checkpoint 0.001, this run 0.5; train.seed: checkpoint 0, this run 3" in str(
        err.value.code
    )


def test_raising_iterations_continues_and_is_recorded(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--set train.iterations=4 (and train.log_every=1) on the finished run: trains 2 more
    iterations; config.yaml holds the new values and a note per change; the checkpoint's config
    too, so resuming with RUN/config.yaml afterwards is a finished run, not a change."""
    assert _train(run, "train.iterations=4", "train.log_every=1") == 0
    err = capsys.readouterr().err
    assert f"--resume changes train.iterations 2 -> 4 (recorded in {run / 'config.yaml'})" in err
    assert ckpt.load_checkpoint(run / "checkpoints" / "last.safetensors").iteration == 4
    assert json.loads((run / "metrics.json").read_text())["iteration"] == 4
    rows = (run / "log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows][-1] == 4
    text = (run / "config.yaml").read_text()
    notes = [line for line in text.splitlines() if line.startswith("#")]
    assert notes == [
        f"{NOTE}2: train.iterations 2 -> 4",
        f"{NOTE}2: train.log_every 10 -> 1",
    ]
    saved = yaml.safe_load(text)
    assert saved["train"]["iterations"] == 4 and saved["train"]["log_every"] == 1
    last = ckpt.load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert last.config["train"]["iterations"] == 4
    with pytest.raises(SystemExit, match="already finished at iteration 4 of 4"):
        main(["train", str(run / "config.yaml"), "-o", str(run), "--no-progress", "--resume"])
    # A further change adds its note below the earlier ones.
    assert _train(run, "train.iterations=5", "train.log_every=1") == 0
    notes = [line for line in (run / "config.yaml").read_text().splitlines() if line[:1] == "#"]
    assert notes[-1] == f"{NOTE}4: train.iterations 4 -> 5" and len(notes) == 3


def test_finished_run_without_its_report_writes_it(run: Path) -> None:
    """Killed after the last checkpoint but before metrics.json: --resume evaluates the last
    checkpoint and writes the report (no training, weights unchanged)."""
    weights = (run / "checkpoints" / "last.safetensors").read_bytes()
    report = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").unlink()
    assert _train(run, "train.iterations=2") == 0
    assert json.loads((run / "metrics.json").read_text()) == report
    assert (run / "checkpoints" / "last.safetensors").read_bytes() == weights


def test_library_refuses_too(run: Path) -> None:
    """Trainer(resume=True) applies the same policy (the CLI only prints it); a finished run
    can be loaded (e.g. to evaluate) but not trained further."""
    done = Trainer(load_config(CONFIG, [*TINY, "train.iterations=2"]), run, resume=True,
                   progress=False)  # fmt: skip
    with pytest.raises(RunFinished, match="already finished at iteration 2 of 2"):
        done.train()
    cfg = load_config(CONFIG, [*TINY, "train.iterations=4", "train.momentum=0.5"])
    with pytest.raises(ckpt.CheckpointError, match=r"train\.momentum: checkpoint 0\.9, this run"):
        Trainer(cfg, run, resume=True, progress=False)
    cfg = load_config(CONFIG, [*TINY, "train.iterations=3", "data.num_workers=1"])
    trainer = Trainer(cfg, run, resume=True, progress=False)
    assert trainer.iteration == 2
    assert [c.describe() for c in trainer.resume_changes] == [
        "data.num_workers 0 -> 1",
        "train.iterations 2 -> 3",
    ]


def test_config_changes_fill_defaults() -> None:
    """A model argument written out at its default is no change; the policy list is in config
    key form."""
    base = load_config(CONFIG, TINY)
    same = load_config(CONFIG, [*TINY, "model.mode=exact", "model.at_once=false"])
    assert config_changes(base.to_dict(), same) == []
    other = load_config(CONFIG, [*TINY, "model.learnable_upsampling=false"])
    changes = config_changes(base.to_dict(), other)
    assert [c.describe() for c in changes] == ["model.learnable_upsampling True -> False"]
    assert "train.iterations" in RESUME_MAY_CHANGE and "train.lr" not in RESUME_MAY_CHANGE
