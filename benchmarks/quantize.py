"""Deployment speed past fp32: the machine's fp32/bf16/int8 peaks, FCN-8s (VGG16, ResNet-18) at
500×500 and 360×480, batch 1 and 4, in every engine and precision, and the accuracy cost of
bf16 and int8 on CamVid val and Weizmann Horse val, all in one run.

    .venv/bin/python benchmarks/quantize.py            # everything (~30 min on 2 cores)
    .venv/bin/python benchmarks/quantize.py --quick    # VGG16 500×500 batch 1, no accuracy

Needs the optional engines to compare (``pip install -e '.[engines]'``: openvino, nncf,
torchao; an engine that is not installed, or cannot take the model, is recorded as such) and
two trained runs, made with the product:

    fcnseg train fcn8s-atonce_vgg16_camvid-180x240_cpu30          # → runs/fcn8s-atonce_…_cpu30
    fcnseg train fcn8s_vgg16_horse -o runs/horse15 --set train.iterations=240   # (horse.sh)

Every model file is made by ``fcnseg export`` (float, and ``--quantize int8 --calibrate`` on
training images: CamVid train, Horse's training images); accuracy is ``fcnseg eval`` of the
checkpoint at ``--precision fp32``/``bf16`` and of the int8 file. Each timing and each peak runs
in a process of its own (benchmarks/quantize_probe.py). Writes docs/benchmarks/quantize.{json,md}
and quantize.png; model files go to ``--work`` (runs/quantize-bench).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import OUT, ROOT, command, machine, shared_root, write_results
from quantize_report import markdown, plot

FCNSEG = str(Path(sys.executable).with_name("fcnseg"))
PROBE = Path(__file__).with_name("quantize_probe.py")
ENGINES = ("torch-fp32", "compile-fp32", "ort-fp32", "openvino-fp32", "torch-bf16",
           "compile-bf16", "openvino-bf16", "ort-int8", "openvino-int8", "openvino-nncf-int8",
           "torchao-int8")  # fmt: skip
PEAKS = ("conv-fp32-torch", "conv-fp32-ort", "conv-fp32-openvino", "gemm-fp32-torch",
         "conv-bf16-torch", "conv-bf16-openvino", "gemm-bf16-torch", "conv-int8-ort",
         "conv-int8-openvino", "gemm-int8-torch")  # fmt: skip
SIZES = ("500x500", "360x480")
SECTIONS = ("peaks", "speed", "agreement", "accuracy")


def fcnseg(*args: str) -> None:
    print("$ fcnseg " + " ".join(args), flush=True)
    subprocess.run([FCNSEG, *args], check=True)


def probe(*args: str, threads: int, work: Path) -> dict[str, Any]:
    argv = [sys.executable, str(PROBE), *args, "--threads", str(threads), "--work", str(work)]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT / "benchmarks")
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"args": list(args), "error": f"process failed: {tail[0][:300]}"}


def prepare(args: argparse.Namespace, shared: Path) -> dict[str, Any]:
    """Checkpoints, float and int8 exports, NNCF's model, the calibration inputs, peak layers."""
    from fcnseg.checkpoint import load_checkpoint, save_checkpoint
    from fcnseg.export import read_onnx_metadata
    from fcnseg.models import fcn8s
    from fcnseg.quantize import calibration_files, calibration_inputs

    models = args.work / "models"
    models.mkdir(parents=True, exist_ok=True)
    camvid = load_checkpoint(args.camvid_run)
    vgg = models / "vgg16.safetensors"
    if not vgg.exists():
        vgg.symlink_to(Path(camvid.path).resolve())
    resnet = models / "resnet18.safetensors"
    if not resnet.exists():  # speed does not depend on the weights' values: random, 11 classes
        torch.manual_seed(0)
        net = fcn8s(backbone="resnet18", num_classes=len(camvid.classes))
        spec = {"name": "fcn8s", "backbone": "resnet18", "num_classes": len(camvid.classes)}
        save_checkpoint(resnet, net, model_spec=spec, classes=list(camvid.classes),
                        palette=camvid.palette, ignore_index=camvid.ignore_index)  # fmt: skip
    horse_train = horse_training_images(args.work, shared)
    calibration = {"vgg16": shared / "data/camvid/train", "resnet18": shared / "data/camvid/train",
                   "horse": horse_train}  # fmt: skip
    sources = {"vgg16": vgg, "resnet18": resnet, "horse": Path(args.horse_run)}
    record: dict[str, Any] = {}
    for name, source in sources.items():
        fp32, int8 = models / f"{name}-fp32.onnx", models / f"{name}-int8.onnx"
        if not fp32.exists():
            fcnseg("export", str(source), "-o", str(fp32))
        if not int8.exists():
            start = time.perf_counter()
            cal = ["--calibrate", str(calibration[name]), "--calibration-images", "32"]
            fcnseg("export", str(source), "--quantize", "int8", *cal, "-o", str(int8))
            record[f"{name}_ort_quantize_s"] = time.perf_counter() - start
        record[f"{name}_int8_calibration"] = read_onnx_metadata(int8)["calibration"]
    meta = read_onnx_metadata(models / "vgg16-fp32.onnx")
    inputs = calibration_inputs(calibration_files(calibration["vgg16"], 32), meta)
    np.savez(args.work / "calibration.npz", *inputs)
    record.update(nncf_models(models, ("vgg16", "resnet18"), inputs))
    peak_layers(args.work / "peak")
    return record


