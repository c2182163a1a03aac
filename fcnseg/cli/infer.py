"""``fcnseg eval``, ``predict``, ``export`` and ``serve``: using a trained model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fcnseg.cli.common import add_inference_args, inference_options

if TYPE_CHECKING:
    from typing import TypeAlias

    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_eval_parser", "add_export_parser", "add_predict_parser", "add_serve_parser"]


def _eval(args: argparse.Namespace) -> int:
    from fcnseg.checkpoint import CheckpointError
    from fcnseg.config import ConfigError
    from fcnseg.data.base import DataError
    from fcnseg.engine.evaluate import run_evaluation

    try:
        run_evaluation(
            args.checkpoint,
            config=args.config,
            overrides=args.set,
            split=args.split,
            out_dir=args.out,
            save_panels=args.save_panels,
            device=args.device,
            progress=not args.no_progress,
            options=inference_options(args),
        )
    except (CheckpointError, ConfigError, DataError, ValueError) as err:
        raise SystemExit(f"fcnseg eval: {err}") from err
    return 0


def _predict(args: argparse.Namespace) -> int:
    from fcnseg.checkpoint import CheckpointError
    from fcnseg.data.base import DataError
    from fcnseg.inference import Predictor, predict_paths

    failures: list[tuple[Path, str]] = []
    options = inference_options(args)
    try:
        predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device)
        written = predict_paths(
            predictor,
            args.inputs,
            args.out,
            options=options,
            save_probabilities=args.probabilities,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            failures=failures,
            panels=args.panels,
            masks=args.masks,
            tint_background=args.tint_background,
        )
    except (CheckpointError, DataError, ValueError) as err:
        raise SystemExit(f"fcnseg predict: {err}") from err
    print(f"wrote {len(written)} label maps (+ overlays) to {args.out}")
    for path, message in failures:
        print(f"skipped {path}: {message}", file=sys.stderr)
    if failures:
        print(f"fcnseg predict: {len(failures)} file(s) could not be used (above)", file=sys.stderr)
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    from fcnseg.export import export_model, exported_files

    path = export_model(args.checkpoint, args.out, fmt=args.format)
    files = exported_files(path)
    if len(files) > 1:  # over 2 GB: ONNX's external-data layout, two files that travel together
        data = ", ".join(str(f) for f in files[1:])
        print(f"wrote {path} with its weights in {data} (keep them together)")
    else:
        print(f"wrote {path}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from fcnseg.inference import Predictor
    from fcnseg.serve import ServeLimits, run_server

    options = inference_options(args)
    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device)
    limits = ServeLimits(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=args.max_pixels,
        max_concurrent=args.max_concurrent,
        max_queue=args.max_queue,
    )

    def ready(url: str) -> None:
        print(f"fcnseg serve: {url}  (API docs at /docs; Ctrl-C stops)", flush=True)

    run_server(
        predictor, host=args.host, port=args.port, limits=limits, options=options, on_ready=ready
    )
    return 0


def add_eval_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: the four metrics, plots")
    p.add_argument("checkpoint", help="checkpoint file, run directory or exported .onnx")
    p.add_argument("--config", help="config for the data (default: the one stored with it)")
    p.add_argument("--split", default=None, help="split to evaluate (default: the val split)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-o", "--out", help="output directory (default: beside the checkpoint)")
    p.add_argument(
        "--save-panels",
        type=int,
        default=0,
        metavar="N",
        help="write N image | ground truth | prediction panels",
    )
    add_inference_args(p)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_eval)


def add_predict_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("predict", help="label maps and overlays for images, any size")
    p.add_argument("checkpoint", help="checkpoint file, run directory or exported .onnx")
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("-o", "--out", required=True, help="output directory")
    p.add_argument("--probabilities", action="store_true", help="also write NAME_probs.npy")
    p.add_argument(
        "--panels", action="store_true", help="also write NAME_panel.png: image | prediction"
    )
    p.add_argument(
        "--masks",
        metavar="DIR",
        help="ground-truth masks (class indices) named like the images: panels become "
        "image | ground truth | prediction (implies --panels)",
    )
    p.add_argument(
        "--tint-background",
        action="store_true",
        help="tint the background class in overlays too (default: the photo shows through)",
    )
    p.add_argument("--batch-size", type=int, default=4, help="same-size images per pass (4)")
    add_inference_args(p)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_predict)


def add_export_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("export", help="ONNX (dynamic batch/height/width) or TorchScript")
    p.add_argument("checkpoint", help="checkpoint file or run directory")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("-o", "--out", required=True, help="output file")
    p.set_defaults(func=_export)


def add_serve_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("serve", help="HTTP API + web page: upload an image, see the overlay")
    p.add_argument("checkpoint", help="checkpoint file, run directory or exported .onnx")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="413 beyond (default 20)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="413 beyond (default 40M)")
    p.add_argument("--max-concurrent", type=int, default=1, help="inferences at once (1)")
    p.add_argument("--max-queue", type=int, default=8, help="requests waiting; 503 beyond (8)")
    add_inference_args(p)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.set_defaults(func=_serve)
