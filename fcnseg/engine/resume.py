"""What ``--resume`` may change: a resumed run continues the same experiment.

The config given on resume is compared with the one stored in the run's last checkpoint. Keys
of :data:`RESUME_MAY_CHANGE` (how long to train, how often to evaluate, checkpoint and log,
where and with how many loader workers it runs) apply and are recorded in ``RUN/config.yaml``
as ``# --resume at iteration N: KEY OLD -> NEW`` lines. Any other difference (model, data,
optimiser, learning rate, schedule, loss, seed, ...) is refused before any work, naming each
key and both values: the optimiser and scheduler states restored from the checkpoint would
otherwise silently keep the old values, or the run would no longer be one experiment.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fcnseg import checkpoint as ckpt
from fcnseg.config import Config, ConfigError
from fcnseg.models.registry import INIT_ARGUMENTS

__all__ = [
    "RESUME_MAY_CHANGE",
    "Change",
    "RunFinished",
    "check",
    "check_finished",
    "config_changes",
    "record_changes",
    "refuse_changes",
]

log = logging.getLogger("fcnseg")

#: Config keys that may differ on ``--resume``; every other key must equal the run's.
RESUME_MAY_CHANGE: frozenset[str] = frozenset(
    {
        "name",  # the experiment's label in logs and checkpoints
        "train.iterations",  # train further (or stop earlier, if not reached yet)
        "train.eval_every",
        "train.checkpoint_every",
        "train.log_every",
        "train.on_nonfinite",  # what to do if a step goes non-finite, not how steps are done
        "train.device",  # where it runs, not what it computes
        "data.num_workers",  # loader processes; the batches are the same
        # Weights to start from: a resumed run takes its weights from the checkpoint.
        *(f"model.{key}" for key in INIT_ARGUMENTS),
    }
)

#: Prefix of the lines recording changes in ``RUN/config.yaml`` (YAML comments).
NOTE = "# --resume at iteration "

_ABSENT = "(not set)"


class RunFinished(ckpt.CheckpointError):
    """``--resume`` of a run whose last checkpoint is at (or past) ``train.iterations``."""


@dataclass(frozen=True)
class Change:
    """One config key whose value differs between the run (``old``) and this resume (``new``)."""

    key: str
    old: Any
    new: Any

    @property
    def allowed(self) -> bool:
        return self.key in RESUME_MAY_CHANGE

    def describe(self, labels: tuple[str, str] = ("", "->")) -> str:
        """``key: LABEL old, LABEL new`` with labels, ``key old -> new`` by default."""
        a, b = labels
        if not a:
            return f"{self.key} {_show(self.old)} {b} {_show(self.new)}"
        return f"{self.key}: {a} {_show(self.old)}, {b} {_show(self.new)}"


def _show(value: Any) -> str:
    return value if value is _ABSENT else repr(value)


def _flatten(cfg: Config, arguments: list[str]) -> dict[str, Any]:
    """``section.key`` → value; the model's ``arguments`` with their builder's defaults."""
    flat: dict[str, Any] = {"model.name": cfg.model.name}
    for key in arguments:
        try:
            flat[f"model.{key}"] = getattr(cfg.model, key)
        except AttributeError:  # an argument only the other model has, or a required one
            flat[f"model.{key}"] = _ABSENT
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "model":
            continue
        if dataclasses.is_dataclass(value):
            flat.update({f"{f.name}.{k}": v for k, v in dataclasses.asdict(value).items()})
        else:
            flat[f.name] = value
    return flat


def _flat_raw(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not prefix:  # a section
            out.update(_flat_raw(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_changes(saved: dict[str, Any], now: Config) -> list[Change]:
    """Every key whose value differs between a stored config mapping and ``now``, in config
    order. Defaults fill keys either side leaves out; a stored config this version cannot
    read (keys since removed) is compared key by key where both have the key."""
    # Compare as stored: checkpoints keep the config as JSON (mapping keys become strings).
    now = Config.from_dict(json.loads(json.dumps(now.to_dict())))
    saved = json.loads(json.dumps(saved))
    try:
        old_cfg = Config.from_dict(saved)
    except ConfigError:
        old, new = _flat_raw(saved), _flat_raw(now.to_dict())
        return [Change(k, old[k], v) for k, v in new.items() if k in old and old[k] != v]
    arguments = list(dict.fromkeys([*old_cfg.model.arguments, *now.model.arguments]))
    old, new = _flatten(old_cfg, arguments), _flatten(now, arguments)
    return [Change(k, old[k], v) for k, v in new.items() if old[k] != v]


def refuse_changes(
    changes: list[Change], source: Path, run_dir: Path, labels: tuple[str, str]
) -> None:
    """Raise :class:`~fcnseg.checkpoint.CheckpointError` naming every change not allowed."""
    refused = [c for c in changes if not c.allowed]
    if not refused:
        return
    listed = "; ".join(c.describe(labels) for c in refused)
    raise ckpt.CheckpointError(
        f"--resume: {source} does not match the config given now ({listed}); "
        f"{'this key' if len(refused) == 1 else 'these keys'} cannot change on resume (only "
        "bookkeeping such as train.iterations can): drop the --set or resume with the run's "
        f"own config ({run_dir / 'config.yaml'}), or start a new run with another -o"
    )


def _report_iteration(run_dir: Path) -> int | None:
    """The iteration of the final report (``metrics.json``), if there is a readable one."""
    try:
        return int(json.loads((run_dir / "metrics.json").read_text())["iteration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_finished(run_dir: Path, iteration: int, iterations: int) -> None:
    """Raise :class:`RunFinished` when a run at ``iteration`` has nothing left to do for
    ``train.iterations`` = ``iterations``. A run stopped after its last checkpoint but before
    its final report is not finished: resuming it writes the report."""
    if iteration < iterations:
        return
    again = f"--set train.iterations={2 * iteration} --resume"
    if iteration > iterations:
        raise RunFinished(
            f"run {run_dir} is at iteration {iteration}, past train.iterations={iterations}; "
            f"raise train.iterations ({again}) to train further, or use fcnseg eval {run_dir}"
        )
    if _report_iteration(run_dir) == iteration:
        raise RunFinished(
            f"run {run_dir} already finished at iteration {iteration} of {iterations}; raise "
            f"train.iterations with {again} to train further, or use fcnseg eval {run_dir}"
        )


def check(loaded: ckpt.Checkpoint, now: Config, run_dir: Path) -> list[Change]:
    """The changes from the config stored with ``loaded`` (the run's last checkpoint;
    ``RUN/config.yaml`` if it stores none) to ``now``; raises
    :class:`~fcnseg.checkpoint.CheckpointError` for changes not allowed."""
    saved: dict[str, Any] = loaded.config
    source, labels = loaded.path, ("checkpoint", "this run")
    if not saved:
        source, labels = run_dir / "config.yaml", ("config.yaml", "this run")
        saved = _read_yaml(source)
    changes: list[Change] = []
    if saved:
        changes = config_changes(saved, now)
        refuse_changes(changes, source, run_dir, labels)
    else:
        log.warning("--resume: no config in %s or %s; not compared", loaded.path, source)
    return changes


def _read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file's mapping; empty when missing or unreadable."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def record_changes(run_dir: Path, cfg: Config, changes: list[Change], iteration: int) -> None:
    """Rewrite ``RUN/config.yaml`` (atomically) as ``cfg``, with a comment line per change
    below those of earlier resumes."""
    path = run_dir / "config.yaml"
    try:
        old = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        old = []
    notes = [line for line in old if line.startswith(NOTE)]
    for change in changes:
        line = f"{NOTE}{iteration}: {change.describe()}"
        if line not in notes:  # the same resume again (killed before its first checkpoint)
            notes.append(line)
        log.info("--resume: %s (recorded in %s)", change.describe(), path)
    text = "".join(f"{n}\n" for n in notes) + yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    ckpt.atomic_write(path, text.encode("utf-8"))
