"""The page and the plot of benchmarks/quantize.py, from its result dictionary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import pyplot

#: What fcnseg ships for each precision (the others are measured for comparison).
SHIPPED = {"fp32": "torch-fp32", "bf16": "torch-bf16", "int8": "ort-int8"}
ENGINE_NOTES = {
    "torch-fp32": "PyTorch eager (the Predictor's default)",
    "compile-fp32": "PyTorch, `--compile` (inductor, frozen weights)",
    "ort-fp32": "ONNX Runtime, fcnseg's fp32 export",
    "openvino-fp32": "OpenVINO, the same fp32 export",
    "torch-bf16": "PyTorch eager, `--precision bf16` (autocast)",
    "compile-bf16": "PyTorch, `--compile --precision bf16`",
    "openvino-bf16": "OpenVINO, fp32 export, bf16 inference hint",
    "ort-int8": "ONNX Runtime, fcnseg's int8 export (`--quantize int8`)",
    "openvino-int8": "OpenVINO, the same int8 export (QDQ)",
    "openvino-nncf-int8": "OpenVINO, fp32 export quantized by NNCF",
    "torchao-int8": "torchao PT2E X86InductorQuantizer + inductor",
}


def precision(engine: str) -> str:
    return engine.rsplit("-", 1)[1]


def peaks(result: dict[str, Any]) -> dict[str, float]:
    """The machine's peak per precision: the fastest probe of that precision (FLOP/s)."""
    best: dict[str, float] = {}
    for row in result["peaks"]:
        if "flops_per_s" in row:
            p = row["precision"]
            best[p] = max(best.get(p, 0.0), row["flops_per_s"])
    return best


