"""U-Net vs FCN-8s on ISBI 2012 EM (the U-Net paper's data) or Weizmann Horse: k-fold
cross-validation, with and without elastic augmentation and the U-Net border weight map.

Writes ``unet_vs_fcn.{json,md,png}`` and ``unet_vs_fcn_overlays.png`` (the models' predictions
on the same held-out images) to ``--out``. Run:

    .venv/bin/python benchmarks/unet_vs_fcn.py                       # ISBI, 5 folds
    .venv/bin/python benchmarks/unet_vs_fcn.py --dataset horse --run-folds 1
    .venv/bin/python benchmarks/unet_vs_fcn.py --quick               # smoke test, to a temp dir

Every run trains through :class:`fcnseg.engine.trainer.Trainer` with a config shipped in
``fcnseg/configs`` (:data:`MODELS`) and ``--set``-style overrides: fold, seed, the variant's
switches (:data:`VARIANTS`) and any recipe option given here; each run's config name and
overrides are in the JSON (``fcnseg train CONFIG --set ...`` repeats it). Its metrics are the
Trainer's final evaluation (``metrics.json``): the whole held-out images.

Models: ``unet`` (the paper's: valid convolutions, depth 4), ``fcn8s-vgg16`` (ImageNet VGG16
from the shared weights, grey replicated to RGB), ``fcn8s-scratch`` (the same network, random
initialisation); ``unet-sum`` (FCN's fusion: element-wise sum) and ``unet-same`` (FCN's padding:
zero-padded "same" convolutions) change one U-Net choice each. Variants: ``plain``, ``elastic``
(3×3-grid elastic deformation, sigma 10 px), ``wmap`` (loss weighted by the U-Net weight map:
balanced classes + w0 = 10, sigma = 5 px border term) and ``elastic+wmap``.

Folds (``data.options.folds/fold`` of the folder dataset): ISBI by slice index in contiguous
blocks (neighbouring slices are alike; a block keeps them on one side), Horse by a permutation
seeded with ``--seed``. Every run: Adam, ``train.iterations`` steps of ``data.batch_size``
random ``data.crop_size`` output tiles (the valid U-Nets': each input tile carries the context,
cut from the image and mirrored only beyond its border, ``UNet.training_context``), then
whole-image evaluation of the held-out fold. Metrics: pixel error (1 − pixel accuracy, as the
ISBI challenge), foreground IoU (class 1: cell / horse), mean IU; mean ± std over folds, and
wall time per run.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import OUT, command, machine, shared_root, write_results

from fcnseg.config import load_config
from fcnseg.engine.trainer import Trainer
from fcnseg.forward import forward

#: benchmark model → shipped config ({ds}: the dataset's config suffix)
MODELS = {
    "unet": "unet_{ds}-cv",
    "unet-sum": "unet_{ds}-sum",
    "unet-same": "unet_{ds}-same",
    "fcn8s-vgg16": "fcn8s_vgg16_{ds}-cv",
    "fcn8s-scratch": "fcn8s_vgg16_{ds}-scratch",
}
#: variant → its config overrides
VARIANTS = {
    "plain": [],
    "elastic": ["data.elastic_sigma=10"],
    "wmap": ["train.weight_map=true"],
    "elastic+wmap": ["data.elastic_sigma=10", "train.weight_map=true"],
}
#: --dataset → (config suffix, folder in shared/data)
DATASETS = {"isbi": ("isbi2012", "isbi2012-em"), "horse": ("horse", "weizmann-horse")}
VGG16 = Path("weights") / "vgg16-imagenet-features.safetensors"
#: --quick: every model and both switches once (the plan's other configs are only loaded)
QUICK_PLAN = ["unet=plain", "unet-sum=elastic+wmap", "unet-same=plain", "fcn8s-vgg16=plain"]


def shared_dir(arg: str | None) -> Path:
    path = shared_root(arg)
    if not path.is_dir():
        sys.exit(f"shared folder {path} not found: pass --shared or set FCNSEG_SHARED")
    return path


def parse_plan(tokens: list[str]) -> dict[str, list[str]]:
    plan: dict[str, list[str]] = {}
    for token in tokens:
        model, _, variants = token.partition("=")
        chosen = variants.split(",") if variants else ["plain"]
        bad = [v for v in chosen if v not in VARIANTS] + ([model] if model not in MODELS else [])
        if bad:
            sys.exit(f"--plan {token}: unknown {bad} (models {list(MODELS)}, variants "
                     f"{list(VARIANTS)})")  # fmt: skip
        plan[model] = chosen
    return plan


def overrides(
    args: argparse.Namespace, shared: Path, model: str, variant: str, fold: int
) -> list[str]:
    """The ``--set`` overrides of one run on top of its shipped config."""
    out = [
        f"data.root={shared / 'data' / DATASETS[args.dataset][1]}",
        f"data.options.folds={args.folds}",
        f"data.options.fold={fold}",
        f"train.seed={args.seed + fold}",
        f"name={model}-{variant}-fold{fold}",
    ]
    if args.dataset == "horse":
        out.append(f"data.options.fold_seed={args.seed}")
    if model == "fcn8s-vgg16":
        out.append(f"model.backbone_weights={shared / VGG16}")
    if args.iterations:  # one evaluation and one checkpoint, at the end
        out += [f"train.{k}={args.iterations}" for k in ("iterations", "eval_every",
                                                         "checkpoint_every")]  # fmt: skip
    if args.size:
        out.append(f"data.resize=[{args.size}, {args.size}]")
    if args.crop:
        crop = min(args.crop, args.size or args.crop)
        out.append(f"data.crop_size=[{crop}, {crop}]")
    if args.unet_width and model.startswith("unet"):
        out.append(f"model.base_width={args.unet_width}")
    options = {"train.lr": args.lr, "data.batch_size": args.batch,
               "data.num_workers": args.workers, "train.device": args.device}  # fmt: skip
    for key, value in options.items():
        if value is not None:
            out.append(f"{key}={value}")
    return out + VARIANTS[variant]


def read_log(path: Path) -> tuple[list[float], float]:
    """Training losses and seconds spent training (before the final evaluation) from log.csv."""
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss")]
    return [float(r["loss"]) for r in rows], float(rows[-1]["seconds"]) if rows else math.nan


@torch.no_grad()
def predictions(trainer: Trainer, count: int) -> list[tuple[Any, Any, Any]]:
    """(image H×W×3 uint8, ground truth, prediction) of the first ``count`` held-out images,
    through the one forward path (the valid U-Net mirrors the image border)."""
    net, out = trainer.net.eval(), []
    device = next(net.parameters()).device
    for i in range(min(count, len(trainer.val_set))):
        image, mask = trainer.val_set[i][:2]
        pred = forward(net, image[None].to(device)).argmax(1)[0].cpu()
        pixels = (image * 255).round().byte().permute(1, 2, 0).numpy()
        out.append((pixels, mask.numpy(), pred.numpy()))
    return out


def configure(args: argparse.Namespace, shared: Path, model: str, variant: str, fold: int) -> Any:
    """(shipped config name, overrides, resolved config) of one run."""
    name = MODELS[model].format(ds=DATASETS[args.dataset][0])
    sets = overrides(args, shared, model, variant, fold)
    return name, sets, load_config(name, sets)


def run(
    args: argparse.Namespace, shared: Path, model: str, variant: str, fold: int, runs: Path
) -> tuple[dict[str, Any], Trainer]:
    name, sets, cfg = configure(args, shared, model, variant, fold)
    run_dir = runs / f"{model}-{variant}" / f"fold{fold}"
    start = time.perf_counter()
    trainer = Trainer(cfg, run_dir, progress=False)
    result = trainer.train()
    seconds = time.perf_counter() - start
    losses, train_s = read_log(run_dir / "log.csv")
    m = result.metrics  # the final whole-image evaluation of the held-out fold (metrics.json)
    iu = list(m["per_class_iu"].values())
    row = {
        "model": model,
        "variant": variant,
        "fold": fold,
        "pixel_error": 1.0 - m["pixel_acc"],
        "fg_iou": iu[1],
        "mean_iu": m["mean_iu"],
        "per_class_iu": iu,
        "train_s": train_s,
        "seconds": seconds,
        "final_loss": statistics.fmean(losses[-10:]) if losses else math.nan,
        "config": name,
        "overrides": sets,
        "recipe": {"iterations": cfg.train.iterations, "batch": cfg.data.batch_size,
                   "crop": cfg.data.crop_size, "resize": cfg.data.resize, "lr": cfg.train.lr,
                   "base_width": cfg.model.base_width if model.startswith("unet") else None},
        "val_ids": [trainer.val_set.name(i) for i in range(len(trainer.val_set))],
        "run_dir": str(run_dir),
    }  # fmt: skip
    return row, trainer


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = dict.fromkeys((r["model"], r["variant"]) for r in rows)
    for model, variant in keys:
        group = [r for r in rows if (r["model"], r["variant"]) == (model, variant)]
        entry: dict[str, Any] = {"model": model, "variant": variant, "folds": len(group)}
        for k in ("pixel_error", "fg_iou", "bg_iou", "mean_iu", "seconds"):
            values = [r["per_class_iu"][0] if k == "bg_iou" else r[k] for r in group]
            entry[k] = statistics.fmean(values)
            entry[f"{k}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(entry)
    return out


def markdown(result: dict[str, Any]) -> list[str]:
    c, m = result["config"], result["machine"]
    crop = c["crop"] if isinstance(c["crop"], list) else [c["crop"]] * 2  # old JSON: an int
    crop = "×".join(str(x) for x in crop) if crop[0] else "whole-image"
    width = f"U-Net width {c['unet_width']}, depth 4. " if c.get("unet_width") else ""
    lines = [
        f"# U-Net vs FCN-8s on {c['dataset']} ({c['folds_run']} of {c['folds']} folds)",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {m.get('gpu', m['cpu'])} ({m['threads']} threads), torch {m['torch']}.  ",
        "Training"
        + (f" (fcnseg Trainer, configs `{c['configs']}`)" if c.get("configs") else "")
        + f": Adam lr {c['lr']}, "
        f"{c['iterations']} iterations of {c['batch']} × {crop} tiles; {width}"
        "Evaluation on whole held-out images."
        + (" Mean ± std over folds." if c["folds_run"] > 1 else ""),
        "",
        f"| model | variant | pixel error | {c['foreground']} IoU | {c['background']} IoU "
        "| mean IU | s / run |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in result["summary"]:
        cells = [
            f"{s[k]:.4f} ± {s[k + '_std']:.4f}" if s["folds"] > 1 else f"{s[k]:.4f}"
            for k in ("pixel_error", "fg_iou", "bg_iou", "mean_iu")
        ]
        row = [s["model"], s["variant"], *cells, f"{s['seconds']:.0f}"]
        lines.append(f"| {' | '.join(row)} |")
    lines += [
        "",
        "Variants: `elastic` = 3×3-grid elastic deformation (sigma 10 px, bicubic image, nearest "
        "mask; `data.elastic_sigma=10`); `wmap` = loss weighted by the U-Net weight map "
        "(balanced classes, w0 = 10, sigma = 5 px; `train.weight_map=true`), computed once per "
        f"label file. Foreground = class 1 ({c['foreground']}).",
        "",
        "![metrics](unet_vs_fcn.png)",
        "",
        "![overlays](unet_vs_fcn_overlays.png)",
    ]
    return lines


def plot_metrics(path: Path, summary: list[dict[str, Any]]) -> None:
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(s["model"] for s in summary))
    variants = list(dict.fromkeys(s["variant"] for s in summary))
    fig = Figure(figsize=(11, 4), dpi=100)
    for k, (key, title) in enumerate(
        (("mean_iu", "mean IU"), ("fg_iou", "foreground IoU"), ("pixel_error", "pixel error"))
    ):
        ax = fig.add_subplot(1, 3, k + 1)
        width = 0.8 / len(variants)
        for j, variant in enumerate(variants):
            xs, ys, es = [], [], []
            for i, model in enumerate(models):
                for s in summary:
                    if (s["model"], s["variant"]) == (model, variant):
                        xs.append(i + (j - (len(variants) - 1) / 2) * width)
                        ys.append(s[key])
                        es.append(s[f"{key}_std"])
            ax.bar(xs, ys, width, yerr=es, label=variant, capsize=2)
        ax.set_xticks(range(len(models)), models, rotation=15)
        ax.set_title(title)
    fig.axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def plot_overlays(path: Path, preds: dict[str, list[tuple[Any, Any, Any]]], palette: Any) -> None:
    from matplotlib.figure import Figure

    from fcnseg.viz import overlay

    names = list(preds)
    first = preds[names[0]] if names else []
    if not first:
        return
    cols = ["image", "ground truth", *names]
    fig = Figure(figsize=(2.6 * len(cols), 2.6 * len(first)), dpi=100)
    for r, (image, truth, _) in enumerate(first):
        panels = [image, overlay(image, truth, palette, alpha=0.45)]
        panels += [overlay(image, preds[n][r][2], palette, alpha=0.45) for n in names]
        for c, panel in enumerate(panels):
            ax = fig.add_subplot(len(first), len(cols), r * len(cols) + c + 1)
            ax.imshow(panel)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(cols[c], fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def render(path: Path) -> None:
    """Table and metrics plot again from a run's JSON (the overlays need the models)."""
    result = json.loads(path.read_text())
    result["summary"] = summarise(result["runs"])
    write_results(path.parent, path.stem, result, markdown(result))
    plot_metrics(path.with_suffix(".png"), result["summary"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="isbi")
    parser.add_argument("--shared", help="shared data/weights folder (default $FCNSEG_SHARED)")
    parser.add_argument("--folds", type=int, default=5, help="k of k-fold cross-validation")
    parser.add_argument("--run-folds", type=int, default=0, help="run only the first N folds")
    recipe = parser.add_argument_group("recipe overrides (default: the shipped configs')")
    recipe.add_argument("--iterations", type=int, help="train.iterations")
    recipe.add_argument("--batch", type=int, help="data.batch_size")
    recipe.add_argument("--crop", type=int, help="output tile size: data.crop_size")
    recipe.add_argument("--size", type=int, help="resize to size×size: data.resize")
    recipe.add_argument("--lr", type=float, help="train.lr")
    recipe.add_argument("--unet-width", type=int, help="model.base_width of the U-Nets")
    recipe.add_argument("--workers", type=int, help="data.num_workers")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS))
    parser.add_argument(
        "--plan",
        nargs="+",
        metavar="MODEL=VARIANT[,VARIANT]",
        help="per-model variants, e.g. unet=plain,elastic fcn8s-vgg16=plain (overrides "
        "--models/--variants)",
    )
    parser.add_argument("--overlay-images", type=int, default=2)
    parser.add_argument("--overlay-variant", help="variant shown in the overlays (default: plain)")
    parser.add_argument("--seed", type=int, default=0, help="fold f trains with seed + f")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", help="train.device (default: the configs' auto)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--runs", type=Path, help="run directories (default: a temp dir)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each run's weights")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny, 1 fold, temp dir")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="rewrite the table and plot of a finished run"
    )
    args = parser.parse_args()
    if args.render:
        render(args.render)
        return
    if args.quick:
        args.iterations, args.run_folds, args.crop, args.unet_width = 3, 1, 64, 4
        args.batch, args.size, args.workers = 1, args.size or 128, 0
        args.plan = args.plan or QUICK_PLAN
    if args.variants is None:
        args.variants = list(VARIANTS) if args.dataset == "isbi" else ["plain", "elastic"]
    out = args.out or (Path(tempfile.gettempdir()) / "unet_vs_fcn-quick" if args.quick else OUT)
    runs = args.runs or Path(tempfile.mkdtemp(prefix="unet_vs_fcn-runs-"))
    if args.threads:
        torch.set_num_threads(args.threads)
    shared = shared_dir(args.shared)
    plan = parse_plan(args.plan) if args.plan else {m: list(args.variants) for m in args.models}
    overlay_variant = args.overlay_variant or (
        "plain" if any("plain" in v for v in plan.values()) else next(iter(plan.values()))[-1]
    )
    jobs = [(f, m, v) for f in range(args.run_folds or args.folds) for m in plan for v in plan[m]]
    checks = [(0, m, v) for m in MODELS for v in VARIANTS] if args.quick else []
    for fold, model, variant in checks + jobs:  # every config loads before hours of training
        configure(args, shared, model, variant, fold)
    rows: list[dict[str, Any]] = []
    overlays: dict[str, list[tuple[Any, Any, Any]]] = {}
    for fold, model, variant in jobs:
        row, trainer = run(args, shared, model, variant, fold, runs)
        rows.append(row)
        classes, palette = tuple(trainer.classes), trainer.val_set.palette
        if fold == 0 and variant == overlay_variant:
            overlays[f"{model} ({variant})"] = predictions(trainer, args.overlay_images)
        del trainer
        if not args.keep_checkpoints:
            shutil.rmtree(Path(row["run_dir"]) / "checkpoints", ignore_errors=True)
        print(
            f"fold {fold} {model:14s} {variant:13s} pixel error {row['pixel_error']:.4f}"
            f"  fg IoU {row['fg_iou']:.4f}  mean IU {row['mean_iu']:.4f}"
            f"  {row['seconds']:.0f} s (training {row['train_s']:.0f} s)",
            flush=True,
        )
    summary = summarise(rows)
    first = rows[0]["recipe"]
    unet_rows = [r for r in rows if r["recipe"]["base_width"]]
    folds_run = sorted({r["fold"] for r in rows})
    result = {
        "command": command(),
        "machine": machine(),
        "config": {
            "dataset": args.dataset,
            "folds": args.folds,
            "folds_run": len(folds_run),
            "fold_ids": {f: next(r["val_ids"] for r in rows if r["fold"] == f) for f in folds_run},
            "configs": ", ".join(dict.fromkeys(r["config"] for r in rows)),
            "iterations": first["iterations"],
            "batch": first["batch"],
            "crop": first["crop"],
            "size": first["resize"],
            "lr": first["lr"],
            "unet_width": unet_rows[0]["recipe"]["base_width"] if unet_rows else None,
            "plan": plan,
            "seed": args.seed,
            "foreground": classes[1],
            "background": classes[0],
            "quick": args.quick,
            "runs": str(runs),
        },
        "summary": summary,
        "runs": rows,
    }
    write_results(out, "unet_vs_fcn", result, markdown(result))
    plot_metrics(out / "unet_vs_fcn.png", summary)
    plot_overlays(out / "unet_vs_fcn_overlays.png", overlays, palette)
    print(f"wrote {out}/unet_vs_fcn.{{json,md,png}} and unet_vs_fcn_overlays.png; runs in {runs}")


if __name__ == "__main__":
    main()
