"""CamVid on a CPU budget: each recipe choice measured on the same wall-clock budget, through
the product (``fcnseg train`` with a shipped config and ``--set`` overrides, then
``fcnseg eval`` of the final checkpoint on CamVid val).

    .venv/bin/python benchmarks/camvid_ablation.py                     # 60 min per variant
    .venv/bin/python benchmarks/camvid_ablation.py --budget 8 --variants fp32,bf16,bf16-sqrt-mf

Same budget, not the same iterations: a faster variant (bf16) trains for more. For every
distinct speed (precision, input size, batch) a short probe run measures seconds per iteration
(from its ``log.csv``, start-up excluded) and the fixed cost of a run (start-up and the final
evaluation); each variant then gets ``iterations = (budget − fixed cost) / s per iteration``, so
its whole ``fcnseg train`` process fits the budget. The wall time reported is that process's.

Writes docs/benchmarks/camvid-cpu-ablation.{json,md,png} (``--out``; ``--stem``): one row per
variant with the overrides, iterations, images/s, wall time, the four metrics and per-class IoU.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from camvid import run_config
from common import OUT, command, machine, pyplot, write_results

BASE = "fcn8s-atonce_vgg16_camvid-180x240_cpu60"

#: name → (what it tests, overrides on BASE). BASE itself is bf16 + sqrt median frequency.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "fp32": ("fp32 (no autocast), median frequency: the 30-minute recipe",
             ["train.amp=null", "train.class_weights=median_frequency"]),
    "bf16": ("bf16 autocast, median frequency", ["train.class_weights=median_frequency"]),
    "bf16-sqrt-mf": ("bf16, square root of median frequency (the shipped config)", []),
    "bf16-no-weights": ("bf16, no class weights", ["train.class_weights=null"]),
    "bf16-sgd": ("bf16, sqrt median frequency, the paper's SGD + momentum 0.9 (lr 1e-3)",
                 ["train.optimizer=sgd", "train.lr=1.0e-3", "train.momentum=0.9"]),
    "bf16-full-res": ("bf16, sqrt median frequency, at 360×480 (full resolution)",
                      ["data.resize=[360, 480]", "data.crop_size=[360, 480]"]),
}  # fmt: skip
#: Override keys that change the cost of an iteration (variants differing only elsewhere share
#: one probe).
SPEED_KEYS = ("train.amp", "data.resize", "data.crop_size", "data.batch_size", "model.")
PROBE_ITERATIONS = 10


def _speed_key(overrides: list[str]) -> str:
    return ";".join(sorted(o for o in overrides if o.startswith(SPEED_KEYS))) or "base"


def _log_rows(run: Path) -> list[dict[str, str]]:
    with (run / "log.csv").open() as f:
        return list(csv.DictReader(f))


def probe(base: str, overrides: list[str], runs: Path) -> dict[str, float]:
    """Seconds per iteration (iterations 4 → 10) and the fixed cost of one ``fcnseg train``."""
    run = runs / "probe"  # removed once measured
    shutil.rmtree(run, ignore_errors=True)
    sets = [
        *overrides,
        f"train.iterations={PROBE_ITERATIONS}",
        "train.log_every=1",
        f"train.eval_every={PROBE_ITERATIONS}",
        f"train.checkpoint_every={PROBE_ITERATIONS}",
    ]
    argv = [sys.executable, "-m", "fcnseg", "train", base, "-o", str(run), "--no-progress",
            *[x for o in sets for x in ("--set", o)]]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    wall = time.perf_counter() - start
    seconds = {int(r["iteration"]): float(r["seconds"]) for r in _log_rows(run) if r["seconds"]}
    per_it = (seconds[PROBE_ITERATIONS] - seconds[4]) / (PROBE_ITERATIONS - 4)
    shutil.rmtree(run, ignore_errors=True)
    return {"s_per_iteration": per_it, "fixed_s": wall - PROBE_ITERATIONS * per_it}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="minutes per variant (60)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, of {', '.join(VARIANTS)}")  # fmt: skip
    parser.add_argument("--base", default=BASE, help=f"shipped config (default {BASE})")
    parser.add_argument("--out", type=Path, default=OUT, help=f"results folder ({OUT})")
    parser.add_argument("--stem", default="camvid-cpu-ablation", help="results file name")
    parser.add_argument("--runs", type=Path, default=Path("runs/camvid-ablation"),
                        help="run folders (default runs/camvid-ablation, git-ignored)")  # fmt: skip
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the .md and .png from the existing .json, running nothing",
    )
    args = parser.parse_args()
    if args.report_only:
        result = json.loads((args.out / f"{args.stem}.json").read_text())
        args.budget, args.base = result["budget_min"], result["base"]
        _write(args, result["variants"], result["command"])
        return
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"camvid_ablation: unknown variant(s) {unknown}; choose from "
                         f"{list(VARIANTS)}")  # fmt: skip
    runs = args.runs.resolve()
    runs.mkdir(parents=True, exist_ok=True)
    budget_s = args.budget * 60
    speeds: dict[str, dict[str, float]] = {}
    rows: dict[str, Any] = {}
    for name in names:
        what, overrides = VARIANTS[name]
        key = _speed_key(overrides)
        if key not in speeds:
            print(f"== probe {key}", flush=True)
            speeds[key] = probe(args.base, overrides, runs)
        speed = speeds[key]
        iterations = int((budget_s - speed["fixed_s"]) / speed["s_per_iteration"])
        sets = [*overrides, f"train.iterations={iterations}", f"train.eval_every={iterations}",
                f"train.checkpoint_every={iterations}"]  # fmt: skip
        print(f"== {name}: {iterations} iterations ({speed['s_per_iteration']:.2f} s each)",
              flush=True)  # fmt: skip
        result = run_config(args.base, runs / name, sets)  # in runs/<variant>/<base>
        batch = _batch_size(runs / name / args.base)
        rows[name] = {"what": what, "overrides": overrides, "probe": speed,
                      "images_per_s": batch / speed["s_per_iteration"], **result}  # fmt: skip
        _write(args, rows)  # after every variant: a cut run keeps what it measured


def _batch_size(run: Path) -> int:
    import yaml

    return int(yaml.safe_load((run / "config.yaml").read_text())["data"]["batch_size"])


def _write(args: argparse.Namespace, rows: dict[str, Any], cmd: str | None = None) -> None:
    result = {"command": cmd or command(), "machine": machine(), "base": args.base,
              "budget_min": args.budget, "variants": rows}  # fmt: skip
    write_results(args.out, args.stem, result, _markdown(result))
    _plot(rows, args.out / f"{args.stem}.png", args.budget)


def _markdown(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    rows = result["variants"]
    lines = [
        f"# CamVid on a CPU budget — {result['budget_min']:g} min per variant",
        "",
        f"Command: `{result['command']}`. Base config `{result['base']}` "
        f"(fcnseg/configs/), each variant its `--set` overrides; {m['cpu']}, "
        f"{m['threads']} threads, torch {m['torch']}. Each variant's iterations are sized from "
        "a 10-iteration probe of its speed so that its `fcnseg train` process (start-up, "
        "training, the final evaluation) takes the budget; the wall column is what it took "
        "(a long run's steps are a little slower than the probe's). Val metrics from "
        "`fcnseg eval` of the final checkpoint (CamVid val, 101 images, at the config's "
        "180×240 unless the variant changes it). images/s: training images per second from "
        "the probe.",
        "",
        "| variant | what | iterations | images/s | train wall | pixel acc | mean acc | "
        "mean IU | fw IU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        x = r["metrics"]
        lines.append(
            f"| `{name}` | {r['what']} | {r['iterations']} | {r['images_per_s']:.2f} | "
            f"{r['train_wall_s'] / 60:.1f} min | {x['pixel_acc']:.3f} | {x['mean_acc']:.3f} | "
            f"**{x['mean_iu']:.3f}** | {x['fw_iu']:.3f} |"
        )
    classes = list(next(iter(rows.values()))["metrics"]["per_class_iu"]) if rows else []
    lines += ["", "Per-class IoU:", "", "| variant | " + " | ".join(classes) + " |",
              "|---|" + "---:|" * len(classes)]  # fmt: skip
    for name, r in rows.items():
        iu = r["metrics"]["per_class_iu"]
        cells = ["n/a" if iu[c] is None else f"{iu[c]:.3f}" for c in classes]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += ["", "Overrides per variant:", ""]
    lines += [f"- `{n}`: `{' '.join(r['overrides']) or '(none)'}`" for n, r in rows.items()]
    return lines


def _plot(rows: dict[str, Any], path: Path, budget: float) -> None:
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2))
    names = list(rows)
    ax.barh(names, [rows[n]["metrics"]["mean_iu"] for n in names], color="tab:blue")
    ax.set_xlabel("val mean IU")
    ax.set_title(f"CamVid val, {budget:g} min of `fcnseg train` each")
    ax.invert_yaxis()
    for i, n in enumerate(names):
        ax.text(rows[n]["metrics"]["mean_iu"], i, f" {rows[n]['metrics']['mean_iu']:.3f}",
                va="center")  # fmt: skip
    for n in names:
        curve = [(c["iteration"], c["loss"]) for c in rows[n]["curve"] if "loss" in c]
        bx.plot([c[0] for c in curve], [c[1] for c in curve], label=n, lw=1)
    bx.set_xlabel("iteration")
    bx.set_ylabel("training loss")
    bx.set_yscale("log")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
