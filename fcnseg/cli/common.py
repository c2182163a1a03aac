"""Flags and helpers shared by several commands."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fcnseg.inference import InferenceOptions, Predictor

__all__ = [
    "add_inference_args",
    "add_weights_arg",
    "inference_options",
    "load_predictor",
    "one_model_source",
]

CHECKPOINT_HELP = "checkpoint file, run directory or exported .onnx (or give --weights)"


def add_weights_arg(p: argparse.ArgumentParser) -> None:
    """``--weights NAME|FILE``: published weights or a weights file instead of a checkpoint."""
    p.add_argument(
        "--weights",
        metavar="NAME|FILE",
        help="instead of a checkpoint: published weights by name (e.g. "
        "torchvision/fcn_resnet50_coco, reference/fcn8s_voc; downloaded once) or a weights file "
        "in torchvision's or the reference's layout",
    )


def one_model_source(args: argparse.Namespace) -> None:
    """Exactly one of the CHECKPOINT argument and ``--weights`` (a one-line error otherwise)."""
    if args.checkpoint is not None and args.weights is not None:
        raise SystemExit(f"fcnseg {args.command}: give a checkpoint or --weights, not both")
    if args.checkpoint is None and args.weights is None:
        raise SystemExit(
            f"fcnseg {args.command}: give a checkpoint (file or run directory) or "
            "--weights NAME|FILE (e.g. --weights torchvision/fcn_resnet50_coco)"
        )


def load_predictor(args: argparse.Namespace) -> Predictor:
    """The Predictor of ``args.checkpoint`` or ``args.weights`` on ``args.device``, at
    ``args.precision`` (:func:`fcnseg.inference.precision.autocast_for`), compiled when
    ``args.compile``."""
    from fcnseg.inference import Predictor
    from fcnseg.inference.precision import autocast_for

    amp = autocast_for(args.weights or args.checkpoint, args.precision)
    if args.weights is not None:
        predictor = Predictor.from_pretrained(args.weights, device=args.device, amp=amp)
    else:
        predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, amp=amp)
    return predictor.compile() if args.compile else predictor


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
    g = p.add_argument_group("inference (precision, scale, tiling, test-time augmentation, CRF)")
    g.add_argument(
        "--precision",
        choices=["fp32", "bf16", "int8"],
        default=None,
        help="fp32, or bf16 autocast (faster on CPUs with bf16 units, ~1%% of pixels may "
        "change); default fp32 (eval: the training's train.amp); an .onnx model runs at its "
        "own precision (int8: an export made with --quantize int8)",
    )
    g.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network first (seconds per input size; then FCN-8s/VGG16 runs "
        "1.4× faster on CPU, in fp32 and in bf16): for many images; checkpoints only",
    )
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