def enrich(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Speed rows with images/s, GFLOP/s, % of the matching peak and × vs torch-fp32."""
    peak = peaks(result)
    base = {(r["model"], r["size"], r["batch"]): r["ms"] for r in result["speed"]
            if r["engine"] == "torch-fp32" and "ms" in r}  # fmt: skip
    rows = []
    for r in result["speed"]:
        r = dict(r)
        if "ms" in r:
            achieved = r["gflops_per_image"] * 1e9 * r["batch"] / r["ms"] * 1e3
            r["images_per_s"] = r["batch"] / r["ms"] * 1e3
            r["gflop_per_s"] = achieved / 1e9
            r["pct_of_peak"] = 100 * achieved / peak[precision(r["engine"])]
            key = (r["model"], r["size"], r["batch"])
            r["speedup_vs_torch_fp32"] = base[key] / r["ms"] if key in base else None
        rows.append(r)
    return rows


def accuracy_drops(result: dict[str, Any]) -> dict[tuple[str, str], float]:
    """Mean IU drop in points (fp32 − other) per (data, precision)."""
    fp32 = {r["data"]: r["mean_iu"] for r in result["accuracy"] if r["precision"] == "fp32"}
    return {(r["data"], r["precision"]): 100 * (fp32[r["data"]] - r["mean_iu"])
            for r in result["accuracy"] if r["data"] in fp32}  # fmt: skip


def markdown(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    peak = peaks(result)
    rows = enrich(result)
    lines = [
        "# int8 and bf16 inference on the CPU",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {m['cpu']}; {m['threads']} threads; torch {m['torch']}, Python {m['python']}",
        "",
        "Each peak and each timing ran in a process of its own; times are medians. Models: "
        "FCN-8s/VGG16 trained on CamVid (`fcn8s-atonce_vgg16_camvid-180x240_cpu30`) and an "
        "FCN-8s/ResNet-18 with random weights (speed does not depend on them), 11 classes; "
        "int8 files made by `fcnseg export --quantize int8 --calibrate` on 32 CamVid training "
        "images. Why fcnseg quantizes with ONNX Runtime, and what the other engines showed: "
        "[docs/quantization.md](../quantization.md).",
        "",
        "## Peaks (measured in this run)",
        "",
        "| probe | precision | ms | GFLOP/s (int8: GOP/s) |",
        "|---|---|---:|---:|",
    ]
    for r in result["peaks"]:
        if "flops_per_s" in r:
            lines.append(f"| {r['probe']} | {r['precision']} | {r['ms']:.1f} | "
                         f"{r['flops_per_s'] / 1e9:.0f} |")  # fmt: skip
        else:
            lines.append(f"| {r.get('args')} | | | {r['error']} |")
    lines += ["", "Peak per precision (the fastest probe): " + ", ".join(
        f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in sorted(peak.items())) + ".", ""]  # fmt: skip
    lines += ["## Speed", "",
              "| model | size | batch | engine | ms | images/s | × torch fp32 | % of peak |",
              "|---|---|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        head = f"| {r['model']} | {r['size']} | {r['batch']} | {r['engine']} |"
        if "ms" not in r:
            lines.append(f"{head} — | — | — | {r['error'][:90]} |")
            continue
        shipped = " (shipped)" if SHIPPED.get(precision(r["engine"])) == r["engine"] else ""
        head = head.replace(f"| {r['engine']} |", f"| {r['engine']}{shipped} |")
        lines.append(f"{head} {r['ms']:.1f} | {r['images_per_s']:.2f} | "
                     f"{r['speedup_vs_torch_fp32']:.2f} | {r['pct_of_peak']:.0f}% |")  # fmt: skip
    lines += ["", "% of peak: the network's GFLOPs per second against the fastest probe of its "
              "precision (int8 engines against the int8 peak, bf16 against bf16, fp32 against "
              "fp32). A probe is one layer shape (3×3, 256 channels, 128×128); a whole network "
              "whose wider layers run faster than that shape can read over 100%.", "",
              "Engines:", ""]  # fmt: skip
    lines += [f"- `{k}`: {v}" for k, v in ENGINE_NOTES.items()]
    prep = result.get("prepare", {})
    took = [f"{k.split('_')[0]} {k.split('_')[1].upper()} {v:.0f} s" for k, v in prep.items()
            if k.endswith("_quantize_s")]  # fmt: skip
    if took:
        lines += ["", "Quantization time (ORT: the whole `fcnseg export --quantize int8` command, "
                  "float export and check included; NNCF: `nncf.quantize` alone): "
                  + ", ".join(took) + "."]  # fmt: skip
    compiled = [r for r in rows if r["engine"].startswith("compile-") and "first_call_s" in r]
    if compiled:
        worst = max(r["first_call_s"] for r in compiled)
        lines += ["", f"torch.compile's first call (compilation) took up to {worst:.0f} s."]
    partial = {k: v for k, v in result.get("commands", {}).items() if v != result["command"]}
    if partial:
        lines += ["", "Sections measured again later: " + "; ".join(
            f"{k}: `{v}`" for k, v in partial.items()) + "."]  # fmt: skip
    if result.get("agreement"):
        lines += agreement_lines(result)
    if result["accuracy"]:
        lines += accuracy_lines(result)
    lines += target_lines(result, rows)
    return lines


def agreement_lines(result: dict[str, Any]) -> list[str]:
    rows = result["agreement"]
    ok = [r for r in rows if "agreement" in r]
    lines = ["", "## Labels as fp32's, by engine", "",
             f"FCN-8s/VGG16 (CamVid): share of the pixels of {ok[0]['images'] if ok else '—'} "
             f"CamVid val images, predicted at {'×'.join(map(str, ok[0]['size'])) if ok else '—'}"
             ", whose label equals the fp32 PyTorch model's.", "",
             "| engine | agreement |", "|---|---:|"]  # fmt: skip
    for r in rows:
        value = f"{100 * r['agreement']:.2f}%" if "agreement" in r else r["error"][:90]
        lines.append(f"| {r.get('engine', r.get('args'))} | {value} |")
    return lines


def accuracy_lines(result: dict[str, Any]) -> list[str]:
    drops = accuracy_drops(result)
    lines = ["", "## Accuracy cost (`fcnseg eval` on val)", "",
             "| data | precision | model file | pixel acc | mean acc | mean IU | "
             "drop (pts, fp32 − this) | fw IU |",
             "|---|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in result["accuracy"]:
        drop = drops[(r["data"], r["precision"])]
        lines.append(f"| {r['data']} | {r['precision']} | `{Path(r['source']).name}` | "
                     f"{r['pixel_acc']:.4f} | {r['mean_acc']:.4f} | {r['mean_iu']:.4f} | "
                     f"{drop:+.2f} | {r['fw_iu']:.4f} |")  # fmt: skip
    for data in dict.fromkeys(r["data"] for r in result["accuracy"]):
        runs = [r for r in result["accuracy"] if r["data"] == data]
        classes = list(runs[0]["per_class_iu"])
        lines += ["", f"Per-class IoU, {data}:", "",
                  "| precision | " + " | ".join(classes) + " |",
                  "|---|" + "---:|" * len(classes)]  # fmt: skip
        for r in runs:
            values = [r["per_class_iu"][c] for c in classes]
            lines.append(f"| {r['precision']} | " + " | ".join(
                "—" if v is None else f"{v:.3f}" for v in values) + " |")  # fmt: skip
    return lines


def target_lines(result: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, judged on FCN-8s/VGG16 500×500 batch 1."""
    at = {r["engine"]: r for r in rows if (r["model"], r["size"], r["batch"]) ==
          ("vgg16", "500x500", 1) and "ms" in r}  # fmt: skip
    if "torch-fp32" not in at:
        return []
    drops = accuracy_drops(result) if result["accuracy"] else {}
    lines = ["", "## Targets (FCN-8s/VGG16, 500×500, batch 1, against PyTorch fp32)", "",
             "| precision | target | shipped engine | speed-up | best engine | speed-up | "
             "CamVid drop | Horse drop |", "|---|---|---|---:|---|---:|---:|---:|"]  # fmt: skip
    for prec, goal in (("int8", "≥ 2.5×, ≤ 1.0 pt"), ("bf16", "≥ 1.5×, ≤ 0.3 pt")):
        mine = at.get(SHIPPED[prec])
        best = max((r for e, r in at.items() if precision(e) == prec),
                   key=lambda r: r["speedup_vs_torch_fp32"], default=None)  # fmt: skip
        cam, hor = drops.get(("CamVid", prec)), drops.get(("Horse", prec))
        lines.append(
            f"| {prec} | {goal} | {SHIPPED[prec]} | {mine['speedup_vs_torch_fp32']:.2f}× | "
            if mine
            else f"| {prec} | {goal} | — | — | "
        )
        lines[-1] += (f"{best['engine']} | {best['speedup_vs_torch_fp32']:.2f}× | " if best
                      else "— | — | ")  # fmt: skip
        lines[-1] += " | ".join("—" if d is None else f"{d:+.2f}" for d in (cam, hor)) + " |"
    return lines


def plot(result: dict[str, Any], path: Path) -> None:
    """Speed-up over PyTorch fp32 per engine (left) and % of the matching peak (right), for
    each model/size/batch."""
    plt = pyplot()
    rows = [r for r in enrich(result) if "ms" in r]
    shapes = list(dict.fromkeys((r["model"], r["size"], r["batch"]) for r in rows))
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5))
    width = 0.8 / max(1, len(engines))
    for i, engine in enumerate(engines):
        by = {(r["model"], r["size"], r["batch"]): r for r in rows if r["engine"] == engine}
        xs = [j + i * width for j, s in enumerate(shapes) if s in by]
        for ax, key in zip(axes, ("speedup_vs_torch_fp32", "pct_of_peak"), strict=True):
            ax.bar(xs, [by[s][key] for s in shapes if s in by], width, label=engine,
                   color=plt.cm.tab20(i))  # fmt: skip
    labels = [f"{m}\n{s} b{b}" for m, s, b in shapes]
    for ax, title in zip(axes, ("× faster than PyTorch fp32", "% of the matching measured peak"),
                         strict=True):  # fmt: skip
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(shapes))], labels, fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].axhline(1, color="k", lw=0.8)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle("FCN-8s inference on the CPU by engine and precision")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
