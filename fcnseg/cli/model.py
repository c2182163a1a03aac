"""``fcnseg summary`` and ``fcnseg geometry``: a model's layers and geometry."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TypeAlias

    from fcnseg.models import FCN

    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_geometry_parser", "add_summary_parser"]


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", choices=["fcn32s", "fcn16s", "fcn8s"], help="FCN variant")
    p.add_argument("--backbone", default="vgg16", help="backbone (default: vgg16)")
    p.add_argument("--num-classes", type=int, default=21, help="classes (default: 21, VOC)")
    p.add_argument("--mode", choices=["exact", "caffe"], default="exact", help="layout")
    p.add_argument("--at-once", action="store_true", help="fcn8s: scaled skips (at-once)")


def _model(args: argparse.Namespace) -> FCN:
    import torch

    from fcnseg.models import build_model

    kwargs = {"backbone": args.backbone, "num_classes": args.num_classes, "mode": args.mode}
    if args.at_once:
        if args.model != "fcn8s":
            raise SystemExit("fcnseg: --at-once applies to fcn8s only")
        kwargs["at_once"] = True
    try:
        # Shapes and geometry only: build on the meta device (no memory, no init cost).
        with torch.device("meta"):
            return build_model(args.model, **kwargs)
    except ValueError as err:
        raise SystemExit(f"fcnseg: {err}") from err


def _summary(args: argparse.Namespace) -> int:
    from fcnseg.summary import parse_input_shape, summarize

    try:
        shape = parse_input_shape(args.input)
    except ValueError as err:
        raise SystemExit(f"fcnseg summary: --input: {err}") from err
    model = _model(args)
    print(summarize(model, shape).table())
    return 0


def _geometry(args: argparse.Namespace) -> int:
    from fcnseg.models.geometry import trace_layers

    model = _model(args)
    print(f"{'layer':<40} {'stride':>8} {'offset':>8} {'rf':>6}")
    for name, grid in trace_layers(model.backbone):
        print(f"{name:<40} {float(grid.stride):>8g} {float(grid.offset):>8g} {float(grid.rf):>6g}")
    print(f"\nscore grid: {model.score_grid}")
    print("crops (derived):", ", ".join(f"{k}={v}" for k, v in model.crops.items()))
    print(f"minimum input handled without padding: {model.min_size} px")
    return 0


def add_summary_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("summary", help="per-layer table: output shapes and parameter counts")
    _add_model_args(p)
    p.add_argument("--input", default="3x500x500", help="input shape CxHxW (default 3x500x500)")
    p.set_defaults(func=_summary)


def add_geometry_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("geometry", help="stride, offset and receptive field of every layer")
    _add_model_args(p)
    p.set_defaults(func=_geometry)
