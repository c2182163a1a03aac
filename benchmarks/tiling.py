"""Tiled inference on a huge image: wall time and peak memory (RSS) on CPU.

Writes ``docs/benchmarks/tiling.{json,md,png}``. Run:

    .venv/bin/python benchmarks/tiling.py                 # 8192×8192, FCN-8s/ResNet-18, tile 512
    .venv/bin/python benchmarks/tiling.py --size 4096 --backbone vgg16

Each size runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own. The model has
random weights (memory and time do not depend on their values).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"


def child(size: int, backbone: str, tile: int, overlap: int) -> dict[str, float]:
    import torch

    from fcnseg.inference import InferenceOptions, Predictor
    from fcnseg.models import fcn8s

    torch.manual_seed(0)
    model = fcn8s(backbone=backbone, num_classes=11).eval()
    predictor = Predictor(model, [str(i) for i in range(11)], [[0, 0, 0]] * 11)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
    start = time.perf_counter()
    labels = predictor.predict(image, InferenceOptions(tile=tile, overlap=overlap))
    seconds = time.perf_counter() - start
    assert labels.shape == (size, size)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": size, "seconds": seconds, "peak_rss_mb": peak, "model_rss_mb": base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.backbone, args.tile, args.overlap)))
        return
    rows = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--child", str(size), "--backbone", args.backbone,
               "--tile", str(args.tile), "--overlap", str(args.overlap)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{size}²: {row['seconds']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "model": f"fcn8s/{args.backbone}, 11 classes",
        "tile": args.tile,
        "overlap": args.overlap,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tiling.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Tiled inference: time and peak memory (CPU)",
        "",
        f"Command: `{result['command']}`  ",
        f"Model: {result['model']}, tile {args.tile}, overlap {args.overlap}, random weights; "
        "each size in a fresh process (peak RSS = `ru_maxrss`, model included).",
        "",
        "| image | seconds | peak RSS (MB) | RSS after building the model (MB) |",
        "|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']}×{r['size']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['model_rss_mb']:.0f} |"
        )
    (args.out / "tiling.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    megapixels = [r["size"] ** 2 / 1e6 for r in rows]
    ax.plot(megapixels, [r["peak_rss_mb"] for r in rows], "o-", label="peak RSS (MB)")
    ax.set_xlabel("image megapixels")
    ax.set_ylabel("MB")
    ax.set_xscale("log")
    ax.set_title(f"tiled inference (tile {args.tile}): peak memory vs image size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "tiling.png", dpi=120)
    print(f"wrote {args.out}/tiling.{{json,md,png}}")


if __name__ == "__main__":
    main()
