"""CamVid accuracy through the product: each shipped config trained with ``fcnseg train`` and
evaluated with ``fcnseg eval`` on CamVid val (11 classes, void ignored).

    .venv/bin/python benchmarks/camvid.py --preset cpu      # ~30 min on 2 CPU threads
    .venv/bin/python benchmarks/camvid.py --preset cpu60    # ~60 min on 2 CPU threads
    .venv/bin/python benchmarks/camvid.py --preset gpu      # one CUDA GPU: 32s → 16s → 8s, at-once
    .venv/bin/python benchmarks/camvid.py --preset smoke    # a minute: checks the pipeline runs

Every figure this writes is what a user gets from the same two commands (printed in the
report). Wall time per model is that of the ``fcnseg train`` process: start-up, decoding,
training, the periodic evaluations and checkpoints. Runs go to ``runs/<config>`` (``--runs``;
``$FCNSEG_RUNS`` for the staged configs' ``init_from``), evaluations to
``runs/<config>/eval-val``.

Writes ``docs/benchmarks/camvid-<preset>.{json,md}`` and per model ``…_curves.png``,
``…_confusion.png``, ``…_panels.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import OUT, command, machine, write_results

PRESETS = {
    "cpu": ["fcn8s-atonce_vgg16_camvid-180x240_cpu30"],
    "cpu60": ["fcn8s-atonce_vgg16_camvid-180x240_cpu60"],
    "gpu": [
        "fcn32s_vgg16_camvid-360x480_gpu",
        "fcn16s_vgg16_camvid-360x480_gpu",
        "fcn8s_vgg16_camvid-360x480_gpu",
        "fcn8s-atonce_vgg16_camvid-360x480_gpu",
    ],
}
#: The smoke preset: every shipped config, tiny (2 iterations at 60×80 on the CPU, fp32).
PRESETS["smoke"] = PRESETS["cpu"] + PRESETS["cpu60"] + PRESETS["gpu"]
SMOKE = [
    "train.iterations=2", "train.eval_every=2", "train.checkpoint_every=2", "train.amp=null",
    "train.device=cpu", "data.resize=[60, 80]", "data.crop_size=[60, 80]", "data.batch_size=2",
]  # fmt: skip


def fcnseg(*args: str) -> tuple[float, str]:
    """Run the ``fcnseg`` command line in a fresh process; (wall seconds, the command)."""
    argv = [sys.executable, "-m", "fcnseg", *args]
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - start, shlex.join(["fcnseg", *args])


def run_config(name: str, runs: Path, overrides: list[str]) -> dict[str, Any]:
    """Train ``name`` with ``fcnseg train`` and evaluate its final checkpoint on val."""
    run = runs / name
    if run.exists():
        shutil.rmtree(run)
    sets = [x for o in overrides for x in ("--set", o)]
    train_s, train_cmd = fcnseg("train", name, "-o", str(run), "--no-progress", *sets)
    eval_dir = run / "eval-val"
    # The final model (not the best of the periodic evaluations: no selection on val).
    last = str(run / "checkpoints" / "last.safetensors")
    eval_s, eval_cmd = fcnseg("eval", last, "-o", str(eval_dir), "--save-panels", "4",
                              "--no-progress")  # fmt: skip
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    with (run / "log.csv").open() as f:
        header, *rows = [line.strip().split(",") for line in f if line.strip()]
    curve = [{k: float(v) for k, v in zip(header, r, strict=True) if v} for r in rows]
    return {
        "commands": [train_cmd, eval_cmd],
        "train_wall_s": train_s,
        "eval_wall_s": eval_s,
        "iterations": int(json.loads((run / "metrics.json").read_text())["iteration"]),
        "metrics": metrics,
        "curve": curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True)
    parser.add_argument(
        "--out", type=Path, help=f"results folder (default {OUT}; smoke: a temp dir)"
    )
    parser.add_argument("--runs", type=Path, default=Path("runs"),
                        help="run directories (default runs/, git-ignored)")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra override for every config")  # fmt: skip
    args = parser.parse_args()
    start = time.perf_counter()
    stem = f"camvid-{args.preset}"
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="camvid-smoke-")) if args.preset == "smoke" else OUT
    runs = (args.out / "runs" if args.preset == "smoke" else args.runs).resolve()
    os.environ["FCNSEG_RUNS"] = str(runs)  # where the staged configs find their parents
    overrides = (SMOKE if args.preset == "smoke" else []) + args.set
    models: dict[str, Any] = {}
    for name in PRESETS[args.preset]:
        print(f"== {name}", flush=True)
        models[name] = run_config(name, runs, overrides)
        for kind, src in (("curves", "curves.png"), ("confusion", "eval-val/confusion.png"),
                          ("panels", "eval-val/panels.png")):  # fmt: skip
            shutil.copy(runs / name / src, args.out / f"{stem}_{name}_{kind}.png")
    result = {
        "command": command(),
        "machine": machine(),
        "preset": args.preset,
        "overrides": overrides,
        "wall_s": time.perf_counter() - start,
        "models": models,
    }
    write_results(args.out, stem, result, _markdown(result, stem))
    print(json.dumps({k: round(v["metrics"]["mean_iu"], 4) for k, v in models.items()}))


def _markdown(result: dict[str, Any], stem: str) -> list[str]:
    m = result["machine"]
    hw = m.get("gpu") or f"{m['cpu']} ({m['threads']} threads)"
    lines = [
        f"# CamVid — {result['preset']} preset",
        "",
        f"Command: `{result['command']}`, which runs for each model:",
        "",
        *[f"    {c}" for r in result["models"].values() for c in r["commands"]],
        "",
        f"Hardware: {hw}; torch {m['torch']}. Overrides: {result['overrides'] or 'none'}. "
        f"Whole script: **{result['wall_s'] / 60:.1f} min**. Recipe: the configs' comments "
        "(`fcnseg/configs/`).",
        "",
        "| config | iterations | `fcnseg train` wall | pixel acc | mean acc | mean IU | fw IU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["models"].items():
        x = r["metrics"]
        lines.append(
            f"| `{name}` | {r['iterations']} | {r['train_wall_s'] / 60:.1f} min | "
            f"{x['pixel_acc']:.3f} | {x['mean_acc']:.3f} | **{x['mean_iu']:.3f}** | "
            f"{x['fw_iu']:.3f} |"
        )
    for name, r in result["models"].items():
        iu = r["metrics"]["per_class_iu"]
        lines += ["", f"Per-class IoU, `{name}`:", "", "| " + " | ".join(iu) + " |",
                  "|" + "---:|" * len(iu),
                  "| " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in iu.values())
                  + " |"]  # fmt: skip
    lines += ["", f"Curves, confusion matrices and panels: `{stem}_<config>_*.png`."]
    return lines


if __name__ == "__main__":
    main()
