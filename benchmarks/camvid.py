"""CamVid accuracy: FCN-32s → 16s → 8s staged and FCN-8s at-once, trained with a device-resident
data path, reported on CamVid val (11 classes, void ignored).

    .venv/bin/python benchmarks/camvid.py --preset gpu      # one CUDA GPU: all four models
    .venv/bin/python benchmarks/camvid.py --preset cpu      # ~30 min on 2 CPU cores: FCN-8s
    .venv/bin/python benchmarks/camvid.py --preset smoke    # seconds: checks the script runs

The backbone starts from the ImageNet VGG16 conv weights in ``$FCNSEG_SHARED/weights``; fc6,
fc7 and the score layers start random (the shared file has no classifier weights). The data
(train + val, ~250 MB as uint8 at 360×480) is decoded once into device memory and augmented
there in whole batches (:mod:`fcnseg.data.resident`): random scale, flip and crop in one
affine warp, so the GPU never waits on the CPU. Wall time counts from the start of the
process, start-up, decoding and evaluation included.

Writes ``docs/benchmarks/camvid-<preset>.{json,md}``, ``…_curves.png``, ``…_confusion.png``,
``…_overlays.png`` and ``…log.txt``; ``--test-root`` also evaluates a test split.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
from dataclasses import asdict, dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from common import OUT, command, machine, shared_root, write_results  # noqa: E402

from fcnseg.data.registry import build_dataset  # noqa: E402
from fcnseg.data.resident import ResidentData  # noqa: E402
from fcnseg.data.transforms import fill_from_preprocess  # noqa: E402
from fcnseg.losses import SegmentationLoss, median_frequency_weights  # noqa: E402
from fcnseg.metrics import ConfusionMatrix  # noqa: E402
from fcnseg.models import FCNS  # noqa: E402


@dataclass
class Preset:
    size: tuple[int, int]  # images are resized to this once, at decode time
    batch: int
    stages: list[tuple[str, int]]  # (model, iterations); "fcn8s-atonce" trains 8s from scratch
    lr: float = 1e-4
    scale_range: tuple[float, float] = (0.75, 1.25)
    eval_every: int = 250
    amp: bool = True  # bf16 autocast on CUDA (CPU runs stay fp32)
    channels_last: bool = True
    limit: int | None = None  # images per split (smoke runs)


PRESETS = {
    "gpu": Preset(
        (360, 480), 16,
        [("fcn32s", 1500), ("fcn16s", 750), ("fcn8s", 750), ("fcn8s-atonce", 1500)],
    ),
    "cpu": Preset((180, 240), 4, [("fcn8s-atonce", 900)], eval_every=300, channels_last=False),
    "smoke": Preset((60, 80), 2, [("fcn32s", 2), ("fcn16s", 2), ("fcn8s", 2),
                                   ("fcn8s-atonce", 2)], eval_every=2, limit=4),
}  # fmt: skip


@dataclass
class Log:
    path: Path
    lines: list[str] = field(default_factory=list)

    def __call__(self, message: str) -> None:
        line = f"[{time.perf_counter() - START:7.1f} s] {message}"
        print(line, flush=True)
        self.lines.append(line)
        self.path.write_text("\n".join(self.lines) + "\n")


def build(stage: str, weights: str, previous: torch.nn.Module | None) -> torch.nn.Module:
    name = stage.removesuffix("-atonce")
    kwargs: dict[str, Any] = {"backbone": "vgg16", "num_classes": 11, "backbone_weights": weights}
    if stage == "fcn8s-atonce":
        kwargs["at_once"] = True
    elif name != "fcn32s":
        kwargs["init_from"] = previous
    return FCNS[name](**kwargs)


def evaluate(model: torch.nn.Module, data: ResidentData, p: Preset, dev: torch.device) -> Any:
    model.eval()
    matrix = ConfusionMatrix(11, ignore_index=255, device=dev)
    kept = []
    with torch.inference_mode(), autocast(dev, p.amp):
        for images, masks in data.batches(p.batch * 2):
            x = model.preprocess(images)
            if p.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            pred = model(x).argmax(1)
            matrix.update(pred, masks)
            if len(kept) < 4:
                kept += [(i, m, q) for i, m, q in zip(images, masks, pred, strict=True)][:4]
    model.train()
    return matrix, kept


def autocast(dev: torch.device, amp: bool) -> Any:
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and dev.type == "cuda")


def train_stage(
    stage: str,
    iterations: int,
    model: torch.nn.Module,
    train: ResidentData,
    val: ResidentData,
    weights: torch.Tensor,
    p: Preset,
    dev: torch.device,
    log: Log,
) -> tuple[list[dict[str, Any]], Any]:
    model.to(dev).train()
    if p.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=p.lr)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=iterations, power=0.9)
    loss_fn = SegmentationLoss(class_weights=weights).to(dev)
    fill = tuple(c / 255 for c in fill_from_preprocess(model.preprocess))
    gen = torch.Generator(device=dev).manual_seed(0)
    rows: list[dict[str, Any]] = []
    stage_start = time.perf_counter()
    result = None
    for it in range(1, iterations + 1):
        images, masks = train.sample(p.batch, crop=p.size, scale_range=p.scale_range,
                                     hflip=True, fill=fill, generator=gen)  # fmt: skip
        x = model.preprocess(images)
        if p.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(dev, p.amp):
            logits = model(x)
        loss = loss_fn(logits.float(), masks)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if it % 10 == 0 or it == iterations:
            value = float(loss.detach())
            if value != value:  # NaN
                raise FloatingPointError(f"{stage}: loss is NaN at iteration {it}")
            rows.append({"iteration": it, "loss": value, "lr": sched.get_last_lr()[0]})
        if it % p.eval_every == 0 or it == iterations:
            matrix, kept = evaluate(model, val, p, dev)
            metrics = matrix.compute(train.classes)
            rows.append({"iteration": it, "mean_iu": metrics["mean_iu"],
                         "pixel_acc": metrics["pixel_acc"]})  # fmt: skip
            rate = it * p.batch / (time.perf_counter() - stage_start)
            log(f"{stage} it {it}/{iterations}: loss {float(loss):.3f}  val mean IU "
                f"{metrics['mean_iu']:.4f}  pixel acc {metrics['pixel_acc']:.4f}  "
                f"({rate:.1f} img/s incl. evaluation)")  # fmt: skip
            result = (metrics, matrix, kept)
    return rows, result


def main() -> None:
    shared = shared_root()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="gpu on CUDA, else cpu")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--root", type=Path, default=shared / "data" / "camvid")
    vgg = shared / "weights" / "vgg16-imagenet-features.safetensors"
    parser.add_argument("--weights", type=Path, default=vgg)
    parser.add_argument("--test-root", type=Path, help="also evaluate <root>/test (+testannot)")
    parser.add_argument("--iterations", type=float, default=1.0, help="scale every stage's length")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    preset_name = args.preset or ("gpu" if args.device == "cuda" else "cpu")
    p = PRESETS[preset_name]
    if args.iterations != 1.0:
        p = replace(p, stages=[(s, max(1, round(n * args.iterations))) for s, n in p.stages])
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    stem = f"camvid-{preset_name}"
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / f"{stem}.log.txt")
    log(f"{command()} on {dev}; preset {asdict(p)}")

    def load(split: str, root: Path = args.root) -> ResidentData:
        dataset = build_dataset("camvid", root=str(root), split=split)
        return ResidentData.from_dataset(dataset, size=p.size, device=dev, limit=p.limit,
                                         progress=False)  # fmt: skip

    train, val = load("train"), load("val")
    log(f"decoded train {len(train)} + val {len(val)} images into {dev} memory "
        f"({(train.nbytes + val.nbytes) / 2**20:.0f} MB)")  # fmt: skip
    weights = median_frequency_weights(train.masks.long().cpu(), 11)
    results: dict[str, Any] = {}
    previous = None
    for stage, iterations in p.stages:
        t0 = time.perf_counter()
        model = build(stage, str(args.weights), previous if stage != "fcn8s-atonce" else None)
        rows, (metrics, matrix, kept) = train_stage(
            stage, iterations, model, train, val, weights, p, dev, log
        )
        results[stage] = {
            "iterations": iterations,
            "seconds": time.perf_counter() - t0,
            "wall_since_start_s": time.perf_counter() - START,
            "metrics": metrics,
            "curve": rows,
            "confusion": matrix.matrix.cpu().tolist(),
        }
        if args.test_root:
            test = load("test", args.test_root)
            tm, _ = evaluate(model, test, p, dev)
            results[stage]["test_metrics"] = tm.compute(train.classes)
        _plots(args.out, f"{stem}_{stage}", rows, matrix, kept, train)
        previous = model if stage != "fcn8s-atonce" else previous
    total = time.perf_counter() - START
    log(f"done in {total:.0f} s")
    result = {
        "command": command(),
        "machine": machine(),
        "device": str(dev),
        "preset": preset_name,
        "settings": asdict(p),
        "note": "fc6/fc7/score start random: the shared VGG16 file has conv weights only",
        "wall_s": total,
        "train_images": len(train),
        "val_images": len(val),
        "models": results,
    }
    write_results(args.out, stem, result, _markdown(result, stem))
    print(json.dumps({k: v["metrics"]["mean_iu"] for k, v in results.items()}))


def _plots(out: Path, stem: str, rows: list[dict[str, Any]], matrix: Any, kept: list,
           data: ResidentData) -> None:  # fmt: skip
    from fcnseg.viz import plot_confusion, plot_curves, save_panels

    plot_curves(out / f"{stem}_curves.png", rows)
    plot_confusion(out / f"{stem}_confusion.png", matrix.matrix.cpu().numpy(), data.classes)
    panels = [((i * 255).round().byte().permute(1, 2, 0).cpu().numpy(), m.cpu().numpy(),
               q.cpu().numpy()) for i, m, q in kept]  # fmt: skip
    save_panels(out / f"{stem}_overlays.png", panels, data.palette, data.classes)


def _markdown(result: dict[str, Any], stem: str) -> list[str]:
    m = result["machine"]
    s = result["settings"]
    hw = m.get("gpu") or f"{m['cpu']} ({m['threads']} threads)"
    lines = [
        f"# CamVid — {result['preset']} preset",
        "",
        f"Command: `{result['command']}`  ",
        f"Hardware: {hw}; torch {m['torch']}  ",
        f"Data: CamVid train ({result['train_images']}) → val ({result['val_images']}), 11 "
        f"classes, void ignored, images resized to {s['size'][0]}×{s['size'][1]}; batch "
        f"{s['batch']}, Adam lr {s['lr']} with poly decay, median-frequency class weights, "
        f"random scale {s['scale_range']}, flip, crop on the device.  ",
        f"Initialisation: ImageNet VGG16 conv weights; {result['note']}.  ",
        f"Wall time for the whole script (start-up, decoding, all models, evaluation): "
        f"**{result['wall_s'] / 60:.1f} min**.",
        "",
        "| model | iterations | train s | wall since start | pixel acc | mean acc | mean IU | "
        "fw IU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["models"].items():
        x = r["metrics"]
        lines.append(
            f"| {name} | {r['iterations']} | {r['seconds']:.0f} | {r['wall_since_start_s']:.0f} s"
            f" | {x['pixel_acc']:.3f} | {x['mean_acc']:.3f} | **{x['mean_iu']:.3f}** | "
            f"{x['fw_iu']:.3f} |"
        )
    last = next(reversed(result["models"].values()))["metrics"]["per_class_iu"]
    lines += ["", "Per-class IoU (last model):", "",
              "| " + " | ".join(last) + " |", "|" + "---:|" * len(last),
              "| " + " | ".join(f"{v:.3f}" if v == v else "n/a" for v in last.values()) + " |",
              "", f"Curves, confusion matrices and overlays: `{stem}_<model>_*.png`."]  # fmt: skip
    return lines


if __name__ == "__main__":
    main()
