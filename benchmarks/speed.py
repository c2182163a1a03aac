"""Speed: inference latency/throughput of every FCN, FLOPs and achieved FLOP/s against the
machine's convolution peak, exact vs caffe mode, execution paths, and a training step.

    .venv/bin/python benchmarks/speed.py              # CPU (or CUDA if present): full table
    .venv/bin/python benchmarks/speed.py --quick      # fcn8s/vgg16 + the reference only
    .venv/bin/python benchmarks/speed.py --device cuda --batches 1 8 32

Writes ``docs/benchmarks/speed[-cuda].{json,md}`` and ``speed[-cuda]_*.png``. Every time is the
median of ``--repeats`` runs after a warm-up, under ``torch.inference_mode`` (inference) with
random weights (speed does not depend on their values). FLOPs are counted by
``torch.utils.flop_counter`` (2 per multiply-add). The convolution peak is a large 3×3
convolution (256→256 channels, 128×128, batch 4 on CPU) timed in the same run: the fastest
this machine's kernels do the FCN's main operation, so "% of peak" says how close to the
machine's limit a model runs.
"""

from __future__ import annotations

import argparse
import resource
from pathlib import Path
from typing import Any

import torch
from common import OUT, command, machine, median, pyplot, sync, time_ms, write_results
from torch.utils.flop_counter import FlopCounterMode

from fcnseg.forward import forward
from fcnseg.models import BACKBONES, FCNS

SIZES = ((500, 500), (360, 480))


def flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return counter.get_total_flops()


def conv_peak(device: str, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """FLOP/s of a large 3×3 convolution: the reference 'peak' for convolutional networks, the
    faster of NCHW and channels_last (on this project's CPU channels_last is 1.2× faster; a
    peak timed NCHW alone, as this probe once was, is one the models' own layout beats)."""
    batch = 4 if device == "cpu" else 64
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(device, dtype)
    n = 2 * 256 * 256 * 9 * 128 * 128 * batch
    by_format = {}
    for name, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
        conv = conv.to(memory_format=fmt)
        x = torch.randn(batch, 256, 128, 128, device=device, dtype=dtype)
        x = x.contiguous(memory_format=fmt)
        with torch.inference_mode():
            call = lambda c=conv, x=x: c(x)  # noqa: E731
            by_format[name] = median(time_ms(call, repeats=5, device=device))
    ms = min(by_format.values())
    return {"flops": n, "ms": ms, "flops_per_s": n / ms * 1e3, "ms_by_format": by_format}


def matmul_peak(device: str, dtype: torch.dtype) -> dict[str, float]:
    """FLOP/s of a large matmul (the dense peak a GPU's datasheet quotes)."""
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = median(time_ms(lambda: a @ b, repeats=10, device=device))
    return {"flops": 2 * n**3, "ms": ms, "flops_per_s": 2 * n**3 / ms * 1e3}


def bench(
    model: torch.nn.Module,
    x: torch.Tensor,
    repeats: int,
    device: str,
    amp: str | None = None,
    channels_last: bool = False,
) -> float:
    """Median ms of one forward pass of images ``x`` (in [0, 1]) through fcnseg's one forward
    path (:func:`fcnseg.forward.forward`: preprocess, memory format, autocast, model)."""
    with torch.inference_mode():
        return median(
            time_ms(lambda: run(model, x, amp, channels_last), repeats=repeats, device=device)
        )


def run(
    model: torch.nn.Module, x: torch.Tensor, amp: str | None = None, channels_last: bool = False
) -> torch.Tensor:
    return forward(model, x, channels_last=channels_last, amp=amp)


def inference_table(args: argparse.Namespace, peak: float) -> list[dict[str, Any]]:
    rows = []
    backbones = ["vgg16"] if args.quick else list(BACKBONES)
    names = ["fcn8s"] if args.quick else list(FCNS)
    for backbone in backbones:
        for name in names:
            model = FCNS[name](backbone=backbone, num_classes=21).to(args.device).eval()
            model = model.to(memory_format=torch.channels_last)  # the Predictor's default
            for h, w in SIZES:
                f = flops(model, torch.randn(1, 3, h, w, device=args.device))
                for batch in args.batches:
                    x = torch.rand(batch, 3, h, w, device=args.device)
                    ms = bench(model, x, args.repeats, args.device, channels_last=True)
                    row = {
                        "model": name,
                        "backbone": backbone,
                        "size": f"{h}x{w}",
                        "batch": batch,
                        "ms": ms,
                        "images_per_s": batch / ms * 1e3,
                        "gflops_per_image": f / 1e9,
                        "achieved_tflops": f * batch / ms / 1e9,
                        "pct_of_conv_peak": 100 * f * batch / ms * 1e3 / peak,
                    }
                    rows.append(row)
                    print(
                        f"{name}/{backbone} {h}x{w} b{batch}: {ms:8.1f} ms  "
                        f"{row['images_per_s']:7.2f} img/s  {row['pct_of_conv_peak']:5.1f}% peak",
                        flush=True,
                    )
            del model
    return rows


def reference_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """torchvision's fcn_resnet50 (random weights, no aux head) and fcnseg's FCN-8s/ResNet-50."""
    from torchvision.models.segmentation import fcn_resnet50

    tv = fcn_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=False)
    ours = FCNS["fcn8s"](backbone="resnet50", num_classes=21)
    rows = []
    for label, model in (("torchvision fcn_resnet50", tv), ("fcnseg fcn8s/resnet50", ours)):
        model = model.to(args.device).eval()
        if not hasattr(model, "preprocess"):  # torchvision's takes normalised input too
            model.preprocess = ours.preprocess
        for h, w in SIZES:
            x = torch.rand(1, 3, h, w, device=args.device)
            ms = bench(model, x, args.repeats, args.device)
            rows.append({"model": label, "size": f"{h}x{w}", "batch": 1, "ms": ms})
            print(f"{label} {h}x{w}: {ms:.1f} ms", flush=True)
    return rows


