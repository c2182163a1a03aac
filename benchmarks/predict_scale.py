"""Prediction at scale: images/s of ``fcnseg predict`` on a folder of 500+ CamVid-size images
for 1 process × 2 threads against 2 processes × 1 thread (torchrun, gloo), DataLoader workers 0
against 2, and the pipeline's efficiency: folder throughput ÷ the model's own throughput on
pre-decoded tensors at the same batch size and threads.

    .venv/bin/python benchmarks/predict_scale.py            # ~10 min on 2 cores

The folder is made from ../shared CamVid (train and val, each image and its mirror image,
saved as JPEG) under ``--work`` (runs/predict-scale; never committed). The model is an
FCN-8s/ResNet-18 with random weights (speed does not depend on them), 11 classes, predicted at
the images' own 360×480. Throughput is measured in the steady state, from the manifest's
per-image completion times (the first ``--warmup`` images, start-up and model loading
excluded). Writes docs/benchmarks/predict_scale.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from common import OUT, ROOT, command, machine, pyplot, shared_root, write_results

FCNSEG = str(Path(sys.executable).with_name("fcnseg"))
#: (processes, threads per process, DataLoader workers per process, overlays too)
CONFIGS = ((1, 2, 0, True), (1, 2, 2, True), (2, 1, 2, True), (1, 2, 0, False), (1, 2, 2, False),
           (2, 1, 0, False), (2, 1, 2, False))  # fmt: skip


def make_folder(work: Path, shared: Path, count: int) -> Path:
    from PIL import Image, ImageOps

    folder = work / "images"
    if folder.is_dir() and len(list(folder.iterdir())) >= count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((shared / "data/camvid/train").iterdir())
    sources += sorted((shared / "data/camvid/val").iterdir())
    made = 0
    for mirror in (False, True):
        for path in sources:
            if made == count:
                return folder
            image = Image.open(path).convert("RGB")
            image = ImageOps.mirror(image) if mirror else image
            image.save(folder / f"{made:05d}.jpg", quality=95)
            made += 1
    return folder


def make_model(work: Path) -> Path:
    from fcnseg.checkpoint import save_checkpoint
    from fcnseg.data.palettes import CAMVID_CLASSES, CAMVID_PALETTE
    from fcnseg.models import fcn8s

    path = work / "fcn8s_resnet18.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        net = fcn8s(backbone="resnet18", num_classes=len(CAMVID_CLASSES))
        spec = {"name": "fcn8s", "backbone": "resnet18", "num_classes": len(CAMVID_CLASSES)}
        save_checkpoint(path, net, model_spec=spec, classes=list(CAMVID_CLASSES),
                        palette=[list(c) for c in CAMVID_PALETTE], ignore_index=255)  # fmt: skip
    return path


def folder_run(model: Path, images: Path, out: Path, procs: int, threads: int, workers: int,
               overlays: bool, batch: int, warmup: int) -> dict[str, Any]:  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    run = ["predict", str(model), str(images), "-o", str(out), "--device", "cpu",
           "--no-progress", "--batch-size", str(batch), "--workers", str(workers)]  # fmt: skip
    run += [] if overlays else ["--no-overlays"]
    if procs == 1:
        argv = [FCNSEG, *run]
    else:
        launch = ["--nproc_per_node", str(procs), "--master_addr", "127.0.0.1"]
        argv = [sys.executable, "-m", "torch.distributed.run", *launch, "--master_port", "29517",
                "-m", "fcnseg", *run]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(argv, env=env, check=True, capture_output=True)
    times = []
    for file in out.glob("manifest-rank*.jsonl"):
        times += [json.loads(line)["done_at"] for line in file.read_text().splitlines()]
    times.sort()
    steady = times[warmup:]
    per_s = (len(steady) - 1) / (steady[-1] - steady[0])
    return {"procs": procs, "threads": threads, "workers": workers, "overlays": overlays,
            "images": len(times), "images_per_s": per_s}  # fmt: skip


def model_rate(model: Path, images: Path, threads: int, batch: int) -> float:
    """Images/s of the Predictor alone on pre-decoded images (one process, ``threads``)."""
    code = (
        "import sys, torch; sys.path.insert(0, 'benchmarks');"
        "from common import median, time_ms;"
        "from fcnseg.data.io import read_image;"
        "from fcnseg.inference import InferenceOptions, Predictor;"
        f"torch.set_num_threads({threads});"
        f"p = Predictor.from_checkpoint('{model}', 'cpu');"
        f"files = sorted(__import__('pathlib').Path('{images}').iterdir())[:{batch}];"
        "x = torch.stack([read_image(f) for f in files]);"
        "o = InferenceOptions(scale='native');"
        "ms = median(time_ms(lambda: p.probabilities_batch(x, o), repeats=7, warmup=2));"
        f"print({batch} / ms * 1e3)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True, env=env)  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=ROOT / "runs/predict-scale")
    p.add_argument("--shared")
    p.add_argument("--images", type=int, default=504)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--warmup", type=int, default=16)
    args = p.parse_args()
    images = make_folder(args.work, shared_root(args.shared), args.images)
    model = make_model(args.work)
    pure = {str(t): model_rate(model, images, t, args.batch) for t in (2, 1)}
    print(f"model alone: {pure['2']:.2f} img/s (2 threads), {pure['1']:.2f} (1 thread)")
    rows = []
    for procs, threads, workers, overlays in CONFIGS:
        row = folder_run(model, images, args.work / "out", procs, threads, workers, overlays,
                         args.batch, args.warmup)  # fmt: skip
        row["model_images_per_s"] = procs * pure[str(threads)]
        row["efficiency"] = row["images_per_s"] / row["model_images_per_s"]
        rows.append(row)
        print(
            f"{procs} proc × {threads} thr, workers {workers}, overlays {overlays}: "
            f"{row['images_per_s']:.2f} img/s,"
            f" efficiency {100 * row['efficiency']:.0f}%",
            flush=True,
        )
    result = {"command": command(), "machine": machine(), "images": args.images,
              "batch": args.batch, "model_alone": pure, "runs": rows}  # fmt: skip
    write_results(OUT, "predict_scale", result, markdown(result))
    plot(result, OUT / "predict_scale.png")


def markdown(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    lines = [
        "# Prediction at scale (`fcnseg predict` on a folder)", "",
        f"Command: `{result['command']}`  ",
        f"Machine: {m['cpu']}; torch {m['torch']}, Python {m['python']}", "",
        f"{result['images']} CamVid images (360×480 JPEG), FCN-8s/ResNet-18, batch "
        f"{result['batch']}, a label map per image (and an overlay where the table says so). "
        "Model alone on pre-decoded images: "
        f"{result['model_alone']['2']:.2f} images/s with 2 threads, "
        f"{result['model_alone']['1']:.2f} with 1.", "",
        "| processes × threads | workers | overlays | images/s | model alone (same threads) "
        "| efficiency |",
        "|---|---:|---|---:|---:|---:|",
    ]  # fmt: skip
    for r in result["runs"]:
        lines.append(f"| {r['procs']} × {r['threads']} | {r['workers']} | "
                     f"{'yes' if r['overlays'] else 'no'} | "
                     f"{r['images_per_s']:.2f} | {r['model_images_per_s']:.2f} | "
                     f"{100 * r['efficiency']:.0f}% |")  # fmt: skip
    return lines


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    rows = result["runs"]
    labels = [f"{r['procs']}×{r['threads']}\nw{r['workers']}\n{'+overlay' if r['overlays'] else ''}"
              for r in rows]  # fmt: skip
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.bar(range(len(rows)), [r["images_per_s"] for r in rows], label="folder (fcnseg predict)")
    ax.plot(range(len(rows)), [r["model_images_per_s"] for r in rows], "k_", ms=30,
            label="model alone, same threads")  # fmt: skip
    for i, r in enumerate(rows):
        ax.text(i, r["images_per_s"], f"{100 * r['efficiency']:.0f}%", ha="center", va="bottom")
    ax.set_xticks(range(len(rows)), labels)
    ax.set_ylabel("images/s")
    ax.legend(fontsize=8)
    ax.set_title("fcnseg predict on 500+ CamVid images, 2 cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
