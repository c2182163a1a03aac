"""The paper's efficiency claim: one whole-image FCN pass vs classifying a patch per pixel.

Labels every pixel of a 500×500 image two ways with the same network:

(a) fully convolutional: one forward pass over the whole image;
(b) patch-wise (what the paper argues against): for each pixel, a 224×224 patch centred on it
    (the image normalised, zero-padded beyond its border) goes through the network and the
    label is read at the patch centre. Running 250,000 patches is hours, so ``--samples``
    random pixels are classified in batches and the time per patch is extrapolated to every
    pixel (time per patch × H × W; batches keep the CPU busy, so this is the patch method at
    its best).

The two agree where the network sees the same input: they differ only through context beyond
the 224 window (the whole-image pass sees it, a patch is zero-padded). Reported: argmax
agreement and mean |Δp| on the sampled pixels, and the speedup (b)/(a).

    .venv/bin/python benchmarks/patchwise.py                      # VGG16 FCN-8s, shared weights
    .venv/bin/python benchmarks/patchwise.py --checkpoint runs/horse
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import OUT, command, machine, median, pyplot, shared_root, time_ms, write_results

from fcnseg.data.io import read_image
from fcnseg.forward import forward
from fcnseg.models import fcn8s


def _image(path: Path, size: int) -> torch.Tensor:
    img = read_image(path).float()[None] / 255
    return F.interpolate(img, size=(size, size), mode="bilinear", antialias=True)[0]


def _pad_with_mean(model: torch.nn.Module, x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad images ``x`` (in [0, 1]) by ``pad`` with the colour the model's preprocessing maps to
    zero: the same as zero-padding the normalised input. (The preprocessing is affine per
    channel, p(x) = a·x + b, so that colour is −b/a.)"""
    with torch.no_grad():
        b = model.preprocess(torch.zeros(1, 3, 1, 1)).flatten()
        a = model.preprocess(torch.ones(1, 3, 1, 1)).flatten() - b
    order = [2, 1, 0] if getattr(model.preprocess, "channel_order", "RGB") == "BGR" else [0, 1, 2]
    colour = (-b / a)[order].view(1, 3, 1, 1)
    padded = F.pad(x - colour, (pad, pad, pad, pad))
    return padded + colour


def exactness_check(model: torch.nn.Module, image_path: Path, patch: int) -> dict[str, float]:
    """Patch-wise ≡ whole-image where it must be: a patch that holds the output's whole
    receptive field and starts on the network's stride-32 grid gives, at its centre, the
    whole-image output to float precision (the FCN computes the same function and shares the
    overlapping work). Checked on a 1024×1024 image at 8 interior pixels."""
    n = 1024
    x = _image(image_path, n)[None]
    half = patch // 2
    with torch.inference_mode():
        whole = forward(model, x)[0]
        gen = np.random.default_rng(1)
        # Centres c with c − half ≡ 0 (mod 32), the patch wholly inside the image.
        grid = [c for c in range(half, n - half + 1) if (c - half) % 32 == 0]
        picks = [(int(gen.choice(grid)), int(gen.choice(grid))) for _ in range(8)]
        diffs = []
        for cy, cx in picks:
            window = x[..., cy - half : cy + half, cx - half : cx + half]
            out = forward(model, window)[0, :, half, half]
            diffs.append(float((out - whole[:, cy, cx]).abs().max()))
    scale = float(whole.abs().max())
    return {"patch": patch, "pixels": len(picks), "max_abs_diff": max(diffs),
            "max_logit": scale, "max_rel_diff": max(diffs) / scale}  # fmt: skip


