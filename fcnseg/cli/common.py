"""Flags and helpers shared by several commands."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fcnseg.inference import InferenceOptions

__all__ = ["add_inference_args", "inference_options"]


def inference_options(args: argparse.Namespace) -> InferenceOptions:
    """The :class:`InferenceOptions` of ``--tile/--overlap``, ``--tta``, ``--crf …`` and
    ``--scale`` (the same flags for predict, eval and serve)."""
    from fcnseg.crf import CRFParams
    from fcnseg.inference import TTA_SCALES, InferenceOptions

    crf = None
    if args.crf:
        crf = CRFParams(
            iterations=args.crf_iterations,
            bilateral_sxy=args.crf_sxy,
            bilateral_srgb=args.crf_srgb,
            bilateral_weight=args.crf_weight,
        )
    try:
        return InferenceOptions(
            tile=args.tile,
            overlap=args.overlap,
            flip=args.tta,
            scales=TTA_SCALES if args.tta else (1.0,),
            crf=crf,
            scale=args.scale,
        )
    except ValueError as err:
        raise SystemExit(f"fcnseg {args.command}: {err}") from err


def add_inference_args(p: argparse.ArgumentParser) -> None:
    """The flags :func:`inference_options` reads."""
    g = p.add_argument_group("inference (scale, tiling, test-time augmentation, CRF)")
    g.add_argument(
        "--scale",
        choices=["train", "native"],
        default="train",
        help="train: resize each image to the training's data.resize (recorded in the "
        "checkpoint), predict, resize back; native: predict at the image's own size (train)",
    )
    g.add_argument(
        "--tile",
        type=int,
        metavar="PX",
        help="overlap-tiled (sliding-window) inference (default: whole image)",
    )
    g.add_argument(
        "--overlap", type=int, default=64, metavar="PX", help="tile overlap, in [0, tile) (64)"
    )
    g.add_argument("--tta", action="store_true", help="average flip × scales 0.75/1/1.25")
    g.add_argument("--crf", action="store_true", help="refine with a fully connected CRF")
    g = p.add_argument_group("CRF (with --crf; defaults: DeepLab's)")
    g.add_argument("--crf-iterations", type=int, default=5, help="mean-field steps (5)")
    g.add_argument("--crf-sxy", type=float, default=80.0, help="bilateral width, px (80)")
    g.add_argument("--crf-srgb", type=float, default=13.0, help="bilateral colour width (13)")
    g.add_argument("--crf-weight", type=float, default=10.0, help="bilateral weight (10)")
