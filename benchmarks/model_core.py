"""Model-core figures: parameter counts of every builder × backbone, and forward time at 500×500.

Writes ``docs/benchmarks/model_core.{json,md,png}``. Run:

    .venv/bin/python benchmarks/model_core.py            # full: every fcn8s backbone timed
    .venv/bin/python benchmarks/model_core.py --quick    # vgg16 exact vs caffe only

Timing: eval mode under ``torch.inference_mode``, batch 1, random weights (speed does not depend
on their values), 1 warm-up then the median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from common import OUT, machine

from fcnseg.models import BACKBONES, FCNS


def param_counts(num_classes: int) -> list[dict[str, object]]:
    rows = []
    with torch.device("meta"):  # shapes only: no memory, no init cost
        for backbone in BACKBONES:
            for name, build in FCNS.items():
                model = build(backbone=backbone, num_classes=num_classes)
                rows.append(
                    {
                        "model": name,
                        "backbone": backbone,
                        "params": sum(p.numel() for p in model.parameters()),
                    }
                )
    return rows


def forward_ms(model: torch.nn.Module, size: int, repeats: int) -> list[float]:
    x = torch.randn(1, 3, size, size)
    times = []
    with torch.inference_mode():
        model(x)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="time fcn8s/vgg16 only")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    params = param_counts(21)
    cases = [("vgg16", "exact"), ("vgg16", "caffe")]
    if not args.quick:
        cases += [(b, "exact") for b in BACKBONES if b != "vgg16"]
    timings = []
    for backbone, mode in cases:
        model = FCNS["fcn8s"](backbone=backbone, num_classes=21, mode=mode).eval()
        ms = forward_ms(model, args.size, args.repeats)
        row = {
            "model": "fcn8s",
            "backbone": backbone,
            "mode": mode,
            "size": args.size,
            "median_ms": statistics.median(ms),
            "runs_ms": ms,
        }
        timings.append(row)
        print(f"fcn8s/{backbone} {mode} {args.size}²: {row['median_ms']:.0f} ms", flush=True)
        del model
    exact = next(t["median_ms"] for t in timings if t["mode"] == "exact")
    caffe = next(t["median_ms"] for t in timings if t["mode"] == "caffe")
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "params_21_classes": params,
        "forward": timings,
        "caffe_over_exact": caffe / exact,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_core.json").write_text(json.dumps(result, indent=2) + "\n")

    lines = [
        "# Model core: parameters and forward time",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']['cpu']}, {result['machine']['threads']} threads, "
        f"torch {result['machine']['torch']}",
        "",
        "## Parameters (21 classes)",
        "",
        "| backbone | fcn32s | fcn16s | fcn8s |",
        "|---|---:|---:|---:|",
    ]
    for backbone in BACKBONES:
        counts = {r["model"]: r["params"] for r in params if r["backbone"] == backbone}
        lines.append(
            f"| {backbone} | {counts['fcn32s']:,} | {counts['fcn16s']:,} | {counts['fcn8s']:,} |"
        )
    lines += [
        "",
        f"## Forward time, batch 1, {args.size}×{args.size}, CPU (median of {args.repeats})",
        "",
        "| model | backbone | mode | median ms |",
        "|---|---|---|---:|",
    ]
    for t in timings:
        lines.append(f"| fcn8s | {t['backbone']} | {t['mode']} | {t['median_ms']:.0f} |")
    lines += ["", f"Caffe mode (pad 100) / exact mode time: **{result['caffe_over_exact']:.2f}×**"]
    (args.out / "model_core.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [f"{t['backbone']}\n{t['mode']}" for t in timings]
    ax.bar(labels, [t["median_ms"] for t in timings], color="#4c72b0")
    ax.set_ylabel("ms (median)")
    ax.set_title(f"fcn8s forward, batch 1, {args.size}×{args.size}, CPU")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "model_core.png", dpi=120)
    print(f"wrote {args.out}/model_core.{{json,md,png}}")


if __name__ == "__main__":
    main()