def paths_table(args: argparse.Namespace) -> list[dict[str, Any]]:
    """fcn8s/vgg16 at 500×500 batch 1: exact vs caffe mode, and execution paths."""
    dev = args.device
    x = torch.rand(1, 3, 500, 500, device=dev)
    exact = FCNS["fcn8s"](backbone="vgg16", num_classes=21).to(dev).eval()
    with torch.no_grad():  # score layers start at zero (the paper's init): make outputs nonzero
        for layer in (exact.score_fr, *exact.scorers.values()):
            layer.weight.normal_(0, 0.01)
    caffe = FCNS["fcn8s"](backbone="vgg16", num_classes=21, mode="caffe").to(dev).eval()
    caffe.load_state_dict(exact.state_dict())
    with torch.inference_mode():
        ref = run(exact, x)
    rows: list[dict[str, Any]] = []

    def add(label: str, model: torch.nn.Module, amp: str | None = None,
            channels_last: bool = False, compare: bool = True):  # fmt: skip
        ms = bench(model, x, args.repeats, dev, amp, channels_last)
        with torch.inference_mode():
            out = run(model, x, amp, channels_last).float()
        err = float((out - ref).abs().max() / ref.abs().max()) if compare else None
        rows.append({"path": label, "ms": ms, "max_rel_diff_vs_exact_fp32": err})
        print(f"{label}: {ms:.1f} ms (rel diff {err})", flush=True)

    add("exact mode, contiguous (NCHW)", exact)
    add("caffe mode", caffe, compare=False)  # other padding: outputs are not comparable
    with torch.no_grad():
        ms_nograd = median(time_ms(lambda: run(exact, x), repeats=args.repeats, device=dev))
    rows.append({"path": "exact, no_grad instead of inference_mode", "ms": ms_nograd})
    cl = FCNS["fcn8s"](backbone="vgg16", num_classes=21).to(dev).eval()
    cl.load_state_dict(exact.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    add("exact, channels_last (the Predictor's default)", cl, channels_last=True)
    add("exact, bf16 autocast", exact, "bf16")
    if dev == "cuda":
        add("exact, fp16 autocast", exact, "fp16")
    if args.compile:
        compiled = torch.compile(exact)
        compiled.preprocess = exact.preprocess
        add("exact, torch.compile", compiled)
    return rows


def best_vs_plain(args: argparse.Namespace, bf16_peak: float) -> dict[str, Any]:
    """CUDA: fcn8s/vgg16 at 500×500 run the fast way (bf16 autocast, channels_last, the largest
    batch, torch.compile with --compile) against the plain way (fp32 eager, batch 1)."""
    dev = args.device
    model = FCNS["fcn8s"](backbone="vgg16", num_classes=21).to(dev).eval()
    f = flops(model, torch.randn(1, 3, 500, 500, device=dev))
    plain_ms = bench(model, torch.rand(1, 3, 500, 500, device=dev), args.repeats, dev)
    fast = model.to(memory_format=torch.channels_last)
    if args.compile:
        fast = torch.compile(fast, mode="max-autotune")
        fast.preprocess = model.preprocess
    batch = max(args.batches)
    x = torch.rand(batch, 3, 500, 500, device=dev)
    fast_ms = bench(fast, x, args.repeats, dev, "bf16", channels_last=True)
    row = {
        "plain_images_per_s": 1e3 / plain_ms,
        "fast_batch": batch,
        "fast_images_per_s": batch * 1e3 / fast_ms,
        "fast_tflops": f * batch / fast_ms / 1e9,
        "pct_of_bf16_matmul_peak": 100 * f * batch / fast_ms * 1e3 / bf16_peak,
    }
    row["speedup"] = row["fast_images_per_s"] / row["plain_images_per_s"]
    print(f"fast vs plain: {row}", flush=True)
    return row


def train_step(args: argparse.Namespace) -> dict[str, Any]:
    """fcn8s/vgg16 at 360×480: one step of the product's Trainer (forward + loss + backward +
    SGD), on one fixed batch; images/s and peak memory."""
    import itertools
    import tempfile

    from fcnseg.config import load_config
    from fcnseg.engine.trainer import Trainer

    dev = args.device
    batch = args.train_batch
    cfg = load_config("fcn8s_resnet18_synthetic", [
        "model.backbone=vgg16", f"train.device={dev}", "train.optimizer=sgd", "train.lr=1e-4",
        "data.options={num_images: 4, size: [96, 128]}", f"data.batch_size={batch}",
    ])  # fmt: skip
    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="speed-train-"), progress=False)
    x = torch.rand(batch, 3, 360, 480, device=dev)
    y = torch.randint(0, trainer.num_classes, (batch, 360, 480), device=dev)
    batches = itertools.repeat((x, y))

    def step() -> None:
        trainer.step(batches)

    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ms = median(time_ms(step, repeats=max(2, args.repeats - 1), device=dev))
    sync(dev)
    row: dict[str, Any] = {"batch": batch, "ms": ms, "images_per_s": batch / ms * 1e3}
    if dev == "cuda":
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"train step b{batch} 360x480: {ms:.0f} ms, {row['images_per_s']:.2f} img/s", flush=True)
    return row


