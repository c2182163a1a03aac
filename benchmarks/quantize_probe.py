"""One measurement of benchmarks/quantize.py, in a process of its own (so that no engine's
threads, caches or compiled code colour another's), printed as one JSON line.

    python benchmarks/quantize_probe.py peak --probe conv-int8-ort --work DIR
    python benchmarks/quantize_probe.py time --engine ort-int8 --model vgg16 --size 500x500 \
        --batch 1 --work DIR

Every engine is timed through :meth:`fcnseg.inference.Predictor.probabilities_batch` at the
images' own size (normalisation, the network, softmax): the checkpoint's network eager
(``torch-fp32``; ``torch-bf16``: bf16 weights under autocast) or compiled (``compile-*``:
:meth:`fcnseg.inference.Predictor.compile`); the exported ONNX files in ONNX Runtime
(``ort-*``: fcnseg's own ONNX runner) and in OpenVINO (``openvino-*``: the same files;
``openvino-nncf-int8``: the float file quantized by NNCF instead); torchao's PT2E x86
quantizer under inductor (``torchao-int8``). Times are medians of ``--repeats`` calls after
warm-up calls (the first of which compiles, where an engine compiles).
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import median, time_ms

#: The conv peak layer: 3×3, 256→256 channels, 128×128, batch 4 (as benchmarks/speed.py).
PEAK_CONV = {"channels": 256, "size": 128, "batch": 4}
#: GEMM peak: n×n by n×n.
PEAK_GEMM = 2048


class OpenVinoModel:
    """An ONNX or OpenVINO IR file compiled by OpenVINO for the CPU, behind the model
    interface :func:`fcnseg.forward.forward` calls (``preprocess`` and ``__call__``)."""

    def __init__(self, path: Path, precision: str, preprocess: Any, threads: int) -> None:
        import openvino

        hint = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}[precision]
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": hint,  # int8: what stays float stays fp32
        }
        self.compiled = openvino.Core().compile_model(str(path), "CPU", config)
        self.preprocess = preprocess

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.compiled(x.float().numpy())[0])


def conv_flops() -> int:
    c, s, b = PEAK_CONV["channels"], PEAK_CONV["size"], PEAK_CONV["batch"]
    return 2 * c * c * 9 * s * s * b


def peak(probe: str, work: Path, threads: int) -> dict[str, Any]:
    """FLOP/s (multiply-adds × 2, int8 included) of one peak probe."""
    kind, precision, engine = probe.split("-")
    c, s, b = PEAK_CONV["channels"], PEAK_CONV["size"], PEAK_CONV["batch"]
    if kind == "gemm":
        n = PEAK_GEMM
        if precision == "int8":  # int8 × int8 → int32, oneDNN's VNNI kernel
            a = torch.randint(-128, 127, (n, n), dtype=torch.int8)
            w = torch.randint(-128, 127, (n, n), dtype=torch.int8)
            fn = lambda: torch._int_mm(a, w)  # noqa: E731
        else:
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            a, w = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            fn = lambda: a @ w  # noqa: E731
        flops = 2 * n**3
    elif engine == "torch":
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(dtype=dtype)
        conv = conv.to(memory_format=torch.channels_last).eval()
        x = torch.randn(b, c, s, s, dtype=dtype).contiguous(memory_format=torch.channels_last)
        fn = lambda: conv(x)  # noqa: E731
        flops = conv_flops()
    else:
        file = work / "peak" / ("conv-int8.onnx" if precision == "int8" else "conv-fp32.onnx")
        x = np.random.default_rng(0).standard_normal((b, c, s, s)).astype(np.float32)
        if engine == "ort":
            import onnxruntime

            session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
            fn = lambda: session.run(None, {"x": x})  # noqa: E731
        else:
            model = OpenVinoModel(file, precision, None, threads)
            fn = lambda: model.compiled(x)  # noqa: E731
        flops = conv_flops()
    with torch.inference_mode():
        ms = median(time_ms(fn, repeats=7, warmup=2))
    return {"probe": probe, "precision": precision, "ms": ms, "flops_per_s": flops / ms * 1e3}


def load(engine: str, model: str, work: Path, size: tuple[int, int], threads: int) -> Any:
    """The model under test as a :class:`fcnseg.inference.Predictor` (fcnseg's engines as
    ``fcnseg predict`` loads them; the others wrapped in one, so every engine is timed through
    the same path)."""
    from fcnseg.inference import Predictor

    ckpt = work / "models" / f"{model}.safetensors"
    onnx = work / "models" / f"{model}-fp32.onnx"
    int8 = work / "models" / f"{model}-int8.onnx"
    if engine.startswith(("torch-", "compile-")):
        amp = "bf16" if engine.endswith("-bf16") else None
        predictor = Predictor.from_checkpoint(ckpt, "cpu", amp=amp)
        return predictor.compile() if engine.startswith("compile-") else predictor
    if engine.startswith("ort-"):
        return Predictor.from_onnx(onnx if engine == "ort-fp32" else int8)
    reference = Predictor.from_onnx(onnx)
    if engine.startswith("openvino-"):
        precision = engine.rsplit("-", 1)[1]
        file = {"openvino-int8": int8, "openvino-nncf-int8": work / "models" / f"{model}-nncf.xml"}
        net = OpenVinoModel(file.get(engine, onnx), precision, reference.model.preprocess, threads)
    elif engine == "torchao-int8":
        net = torchao_int8(Predictor.from_checkpoint(ckpt, "cpu").model, work, size)
    else:
        raise ValueError(f"unknown engine {engine}")
    return Predictor(net, reference.classes, reference.palette)  # type: ignore[arg-type]


def torchao_int8(model: torch.nn.Module, work: Path, size: tuple[int, int]) -> Any:
    """torchao's PT2E flow: export, X86InductorQuantizer, calibrate on the calibration inputs
    (resized to ``size``: this export is static), convert, compile with frozen weights."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    inputs = [torch.from_numpy(x) for x in np.load(work / "calibration.npz").values()]
    inputs = [torch.nn.functional.interpolate(x, size=size, mode="bilinear") for x in inputs]
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    net = model.float().to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        exported = torch.export.export(net, (inputs[0],)).module()
        prepared = prepare_pt2e(exported, quantizer)
        for x in inputs:
            prepared(x)
        converted = convert_pt2e(prepared)
    from torch._inductor import config as inductor

    inductor.freezing = True  # this process only: weights as constants
    compiled = torch.compile(converted)

    class Quantized:
        preprocess = model.preprocess

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return compiled(x)

    return Quantized()


