"""Kill soak: SIGKILL a CPU training run at random moments, resume it, compare with an
uninterrupted run.

    .venv/bin/python tools/kill_soak.py                 # 20 kills → docs/benchmarks/kill_soak.*
    .venv/bin/python tools/kill_soak.py --kills 5 --out /tmp/soak

Each attempt is ``python -m fcnseg train fcn8s_resnet18_synthetic`` (tiny images, one thread)
in a subprocess, resumed with ``--resume`` from the previous attempt's checkpoint. Kills
alternate between two kinds:

* inside a checkpoint write, in turn: ``rename`` (the state file is committed, the weights
  not yet renamed into place), ``state`` (the new weights are written, the state file is being
  written) and ``weights`` (the new weights are being written): wait until the next write
  reaches that stage, then kill after a random delay. ``FCNSEG_TEST_CHECKPOINT_DELAY`` (see
  :mod:`fcnseg.checkpoint`) holds each stage long enough for the kill to land in it.
* ``random``: wait until the attempt has logged a random iteration of the next two checkpoint
  intervals, then kill after a random delay (during a step, a log write or a checkpoint).

After every kill all checkpoint files on disk must load; every resume must start from the last
committed checkpoint and redo at most ``checkpoint_every`` iterations; the final weights must be
bit-identical to an uninterrupted run of the same config. Exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "benchmarks"
CONFIG = "fcn8s_resnet18_synthetic"
RESUMED = re.compile(r"resumed .* at iteration (\d+)")


def soak_overrides(iterations: int, checkpoint_every: int) -> list[str]:
    """The tiny training job: 48×64 images, crops, jitter and loss sampling (every RNG used)."""
    return [
        "data.options={num_images: 6, size: [48, 64]}",
        "data.batch_size=2",
        "data.val_batch_size=6",
        "data.crop_size=[40, 56]",
        "data.scale_range=[0.75, 1.25]",
        "data.jitter=0.2",
        "train.loss_sample_prob=0.7",
        f"train.iterations={iterations}",
        f"train.eval_every={iterations}",
        f"train.checkpoint_every={checkpoint_every}",
        "train.log_every=1",
    ]


def train_command(run_dir: Path, overrides: list[str], *, resume: bool) -> list[str]:
    sets = [x for item in overrides for x in ("--set", item)]
    cmd = [sys.executable, "-m", "fcnseg", "-v", "train", CONFIG, "-o", str(run_dir)]
    return [*cmd, "--no-progress", *sets, *(["--resume"] if resume else [])]


def child_env(*, threads: int = 1, delay: float = 0.0) -> dict[str, str]:
    """Environment of a training subprocess (fixed thread count: bit-identical arithmetic)."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.pop("FCNSEG_TEST_CHECKPOINT_DELAY", None)
    if delay > 0:
        env["FCNSEG_TEST_CHECKPOINT_DELAY"] = str(delay)
    return env


