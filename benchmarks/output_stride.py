"""What the upsampling schedule costs before any learning: the segmentation given by the ground
truth itself at output stride s, upsampled once, bilinearly, to the image.

FCN-32s/16s/8s score the image at stride 32/16/8 and end with one bilinear ×32/×16/×8
upsampling; U-Net upsamples ×2 per stage with convolutions after each and predicts at stride
1. Here the "prediction" at stride s is the ground truth itself, averaged over each s×s cell
(natural class scores at that stride), then bilinearly upsampled ×s and argmaxed. This is not a
bound over every score map: scores peaking at a knot of the upsampler (coarse cell i lands
between output pixels s·i + s/2 − 1 and s·i + s/2) draw a line 1 px wide there, though nowhere
else (``tests/test_output_stride.py``). Thin structures (ISBI cell membranes, a few pixels wide)
lose most; blobs (horses) little. Run:

    .venv/bin/python benchmarks/output_stride.py   # → docs/benchmarks/output_stride.{json,md,png}
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import OUT, command, machine, pyplot, shared_root, write_results

from fcnseg.metrics import ConfusionMatrix

STRIDES = (1, 2, 4, 8, 16, 32)
IGNORE = 255  # the datasets' ignore label


def stride_ceiling(mask: torch.Tensor, stride: int, num_classes: int) -> torch.Tensor:
    """Argmax of the bilinearly ×``stride``-upsampled cell averages of the one-hot mask."""
    h, w = mask.shape
    valid = mask != IGNORE
    onehot = F.one_hot(torch.where(valid, mask, 0), num_classes).permute(2, 0, 1).float()
    onehot = onehot * valid  # ignored pixels vote for no class
    ph, pw = -h % stride, -w % stride
    coarse = F.avg_pool2d(F.pad(onehot[None], (0, pw, 0, ph)), stride)
    fine = F.interpolate(coarse, scale_factor=stride, mode="bilinear", align_corners=False)
    return fine[0, :, :h, :w].argmax(0)


def _masks(shared: Path, dataset: str, size: int | None) -> tuple[list[torch.Tensor], Any]:
    """Every mask of the whole data set (ISBI 2012 EM or Weizmann Horse, as the product reads
    them), resized to size×size (nearest) when asked, as in unet_vs_fcn.py's Horse runs."""
    from fcnseg.data.datasets.folder import FolderPairs

    folder, meta = {"isbi": ("isbi2012-em", "isbi2012"), "horse": ("weizmann-horse", "horse")}[
        dataset
    ]
    data = FolderPairs(shared / "data" / folder, "all", meta=meta)
    masks = []
    for i in range(len(data)):
        mask = data.load(i)[1].as_subclass(torch.Tensor)
        if size is not None and tuple(mask.shape[-2:]) != (size, size):
            mask = F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest-exact")
            mask = mask[0, 0].long()
        masks.append(mask)
    return masks, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", help="shared data/weights folder (default $FCNSEG_SHARED)")
    parser.add_argument("--horse-size", type=int, default=192, help="as in unet_vs_fcn.py")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    shared = shared_root(args.shared)
    rows = []
    for dataset, size in (("isbi", None), ("horse", args.horse_size)):
        masks, data = _masks(shared, dataset, size)
        for stride in STRIDES:
            matrix = ConfusionMatrix(2, IGNORE)
            for mask in masks:
                matrix.update(stride_ceiling(mask, stride, 2), mask)
            m = matrix.compute()
            rows.append({
                "dataset": dataset, "size": size or "native", "stride": stride,
                "images": len(masks), "pixel_error": 1 - m["pixel_acc"],
                "fg_iou": m["per_class_iu"][1], "bg_iou": m["per_class_iu"][0],
                "mean_iu": m["mean_iu"], "classes": data.classes,
            })  # fmt: skip
            print(f"{dataset} stride {stride:2d}: mean IU {m['mean_iu']:.4f}")
    result = {"command": command(), "machine": machine(), "rows": rows}
    md = [
        "# Output stride: ground truth averaged to stride s, upsampled bilinearly",
        "",
        f"Command: `{result['command']}`",
        "",
        "| dataset | stride | class 0 IoU | class 1 IoU | mean IU | pixel error |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['dataset']} ({r['classes'][0]} / {r['classes'][1]}) | {r['stride']} | "
            f"{r['bg_iou']:.4f} | {r['fg_iou']:.4f} | {r['mean_iu']:.4f} | "
            f"{r['pixel_error']:.4f} |"
        )
    md += ["", "![output stride](output_stride.png)"]
    write_results(args.out, "output_stride", result, md)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for dataset in ("isbi", "horse"):
        sub = [r for r in rows if r["dataset"] == dataset]
        ax.plot([r["stride"] for r in sub], [r["mean_iu"] for r in sub], "o-", label=dataset)
    ax.set_xscale("log", base=2)
    ax.set_xticks(STRIDES, [str(s) for s in STRIDES])
    ax.set_xlabel("output stride (FCN-8s: 8, FCN-32s: 32, U-Net: 1)")
    ax.set_ylabel("ceiling mean IU")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "output_stride.png")


if __name__ == "__main__":
    main()