def timing(args: argparse.Namespace) -> dict[str, Any]:
    from fcnseg.inference import InferenceOptions

    h, w = (int(v) for v in args.size.split("x"))
    row: dict[str, Any] = {"engine": args.engine, "model": args.model, "size": args.size,
                           "batch": args.batch}  # fmt: skip
    start = time.perf_counter()
    native = InferenceOptions(scale="native")  # the network at the images' own size
    x = torch.rand(args.batch, 3, h, w, generator=torch.Generator().manual_seed(0))
    try:
        predictor = load(args.engine, args.model, args.work, (h, w), args.threads)
        first = time.perf_counter()
        predictor.probabilities_batch(x, native)
        row["first_call_s"] = time.perf_counter() - first
        times = time_ms(lambda: predictor.probabilities_batch(x, native), repeats=args.repeats,
                        warmup=1)  # fmt: skip
    except Exception as err:  # an engine that cannot take the model is a result, not a crash
        lines = [line for line in str(err).strip().splitlines() if line.strip()] or [""]
        row["error"] = f"{type(err).__name__}: {lines[0][:300]}"
        row["trace"] = traceback.format_exc(limit=3)[-1500:]
        return row
    row["load_s"] = time.perf_counter() - start - row["first_call_s"] - sum(times) / 1e3
    row["ms"] = median(times)
    row["times_ms"] = times
    return row


def agreement(args: argparse.Namespace) -> dict[str, Any]:
    """Share of pixels whose label under ``args.engine`` equals the fp32 checkpoint's, over
    ``args.images`` CamVid val images at the training's scale when the checkpoint records one
    (as ``fcnseg predict``), else at their own."""
    from fcnseg.data.io import read_image
    from fcnseg.inference import Predictor
    from fcnseg.quantize import calibration_files

    row: dict[str, Any] = {"engine": args.engine, "model": args.model}
    reference = Predictor.from_checkpoint(args.work / "models" / f"{args.model}.safetensors", "cpu")
    try:
        size = reference.train_size or (360, 480)  # CamVid's own size when none recorded
        predictor = load(args.engine, args.model, args.work, size, args.threads)
        predictor.train_size = reference.train_size
        same = total = 0
        for path in calibration_files(args.shared / "data/camvid/val", args.images):
            image = read_image(path)
            want, got = reference.predict(image), predictor.predict(image)
            same, total = same + int((want == got).sum()), total + want.numel()
    except Exception as err:
        lines = [line for line in str(err).strip().splitlines() if line.strip()] or [""]
        row["error"] = f"{type(err).__name__}: {lines[0][:300]}"
        return row
    row.update(agreement=same / total, images=args.images, size=list(size))
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["peak", "time", "agree"])
    p.add_argument("--shared", type=Path)
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--probe")
    p.add_argument("--engine")
    p.add_argument("--model")
    p.add_argument("--size")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    measure = {"peak": lambda: peak(args.probe, args.work, args.threads), "time": timing,
               "agree": agreement}[args.what]  # fmt: skip
    result = measure(args) if args.what != "peak" else measure()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
