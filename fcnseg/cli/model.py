"""``fcnseg summary`` and ``fcnseg geometry``: a model's layers and geometry, for a registered
model by name (with its main arguments) or the model of a checkpoint (file or run directory)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import TypeAlias

    from torch import nn

    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_geometry_parser", "add_summary_parser"]

#: FCN-only flags: their argparse destinations and the builder arguments they set.
_FCN_FLAGS = {"backbone": "--backbone", "mode": "--mode", "at_once": "--at-once"}


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        help="model name (fcn32s, fcn16s, fcn8s, fcn_resnet, unet) or a checkpoint file/run folder",
    )
    p.add_argument("--backbone", help="FCN backbone (default: vgg16)")
    p.add_argument("--num-classes", type=int, help="classes (default: 21, VOC's; U-Net: 2)")
    p.add_argument("--mode", choices=["exact", "caffe"], help="FCN layout (default: exact)")
    p.add_argument("--at-once", action="store_true", default=None, help="fcn8s: scaled skips")


def _model(args: argparse.Namespace) -> tuple[nn.Module, str]:
    """The model (on the meta device: shapes only, no memory or init cost) and a label."""
    import torch

    from fcnseg.models import MODELS, build_model

    given = {k: v for k, v in vars(args).items() if k in (*_FCN_FLAGS, "num_classes")}
    given = {k: v for k, v in given.items() if v is not None}
    spec: dict[str, Any]
    if args.model not in MODELS and Path(args.model).exists():
        from fcnseg.checkpoint import load_checkpoint

        if given:
            flags = ", ".join(_FCN_FLAGS.get(k, "--num-classes") for k in given)
            raise ValueError(f"{flags}: the checkpoint {args.model} already says its model")
        spec = dict(load_checkpoint(args.model).model)
    elif args.model not in MODELS:
        from fcnseg.choices import unknown_choice

        raise ValueError(
            f"{unknown_choice('model', args.model, sorted(MODELS))} (or give a checkpoint file "
            "or run folder)"
        )
    elif args.model == "unet":
        fcn_only = [flag for key, flag in _FCN_FLAGS.items() if key in given]
        if fcn_only:
            verb = "applies" if len(fcn_only) == 1 else "apply"
            raise ValueError(f"{', '.join(fcn_only)} {verb} to FCN models, not unet")
        spec = {"name": "unet", "num_classes": given.get("num_classes", 2)}
    else:
        if given.get("at_once") and args.model != "fcn8s":
            raise ValueError("--at-once applies to fcn8s only")
        spec = {"name": args.model, "num_classes": 21, **given}  # FCNs default to vgg16
    with torch.device("meta"):
        return build_model(spec), spec["name"]


def _input_shape(text: str | None, model: nn.Module) -> tuple[int, ...]:
    """``--input`` as C×H×W (H×W: the model's channels); default the paper's input size."""
    from fcnseg.summary import parse_input_shape

    channels = int(getattr(model, "in_channels", 3))
    if text is None:
        size = 572 if type(model).__name__ == "UNet" else 500
        return (channels, size, size)
    try:
        shape = parse_input_shape(text)
    except ValueError as err:
        raise ValueError(f"--input: {err}") from err
    if len(shape) == 2:
        return (channels, *shape)
    if len(shape) != 3:
        raise ValueError(f"--input {text!r}: give HxW or CxHxW, e.g. 500x500 or 3x500x500")
    allowed = {1, 3} if type(model).__name__ == "UNet" else {3}  # U-Net converts grey ↔ RGB
    if shape[0] not in allowed:
        takes = " or ".join(str(c) for c in sorted(allowed))
        raise ValueError(f"--input {text!r}: the model takes {takes}-channel images")
    return shape


def _summary(args: argparse.Namespace) -> int:
    from fcnseg.summary import summarize

    model, _ = _model(args)
    print(summarize(model, _input_shape(args.input, model)).table())
    return 0


def _geometry(args: argparse.Namespace) -> int:
    from fcnseg.models import FCN
    from fcnseg.models.geometry import trace_layers

    model, name = _model(args)
    if not isinstance(model, FCN):
        raise ValueError(f"geometry traces FCN models (fcn32s, fcn16s, fcn8s), not {name}")
    print(f"{'layer':<40} {'stride':>8} {'offset':>8} {'rf':>6}")
    for layer, grid in trace_layers(model.backbone):
        print(f"{layer:<40} {float(grid.stride):>8g} {float(grid.offset):>8g} {float(grid.rf):>6g}")
    print(f"\nscore grid: {model.score_grid}")
    print("crops (derived):", ", ".join(f"{k}={v}" for k, v in model.crops.items()))
    print(f"minimum input handled without padding: {model.min_size} px")
    return 0


def add_summary_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("summary", help="per-layer table: output shapes and parameter counts")
    _add_model_args(p)
    p.add_argument(
        "--input",
        help="input shape HxW or CxHxW (default 3x500x500; U-Net: 1x572x572, the paper's)",
    )
    p.set_defaults(func=_summary)


def add_geometry_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("geometry", help="stride, offset and receptive field of every layer")
    _add_model_args(p)
    p.set_defaults(func=_geometry)