def horse_training_images(work: Path, shared: Path) -> Path:
    """A folder of links to the Horse images the shipped config trains on (every 5th image by
    name is validation: those are left out of calibration)."""
    folder = work / "horse-train-images"
    folder.mkdir(parents=True, exist_ok=True)
    images = sorted((shared / "data/weizmann-horse/images").iterdir())
    for i, image in enumerate(images):
        link = folder / image.name
        if i % 5 and not link.exists():
            link.symlink_to(image.resolve())
    return folder


def nncf_models(models: Path, names: tuple[str, ...], inputs: list[np.ndarray]) -> dict:
    """OpenVINO IR models quantized by NNCF (default preset) on the same calibration inputs."""
    try:
        import nncf
        import openvino
    except ImportError as err:
        return {"nncf": f"not installed ({err})"}
    record = {}
    for name in names:
        out = models / f"{name}-nncf.xml"
        if out.exists():
            continue
        start = time.perf_counter()
        model = openvino.Core().read_model(str(models / f"{name}-fp32.onnx"))
        quantized = nncf.quantize(model, nncf.Dataset(inputs), subset_size=len(inputs))
        openvino.save_model(quantized, str(out))
        record[f"{name}_nncf_quantize_s"] = time.perf_counter() - start
    return record


def peak_layers(folder: Path) -> None:
    """The peak probe's convolution as fp32 ONNX and as ONNX Runtime's int8 QDQ (per channel,
    calibrated on random activations: speed does not depend on the values)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from quantize_probe import PEAK_CONV

    folder.mkdir(parents=True, exist_ok=True)
    fp32, int8 = folder / "conv-fp32.onnx", folder / "conv-int8.onnx"
    if int8.exists():
        return
    c, s, b = PEAK_CONV["channels"], PEAK_CONV["size"], PEAK_CONV["batch"]
    conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).eval()
    x = torch.randn(b, c, s, s)
    torch.onnx.export(conv, (x,), str(fp32), input_names=["x"], dynamo=False)
    feed = iter([{"x": torch.randn(b, c, s, s).numpy()} for _ in range(2)])

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict | None:
            return next(feed, None)

    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)  # fmt: skip


def gflops(work: Path, model: str, size: str) -> float:
    """GFLOPs per image (2 per multiply-add, ``torch.utils.flop_counter``)."""
    from torch.utils.flop_counter import FlopCounterMode

    from fcnseg.checkpoint import load_checkpoint

    net = load_checkpoint(work / "models" / f"{model}.safetensors").build_model().eval()
    h, w = (int(v) for v in size.split("x"))
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(torch.randn(1, 3, h, w))
    return counter.get_total_flops() / 1e9


def accuracy(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``fcnseg eval`` of each run at fp32 and bf16, and of its int8 export, on val."""
    rows = []
    for data, run, int8 in (("CamVid", args.camvid_run, "vgg16-int8.onnx"),
                            ("Horse", args.horse_run, "horse-int8.onnx")):  # fmt: skip
        for precision, source in (("fp32", run), ("bf16", run),
                                  ("int8", args.work / "models" / int8)):  # fmt: skip
            out = args.work / "eval" / f"{data.lower()}-{precision}"
            flags = [] if precision == "int8" else ["--precision", precision]
            start = time.perf_counter()
            fcnseg("eval", str(source), "-o", str(out), "--no-progress", *flags)
            metrics = json.loads((out / "metrics.json").read_text())
            rows.append({
                "data": data, "precision": precision, "source": str(source),
                "eval_s": time.perf_counter() - start,
                **{k: metrics[k] for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu",
                                           "per_class_iu", "precision")},
            })  # fmt: skip
            print(f"{data} {precision}: mean IU {metrics['mean_iu']:.4f}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    camvid = ROOT / "runs/fcn8s-atonce_vgg16_camvid-180x240_cpu30"
    p.add_argument("--camvid-run", default=str(camvid))
    p.add_argument("--horse-run", default=str(ROOT / "runs/horse15"))
    p.add_argument("--work", type=Path, default=ROOT / "runs/quantize-bench")
    p.add_argument("--shared", help="the shared data folder (default ../shared)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help="measure only these (the others are kept from the last run's JSON)",
    )
    args = p.parse_args()
    for run in (args.camvid_run, args.horse_run):
        if not Path(run).exists():
            raise SystemExit(f"{run} does not exist: train it first (see this script's docstring)")
    torch.set_num_threads(args.threads)
    name = "quantize-quick" if args.quick else "quantize"
    shared = shared_root(args.shared)
    sections = args.sections.split(",")
    result: dict[str, Any] = {}
    if sections != list(SECTIONS):  # a part again: the other sections stay as last measured
        result = json.loads((OUT / f"{name}.json").read_text())
    else:
        result.update(command=command(), machine=machine())
    result.setdefault("commands", {}).update({s: command() for s in sections})
    result["prepare"] = {**result.get("prepare", {}), **prepare(args, shared)}
    if "peaks" in sections:
        result["peaks"] = [probe("peak", "--probe", p, threads=args.threads, work=args.work)
                           for p in PEAKS]  # fmt: skip
        for row in result["peaks"]:
            print(f"peak {row.get('probe')}: {row.get('flops_per_s', 0) / 1e9:.0f} GFLOP/s")
    if "speed" in sections:
        result["speed"] = speed(args)
    if "agreement" in sections:
        result["agreement"] = [
            probe("agree", "--engine", e, "--model", "vgg16", "--shared", str(shared),
                  threads=args.threads, work=args.work)
            for e in ENGINES if e != "torch-fp32"
        ]  # fmt: skip
        for row in result["agreement"]:
            print(f"agreement {row.get('engine')}: {row.get('agreement', row.get('error'))}")
    if "accuracy" in sections:
        result["accuracy"] = [] if args.quick else accuracy(args)
    write_results(OUT, name, result, markdown(result))
    plot(result, OUT / f"{name}.png")
    print(f"wrote {OUT / name}.{{json,md,png}}")


def speed(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    shapes = [("vgg16", "500x500", 1)] if args.quick else [
        (m, s, b) for m in ("vgg16", "resnet18") for s in SIZES for b in (1, 4)]  # fmt: skip
    for model, size, batch in shapes:
        f = gflops(args.work, model, size)
        for engine in ENGINES:
            if engine == "torchao-int8" and (size, batch) != ("500x500", 1):
                continue  # tried once per model: it either compiles FCN-8s or it does not
            row = probe("time", "--engine", engine, "--model", model, "--size", size, "--batch",
                        str(batch), "--repeats", str(args.repeats), threads=args.threads,
                        work=args.work)  # fmt: skip
            row.update(gflops_per_image=f, model=model, size=size, batch=batch, engine=engine)
            rows.append(row)
            shown = f"{row['ms']:8.1f} ms" if "ms" in row else row["error"][:100]
            print(f"{model} {size} b{batch} {engine:20s} {shown}", flush=True)
    return rows


if __name__ == "__main__":
    main()