def main() -> None:
    shared = shared_root()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a trained fcnseg checkpoint (default: see --weights)")
    weights = shared / "weights" / "vgg16-imagenet-features.safetensors"
    parser.add_argument("--weights", type=Path, default=weights)
    parser.add_argument("--image", type=Path, default=None, help="default: first CamVid val image")
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--patch", type=int, default=224)
    parser.add_argument("--samples", type=int, default=64, help="pixels classified patch-wise")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    help_exact = "patch ≥ the receptive field, a multiple of 32, for the check"
    parser.add_argument("--exact-patch", type=int, default=576, help=help_exact)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    torch.manual_seed(0)
    if args.checkpoint:
        from fcnseg.checkpoint import load_checkpoint

        model = load_checkpoint(args.checkpoint).build_model()
        described = f"checkpoint {args.checkpoint}"
    else:
        model = fcn8s(backbone="vgg16", num_classes=21, backbone_weights=str(args.weights))
        with torch.no_grad():  # score layers start at zero (the paper's init): all-equal scores
            for layer in (model.score_fr, *model.scorers.values()):  # would agree trivially
                layer.weight.normal_(0, 0.01)
        described = "FCN-8s/VGG16, ImageNet conv weights, fc6/fc7/score random (21 classes)"
    model.eval()
    image_path = args.image or sorted((shared / "data" / "camvid" / "val").iterdir())[0]
    x = _image(image_path, args.size)[None]
    n = args.size

    with torch.inference_mode():
        whole_ms = time_ms(lambda: forward(model, x), repeats=args.repeats)
        whole = forward(model, x)[0].softmax(0)  # C×H×W

        rng = np.random.default_rng(0)
        ys, xs = rng.integers(0, n, args.samples), rng.integers(0, n, args.samples)
        half = args.patch // 2
        padded = _pad_with_mean(model, x, half)  # the colour the network sees as zero
        patches = torch.cat([padded[..., y : y + args.patch, x_ : x_ + args.patch]
                             for y, x_ in zip(ys, xs, strict=True)])  # fmt: skip
        probs, batch_ms = [], []
        for i in range(0, args.samples, args.batch):
            chunk = patches[i : i + args.batch]
            times = time_ms(lambda c=chunk: forward(model, c), repeats=args.repeats,
                            warmup=int(i == 0))  # fmt: skip
            batch_ms.append(median(times) / len(chunk))
            probs.append(forward(model, chunk)[:, :, half, half].softmax(1))
        patch_probs = torch.cat(probs)  # samples × C
    per_patch_ms = median(batch_ms)
    patch_total_s = per_patch_ms * n * n / 1e3
    whole_s = median(whole_ms) / 1e3
    fcn_probs = whole[:, torch.as_tensor(ys), torch.as_tensor(xs)].T  # samples × C
    agree = float((fcn_probs.argmax(1) == patch_probs.argmax(1)).float().mean())
    dp = float((fcn_probs - patch_probs).abs().sum(1).mean() / 2)  # total-variation distance
    # Pixels whose patch lies wholly inside the image (no padding): context is the only cause.
    inside = torch.as_tensor((ys >= half) & (ys < n - half) & (xs >= half) & (xs < n - half))

    exact = exactness_check(model, image_path, args.exact_patch)

    result = {
        "exactness_check": exact,
        "command": command(),
        "machine": machine(),
        "model": described,
        "image": str(image_path),
        "size": n,
        "patch": args.patch,
        "samples": args.samples,
        "whole_image_s": whole_s,
        "whole_image_ms_runs": whole_ms,
        "patch_ms_per_patch": per_patch_ms,
        "patchwise_extrapolated_s": patch_total_s,
        "speedup": patch_total_s / whole_s,
        "argmax_agreement": agree,
        "argmax_agreement_interior": (
            float((fcn_probs.argmax(1) == patch_probs.argmax(1))[inside].float().mean())
            if inside.any()
            else None
        ),
        "mean_tv_distance": dp,
    }
    ai = result["argmax_agreement_interior"]
    interior = "none sampled" if ai is None else f"{ai:.1%}"
    md = [
        "# Whole-image FCN vs patch-wise classification (the paper's efficiency claim)",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']['cpu']}, {result['machine']['threads']} threads, "
        f"torch {result['machine']['torch']}  ",
        f"Model: {described}; image {image_path.name} resized to {n}×{n}.",
        "",
        "| method | time to label all pixels | per pixel |",
        "|---|---:|---:|",
        f"| (a) whole image, one pass | {whole_s:.2f} s | {whole_s / n / n * 1e6:.2f} µs |",
        f"| (b) {args.patch}×{args.patch} patch per pixel (extrapolated from {args.samples}) "
        f"| {patch_total_s / 3600:.1f} h | {per_patch_ms:.1f} ms |",
        "",
        f"Speedup of (a) over (b): **{result['speedup']:,.0f}×**.  ",
        f"Agreement on the {args.samples} sampled pixels: argmax {agree:.1%} "
        f"(pixels whose patch lies inside the image: {interior}), mean total-variation "
        f"distance between the two class distributions {dp:.3f}. They differ only through "
        "context beyond the patch (the whole-image pass sees it; a patch is zero-padded) and "
        "through the grid the patch puts the network's pooling on.",
        "",
        f"Exactness check: with a {exact['patch']}×{exact['patch']} patch (holding the whole "
        "receptive field) placed on the stride-32 grid, the patch-wise output equals the "
        f"whole-image output at {exact['pixels']} pixels of a 1024×1024 image to "
        f"{exact['max_rel_diff']:.1e} (max |Δ| relative to the largest logit): the FCN computes "
        "the same function, sharing the work of overlapping patches.",
    ]
    write_results(args.out, "patchwise", result, md)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(["(a) whole image", "(b) patch-wise"], [whole_s, patch_total_s], color=["C0", "C3"])
    ax.set_yscale("log")
    ax.set_ylabel("seconds to label 500×500 (log)")
    ax.set_title(f"FCN vs patch-wise: {result['speedup']:,.0f}× faster")
    fig.tight_layout()
    fig.savefig(args.out / "patchwise.png", dpi=120)
    print("\n".join(md))


if __name__ == "__main__":
    main()