def train(run_dir: Path, overrides: list[str], *, resume: bool = False, threads: int = 1) -> None:
    """One uninterrupted (or resumed-to-the-end) run; raises with its output if it fails."""
    cmd = train_command(run_dir, overrides, resume=resume)
    done = subprocess.run(cmd, env=child_env(threads=threads), cwd=REPO, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{done.stderr.decode()[-3000:]}")


def logged_iterations(run_dir: Path) -> list[int]:
    """Iterations of the training rows of ``log.csv`` (rows with a loss)."""
    path = run_dir / "log.csv"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines()[1:]:
        fields = line.split(",")
        if len(fields) > 1 and fields[1] and fields[0].isdigit():
            out.append(int(fields[0]))
    return out


def committed_iteration(run_dir: Path) -> int | None:
    """The iteration of the committed checkpoint (its training state), None before the first."""
    from fcnseg import checkpoint as ckpt

    state = run_dir / "checkpoints" / "last.state.pt"
    return int(ckpt.load_state(state)["iteration"]) if state.is_file() else None


def _metadata_iteration(path: Path) -> int | None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return int(json.loads((f.metadata() or {})["iteration"]))


def audit(run_dir: Path) -> dict[str, Any]:
    """Load every checkpoint file on disk; list partial writes (temporary files)."""
    from fcnseg import checkpoint as ckpt

    folder = run_dir / "checkpoints"
    checked, corrupt = [], []
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.state.pt")):
        checked.append(path.name)
        try:
            if path.suffix == ".safetensors":
                ckpt.load_checkpoint(path)
            else:
                ckpt.load_state(path)
        except ckpt.CheckpointError as err:
            corrupt.append(f"{path.name}: {err}")
    temporary = sorted(p.name for p in folder.glob(".*.tmp")) if folder.is_dir() else []
    return {"checked": checked, "corrupt": corrupt, "temporary": temporary}


def stage(run_dir: Path, temporary: list[str]) -> str:
    """Where in a checkpoint the kill landed, judged from the files it left."""
    folder = run_dir / "checkpoints"
    writing = [t for t in temporary if not t.startswith(".log.csv")]
    if any(t.startswith(".last.next.safetensors.") for t in writing):
        return "writing the new weights"
    if any(t.startswith(".last.state.pt.") for t in writing):
        return "writing the training state (commit)"
    if writing:
        return "writing another checkpoint file"
    pending = folder / "last.next.safetensors"
    if pending.is_file():
        if _metadata_iteration(pending) == committed_iteration(run_dir):
            return "committed, before the final rename"
        return "weights written, before the commit"
    return "between checkpoints"


def weights_diff(a: Path, b: Path) -> list[str]:
    """Names of the tensors that differ between two checkpoints (bitwise)."""
    import torch
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    if x.keys() != y.keys():
        return sorted(set(x) ^ set(y))
    return [k for k in x if x[k].dtype != y[k].dtype or not torch.equal(x[k], y[k])]


#: Checkpoint-write stages targeted in turn by every other kill (see :func:`_write_stage`).
WRITE_STAGES = ("rename", "state", "weights")


def _write_stage(folder: Path, target: str) -> Any:
    """A poll function that turns true once the next checkpoint write reaches ``target``:
    ``weights`` (the new weights' temporary file exists), ``state`` (the state file's does: the
    commit is being written) or ``rename`` (committed, the final rename not done yet). With the
    write delay, the process stays in that stage for ``delay`` seconds."""

    def names(pattern: str) -> set[str]:
        return {p.name for p in folder.glob(pattern)} if folder.is_dir() else set()

    seen = names(".*.tmp")
    state = folder / "last.state.pt"
    inode = state.stat().st_ino if state.is_file() else None

    def ready() -> bool:
        if target == "weights":
            return bool(names(".last.next.safetensors.*.tmp") - seen)
        if target == "state":
            return bool(names(".last.state.pt.*.tmp") - seen)
        try:
            committed = state.stat().st_ino != inode
        except FileNotFoundError:
            return False
        return committed and (folder / "last.next.safetensors").is_file()

    return ready


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _wait(proc: subprocess.Popen, ready: Any, timeout: float) -> bool:
    """Poll until ``ready()``; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"attempt did not reach its kill point within {timeout} s")
        time.sleep(0.005)
    return True


def run_soak(
    *,
    kills: int = 20,
    iterations: int | None = None,
    checkpoint_every: int = 2,
    seed: int = 0,
    delay: float = 0.25,
    work: Path,
    reference: Path | None = None,
    threads: int = 1,
    timeout: float = 600.0,
    say: Any = print,
) -> dict[str, Any]:
    """Run the soak in ``work`` and return its result (``result["ok"]``: every check passed).

    ``reference``: a finished uninterrupted run of the same job (trained here when None).
    """
    iterations = iterations or max(12, 4 * kills)
    started = time.monotonic()
    rng = random.Random(seed)
    overrides = soak_overrides(iterations, checkpoint_every)
    run = work / "soak"
    logs = work / "logs"
    for d in (run, logs):
        shutil.rmtree(d, ignore_errors=True)
    logs.mkdir(parents=True)
    if reference is None:
        reference = work / "reference"
        shutil.rmtree(reference, ignore_errors=True)
        say(f"reference: {iterations} iterations uninterrupted")
        train(reference, overrides, threads=threads)

    records: list[dict[str, Any]] = []
    failures: list[str] = []
    executed = 0
    attempt = 0
    finished_early = False
    partial: list[str] = []
    resumes = resumes_ok = 0
    mode, pause = "", 0.0
    while True:
        start = committed_iteration(run)
        resume = start is not None
        killing = len(records) < kills
        cmd = train_command(run, overrides, resume=resume)
        err_path = logs / f"attempt-{attempt:02d}.txt"
        with err_path.open("wb") as err_file:
            proc = subprocess.Popen(
                cmd,
                env=child_env(threads=threads, delay=delay if killing else 0.0),
                cwd=REPO,
                stdout=err_file,
                stderr=subprocess.STDOUT,
            )
            first = start or 0
            if killing:
                k = len(records)
                mode = WRITE_STAGES[k // 2 % len(WRITE_STAGES)] if k % 2 == 0 else "random"
                if mode != "random":
                    ready = _write_stage(run / "checkpoints", mode)
                    pause = rng.uniform(0, 0.8 * delay)
                else:
                    target = first + rng.randint(1, 2 * checkpoint_every)
                    inode = _inode(run / "log.csv")

                    def ready(target: int = target, inode: int | None = inode) -> bool:
                        # Rows of this attempt: the log was rewritten when it (re)started.
                        log = run / "log.csv"
                        return (
                            _inode(log) != inode
                            and max(logged_iterations(run), default=0) >= target
                        )

                    pause = rng.uniform(0, 0.5)
                if _wait(proc, ready, timeout):
                    time.sleep(pause)
                    proc.send_signal(signal.SIGKILL)
                proc.wait()
            else:
                proc.wait(timeout=timeout)
        output = err_path.read_text(errors="replace")
        resumed = RESUMED.search(output)
        resumed_from = (int(resumed.group(1)) if resumed else None) if resume else 0
        resumes += resume
        if resumed_from == first:
            resumes_ok += resume
        else:
            failures.append(
                f"attempt {attempt} resumed from {resumed_from}, the last checkpoint is {start}"
            )
        if records:
            records[-1]["resumed_from"] = resumed_from
            records[-1]["redone"] = records[-1]["last_logged"] - (resumed_from or 0)
        # The attempt got past its set-up (it reached its kill point or finished), so the
        # partial writes of the previous kill must have been cleaned up.
        left = [t for t in partial if (run / "checkpoints" / t).exists()]
        if left:
            failures.append(f"partial writes {left} survived the start of attempt {attempt}")
        last_logged = max(logged_iterations(run), default=first)
        if proc.returncode == 0:
            executed += iterations - first
            if killing:
                finished_early = True
            break
        if proc.returncode != -signal.SIGKILL:
            failures.append(f"attempt {attempt} failed (rc {proc.returncode}): {output[-2000:]}")
            break
        executed += max(last_logged - first, 0)
        found = audit(run)
        partial = found["temporary"]
        where = stage(run, found["temporary"])
        record = {
            "kill": len(records) + 1,
            "mode": mode,
            "pause_s": round(pause, 3),
            "started_at": first,
            "last_logged": last_logged,
            "committed": committed_iteration(run),
            "stage": where,
            "files_checked": len(found["checked"]),
            "corrupt": found["corrupt"],
            "temporary_files": found["temporary"],
        }
        records.append(record)
        say(
            f"kill {record['kill']:2d} ({mode:10s}) at iteration {last_logged:3d}, committed "
            f"{record['committed']}, {where}; {len(found['checked'])} files load"
            + (f", CORRUPT {found['corrupt']}" if found["corrupt"] else "")
        )
        attempt += 1

    identical = None
    differing: list[str] = []
    final = run / "checkpoints" / "last.safetensors"
    if final.is_file():
        differing = weights_diff(reference / "checkpoints" / "last.safetensors", final)
        identical = not differing
    rows = logged_iterations(run)
    corrupt = sum(len(r["corrupt"]) for r in records)
    redone = [r.get("redone", 0) for r in records]
    if finished_early:
        failures.append(f"the run finished after {len(records)} kills; raise --iterations")
    if len(records) < kills:
        failures.append(f"{len(records)} kills instead of {kills}")
    if corrupt:
        failures.append(f"{corrupt} corrupt checkpoint files")
    if identical is not True:
        failures.append(f"final weights differ from the reference: {differing[:5]}")
    if any(r > checkpoint_every for r in redone):
        failures.append(f"a resume redid more than {checkpoint_every} iterations: {redone}")
    if executed != iterations + sum(redone):
        failures.append(f"{executed} iterations executed != {iterations} + {sum(redone)} redone")
    if rows != list(range(1, iterations + 1)):
        failures.append("log.csv does not hold each iteration exactly once")
    leftover = audit(run)["temporary"] if (run / "checkpoints").is_dir() else []
    if leftover:
        failures.append(f"temporary files left at the end: {leftover}")
    in_write = sum(r["stage"] != "between checkpoints" for r in records)
    if kills and not in_write:
        failures.append("no kill landed inside a checkpoint write")
    stages: dict[str, int] = {}
    for r in records:
        stages[r["stage"]] = stages.get(r["stage"], 0) + 1
    import torch

    return {
        "ok": not failures,
        "failures": failures,
        "kills_requested": kills,
        "kills": len(records),
        "kills_inside_checkpoint_write": in_write,
        "stages": stages,
        "iterations": iterations,
        "checkpoint_every": checkpoint_every,
        "executed_iterations": executed,
        "redone_iterations": sum(redone),
        "max_redone_per_kill": max(redone, default=0),
        "resumes_from_last_checkpoint": f"{resumes_ok}/{resumes}",
        "fresh_starts": attempt + 1 - resumes,
        "checkpoint_files_checked": sum(r["files_checked"] for r in records),
        "corrupt": corrupt,
        "identical": identical,
        "differing_tensors": differing,
        "wall_seconds": round(time.monotonic() - started, 1),
        "train_command": shlex.join(
            ["python", *train_command(Path("RUN"), overrides, resume=True)[1:]]
        ),
        "settings": {
            "seed": seed,
            "delay_s": delay,
            "threads": threads,
            "overrides": overrides,
        },
        "platform": f"{platform.platform()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs",
        "kills_detail": records,
    }


def write_report(result: dict[str, Any], out: Path, command: str) -> None:
    """``kill_soak.json`` and ``kill_soak.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    result = {"command": command, **result}
    (out / "kill_soak.json").write_text(json.dumps(result, indent=2) + "\n")
    r = result
    lines = [
        "# Kill soak: SIGKILL during CPU training, resume, compare",
        "",
        f"Command: `{command}`  ",
        f"Each attempt: `{r['train_command']}` (`OMP_NUM_THREADS={r['settings']['threads']}`, "
        f"`FCNSEG_TEST_CHECKPOINT_DELAY={r['settings']['delay_s']}` while kills remain; the "
        "first attempt without `--resume`)  ",
        f"Platform: {r['platform']}",
        "",
        "| check | result |",
        "|---|---|",
        f"| kills (SIGKILL) | {r['kills']} of {r['kills_requested']} |",
        f"| kills inside a checkpoint write | {r['kills_inside_checkpoint_write']} |",
        f"| checkpoint files loaded after kills | {r['checkpoint_files_checked']} |",
        f"| corrupt checkpoint files | {r['corrupt']} |",
        f"| resumes from the last committed checkpoint | {r['resumes_from_last_checkpoint']} |",
        f"| run length / iterations executed | {r['iterations']} / {r['executed_iterations']} |",
        f"| iterations redone (total, max per kill; bound {r['checkpoint_every']}) | "
        f"{r['redone_iterations']}, {r['max_redone_per_kill']} |",
        f"| final weights bit-identical to an uninterrupted run | {r['identical']} |",
        f"| wall time | {r['wall_seconds']} s |",
        f"| all checks passed | {r['ok']} |",
        "",
        "Where the kills landed: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(r["stages"].items()))
        + ".",
        "",
        "Per kill: the iteration the attempt started from, the last one it logged, the committed "
        "checkpoint it left, where the next attempt resumed (its own log line), the iterations "
        "redone (last logged − resumed from) and where the kill landed (judged from the files "
        "left). Modes `rename`, `state`, `weights` aim at a stage of a checkpoint write; `random` "
        "kills at a random moment after a random iteration.",
        "",
        "| kill | mode | from | last logged | committed | resumed from | redone | stage |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for k in r["kills_detail"]:
        lines.append(
            f"| {k['kill']} | {k['mode']} | {k['started_at']} | {k['last_logged']} | "
            f"{k['committed']} | {k.get('resumed_from')} | {k.get('redone')} | {k['stage']} |"
        )
    if r["failures"]:
        lines += ["", "Failures:", "", *[f"- {f}" for f in r["failures"]]]
    (out / "kill_soak.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs (default 20)")
    parser.add_argument("--iterations", type=int, help="run length (default 4 × kills, ≥ 12)")
    parser.add_argument("--checkpoint-every", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    parser.add_argument("--delay", type=float, default=0.25, help="pause inside each write (s)")
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per attempt")
    parser.add_argument("--work", type=Path, default=Path("runs/kill_soak"), help="scratch dir")
    parser.add_argument("--out", type=Path, default=OUT, help="where kill_soak.{json,md} go")
    args = parser.parse_args()
    result = run_soak(
        kills=args.kills,
        iterations=args.iterations,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        delay=args.delay,
        work=args.work.resolve(),
        threads=args.threads,
    )
    command = shlex.join(["python", "tools/kill_soak.py", *sys.argv[1:]])
    write_report(result, args.out, command)
    print(json.dumps({k: v for k, v in result.items() if k != "kills_detail"}, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
