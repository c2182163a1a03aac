"""Effect of test-time augmentation and dense-CRF refinement on a real validation set.

    .venv/bin/python benchmarks/refinement.py runs/horse           # a trained checkpoint/run

Evaluates the checkpoint on its config's validation split plainly, with the CRF at DeepLab's
defaults and at a narrower bilateral kernel, with flip + multi-scale TTA, and with both;
writes ``docs/benchmarks/refinement.{json,md,png}`` (the four metrics, per-class IoU, seconds).
The CRF settings are not tuned on a separate split: the two widths shown are the only ones run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from common import OUT, command, machine, pyplot, write_results

from fcnseg.crf import CRFParams
from fcnseg.engine.evaluate import run_evaluation
from fcnseg.inference import InferenceOptions

TTA = {"flip": True, "scales": (0.75, 1.0, 1.25)}
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "CRF (θα = 80 px, DeepLab default)": {"crf": CRFParams()},
    "CRF (θα = 30 px)": {"crf": CRFParams(bilateral_sxy=30)},
    "TTA (flip × 0.75/1/1.25)": TTA,
    "TTA + CRF (θα = 30 px)": {**TTA, "crf": CRFParams(bilateral_sxy=30)},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint file or run directory")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--work", type=Path, default=Path("/tmp/fcnseg-refinement"))
    args = parser.parse_args()
    rows = []
    for i, (name, options) in enumerate(VARIANTS.items()):
        start = time.perf_counter()
        metrics = run_evaluation(
            args.checkpoint,
            out_dir=args.work / str(i),
            progress=False,
            options=InferenceOptions(**options),
        )
        seconds = time.perf_counter() - start
        rows.append({"variant": name, "seconds": seconds, **metrics})
        print(f"{name}: mean IU {metrics['mean_iu']:.4f} ({seconds:.0f} s)", flush=True)
    result = {
        "command": command(),
        "machine": machine(),
        "checkpoint": args.checkpoint,
        "split": rows[0].get("split"),
        "images": rows[0].get("images"),
        "rows": rows,
    }
    classes = list(rows[0]["per_class_iu"])
    base = rows[0]["mean_iu"]
    md = [
        "# Test-time augmentation and dense-CRF refinement",
        "",
        f"Command: `{result['command']}`  ",
        f"Checkpoint: `{args.checkpoint}`, {result['images']} {result['split']} images; "
        f"{machine()['threads']} CPU threads.",
        "",
        "| variant | pixel acc | mean acc | mean IU | Δ mean IU | fw IU | "
        + " | ".join(f"IoU {c}" for c in classes)
        + " | seconds |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(classes) + "---:|",
    ]
    for r in rows:
        per = " | ".join(f"{r['per_class_iu'][c]:.3f}" for c in classes)
        md.append(
            f"| {r['variant']} | {r['pixel_acc']:.3f} | {r['mean_acc']:.3f} | "
            f"{r['mean_iu']:.3f} | {r['mean_iu'] - base:+.3f} | {r['fw_iu']:.3f} | {per} | "
            f"{r['seconds']:.0f} |"
        )
    md += ["", "The CRF widths are not tuned on a held-out split (only the two shown were run)."]
    write_results(args.out, "refinement", result, md)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3))
    ax.barh([r["variant"] for r in rows], [r["mean_iu"] for r in rows], color="C0")
    ax.invert_yaxis()
    ax.set_xlabel("val mean IU")
    lo = min(r["mean_iu"] for r in rows)
    ax.set_xlim(max(0, lo - 0.1), min(1, max(r["mean_iu"] for r in rows) + 0.05))
    fig.tight_layout()
    fig.savefig(args.out / "refinement.png", dpi=120)
    print("\n".join(md))


if __name__ == "__main__":
    main()