def markdown(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    peak = result["conv_peak"]["flops_per_s"]
    lines = [
        f"# Speed ({result['device']})",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {m['cpu']}{', ' + m['gpu'] if 'gpu' in m else ''}; {m['threads']} threads; "
        f"torch {m['torch']}, Python {m['python']}  ",
        f"Convolution peak (3×3, 256→256, 128×128) measured in this run: "
        f"**{peak / 1e9:.1f} GFLOP/s**"
        + (
            f"; bf16 matmul peak {result['matmul_peak_bf16']['flops_per_s'] / 1e12:.1f} TFLOP/s"
            if "matmul_peak_bf16" in result
            else ""
        ),
        "",
        "## Inference (median ms per batch, channels_last, random weights, 21 classes)",
        "",
        "| model | backbone | size | batch | ms | images/s | GFLOPs/image | % of conv peak |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["inference"]:
        lines.append(
            f"| {r['model']} | {r['backbone']} | {r['size']} | {r['batch']} | {r['ms']:.1f} | "
            f"{r['images_per_s']:.2f} | {r['gflops_per_image']:.1f} | "
            f"{r['pct_of_conv_peak']:.0f}% |"
        )
    ref = {(r["model"], r["size"]): r["ms"] for r in result["reference"]}
    lines += ["", "## Outside reference: torchvision `fcn_resnet50` (batch 1)", "",
              "| size | torchvision fcn_resnet50 ms | fcnseg fcn8s/resnet50 ms | ratio |",
              "|---|---:|---:|---:|"]  # fmt: skip
    for h, w in SIZES:
        tv, ours = (
            ref[("torchvision fcn_resnet50", f"{h}x{w}")],
            ref[("fcnseg fcn8s/resnet50", f"{h}x{w}")],
        )
        lines.append(f"| {h}x{w} | {tv:.1f} | {ours:.1f} | {tv / ours:.2f}× |")
    exact_ms = result["paths"][0]["ms"]
    lines += ["", "## fcn8s/vgg16 at 500×500, batch 1: modes and execution paths", "",
              "| path | ms | speed vs NCHW | max rel. diff vs NCHW fp32 |",
              "|---|---:|---:|---:|"]  # fmt: skip
    for r in result["paths"]:
        diff = r.get("max_rel_diff_vs_exact_fp32")
        diff_s = "—" if diff is None else f"{diff:.1e}"
        lines.append(f"| {r['path']} | {r['ms']:.1f} | {exact_ms / r['ms']:.2f}× | {diff_s} |")
    t = result["train"]
    mem = (f"peak GPU memory {t['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in t
           else f"peak RSS {t['peak_rss_mb']:.0f} MB (whole process)")  # fmt: skip
    lines += ["", "## Training step (fcn8s/vgg16, 360×480, forward + backward + SGD)", "",
              f"batch {t['batch']}: {t['ms']:.0f} ms per step, {t['images_per_s']:.2f} images/s, "
              f"{mem}."]  # fmt: skip
    if "best_vs_plain" in result:
        b = result["best_vs_plain"]
        lines += ["", "## The fast way vs the plain way (fcn8s/vgg16, 500×500)", "",
                  f"bf16 autocast + channels_last, batch {b['fast_batch']}: "
                  f"{b['fast_images_per_s']:.1f} images/s, {b['fast_tflops']:.0f} TFLOP/s = "
                  f"{b['pct_of_bf16_matmul_peak']:.0f}% of the bf16 matmul peak; fp32 eager "
                  f"batch 1: {b['plain_images_per_s']:.1f} images/s → "
                  f"**{b['speedup']:.1f}×**."]  # fmt: skip
    return lines


def plot(result: dict[str, Any], out: Path, suffix: str) -> None:
    plt = pyplot()
    rows = [r for r in result["inference"] if r["size"] == "500x500" and r["batch"] == 1]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    labels = [f"{r['model']}\n{r['backbone']}" for r in rows]
    ax.bar(range(len(rows)), [r["pct_of_conv_peak"] for r in rows], color="C0")
    ax.set_xticks(range(len(rows)), labels, rotation=90, fontsize=7)
    ax.axhline(100, color="k", lw=0.8, ls="--")
    ax.set_ylabel("% of measured conv peak")
    ax.set_title(f"achieved FLOP/s at 500×500, batch 1 ({result['device']})")
    fig.tight_layout()
    fig.savefig(out / f"speed{suffix}_peak.png", dpi=120)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    paths = result["paths"]
    ax.barh([p["path"] for p in paths], [p["ms"] for p in paths], color="C2")
    ax.invert_yaxis()
    ax.set_xlabel("ms (fcn8s/vgg16, 500×500, batch 1)")
    fig.tight_layout()
    fig.savefig(out / f"speed{suffix}_paths.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 4 (CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--quick", action="store_true", help="fcn8s/vgg16 only")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.batches = args.batches or ([1, 4] if args.device == "cpu" else [1, 8, 32])
    torch.manual_seed(0)

    peak = conv_peak(args.device)
    print(f"conv peak: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s", flush=True)
    result: dict[str, Any] = {
        "command": command(),
        "machine": machine(),
        "device": args.device,
        "repeats": args.repeats,
        "conv_peak": peak,
    }
    if args.device == "cuda":
        result["matmul_peak_bf16"] = matmul_peak("cuda", torch.bfloat16)
    result["paths"] = paths_table(args)
    result["inference"] = inference_table(args, peak["flops_per_s"])
    result["reference"] = reference_rows(args)
    result["train"] = train_step(args)
    if args.device == "cuda":
        result["best_vs_plain"] = best_vs_plain(args, result["matmul_peak_bf16"]["flops_per_s"])
    suffix = "" if args.device == "cpu" else f"-{args.device}"
    write_results(args.out, f"speed{suffix}", result, markdown(result))
    plot(result, args.out, suffix)
    print(f"wrote {args.out}/speed{suffix}.{{json,md}} and plots")


if __name__ == "__main__":
    main()
