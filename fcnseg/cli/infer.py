"""``fcnseg eval``, ``predict``, ``export`` and ``serve``: using a trained model."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fcnseg.cli.common import (
    CHECKPOINT_HELP,
    add_inference_args,
    add_weights_arg,
    inference_options,
    load_predictor,
    one_model_source,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_eval_parser", "add_export_parser", "add_predict_parser", "add_serve_parser"]


def _eval(args: argparse.Namespace) -> int:
    from fcnseg.checkpoint import CheckpointError
    from fcnseg.config import ConfigError
    from fcnseg.data.base import DataError
    from fcnseg.engine.evaluate import run_evaluation

    one_model_source(args)
    if args.weights is not None and args.config is None:
        raise SystemExit(
            "fcnseg eval: --weights carry no data config; name the data with --config (a "
            "config file or shipped name, e.g. --config fcn8s_vgg16_voc-sbd)"
        )
    try:
        source, out = args.checkpoint, args.out
        if args.weights is not None:
            from fcnseg.models.pretrained import pretrained_state

            source = pretrained_state(args.weights)
            out = out or f"eval-{_slug(args.weights)}"
        # --workers: the data loader's decoding processes, as predict's (data.num_workers).
        workers = [] if args.workers is None else [f"data.num_workers={args.workers}"]
        run_evaluation(
            source,
            config=args.config,
            overrides=[*(args.set or []), *workers],
            split=args.split,
            out_dir=out,
            save_panels=args.save_panels,
            device=args.device,
            progress=not args.no_progress,
            options=inference_options(args),
            precision=args.precision,
            compile=args.compile,
        )
    except (CheckpointError, ConfigError, DataError, ValueError) as err:
        raise SystemExit(f"fcnseg eval: {err}") from err
    return 0


def _slug(weights: str) -> str:
    """A folder name for results of ``--weights`` (a name or a file)."""
    path = Path(weights)
    return path.stem if path.suffix else weights.replace("/", "-")


def _looks_like_checkpoint(path: str) -> bool:
    p = Path(path)
    run = [p / "checkpoints", p / "best.safetensors", p / "last.safetensors"]
    return p.suffix in (".safetensors", ".onnx") or any(f.exists() for f in run)


def _predict(args: argparse.Namespace) -> int:
    from fcnseg.checkpoint import CheckpointError
    from fcnseg.data.base import DataError
    from fcnseg.engine.distributed import all_gather, cleanup, setup
    from fcnseg.inference import predict_paths

    # With --weights every positional argument is an input: argparse gave the first to
    # CHECKPOINT, unless it really is one.
    given = args.checkpoint
    if args.weights is not None and given is not None and not _looks_like_checkpoint(given):
        args.inputs, args.checkpoint = [given, *args.inputs], None
    one_model_source(args)
    failures: list[tuple[Path, str]] = []
    options = inference_options(args)
    try:
        # Under torchrun each process takes its share of the inputs (one process: all).
        dist_info, device = setup(args.device, what="--device")
        args.device = str(device)
        predictor = load_predictor(args)
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
            workers=args.workers,
            overwrite=args.overwrite,
            overlays=args.overlays,
            rank=dist_info.rank,
            world_size=dist_info.world_size,
        )
    except (CheckpointError, DataError, ValueError) as err:
        cleanup()
        raise SystemExit(f"fcnseg predict: {err}") from err
    for path, message in failures:
        print(f"skipped {path}: {message}", file=sys.stderr)
    # Every rank's count and failures, this run's (each rank printed its own above).
    shares = all_gather((len(written), [(str(f), m) for f, m in failures]))
    cleanup()
    if not dist_info.is_main:
        return 1 if failures else 0
    what = "label maps (+ overlays)" if args.overlays else "label maps"
    ranks = f" by {dist_info.world_size} processes" if dist_info.enabled else ""
    print(f"wrote {sum(n for n, _ in shares)} {what} to {args.out}{ranks}")
    failed = [f for i, (_, fs) in enumerate(shares) if i != dist_info.rank for f in fs]
    for path, message in failed:
        print(f"failed {path}: {message}", file=sys.stderr)
    count = sum(len(fs) for _, fs in shares)
    if count:
        print(f"fcnseg predict: {count} file(s) could not be used (above; and in "
              f"{args.out}/manifest-rank*.jsonl)", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    from fcnseg.export import export_model, exported_files

    one_model_source(args)
    source = args.checkpoint
    if args.weights is not None:
        from fcnseg.models.pretrained import pretrained_state

        source = pretrained_state(args.weights)
    path = export_model(
        source,
        args.out,
        fmt=args.format,
        quantize=args.quantize,
        calibrate=args.calibrate,
        calibration_images=args.calibration_images,
    )
    files = exported_files(path)
    if args.quantize is not None:
        from fcnseg.export import read_onnx_metadata

        cal = read_onnx_metadata(path)["calibration"]
        print(f"wrote {path} ({args.quantize}, calibrated on {cal['images']} images of "
              f"{cal['source']}; labels as the float model's on {cal['agreement']:.1%} of "
              "the pixels checked)")  # fmt: skip
    elif len(files) > 1:  # over 2 GB: ONNX's external-data layout, two files that travel together
        data = ", ".join(str(f) for f in files[1:])
        print(f"wrote {path} with its weights in {data} (keep them together)")
    else:
        print(f"wrote {path}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from fcnseg.checkpoint import resolve_checkpoint
    from fcnseg.inference.precision import autocast_for
    from fcnseg.serve import ServeLimits, run_server
    from fcnseg.serve.auth import read_token, require_token_off_loopback

    one_model_source(args)
    options = inference_options(args)
    try:  # before binding and loading: a refusal costs nothing
        token = read_token(args.token_file)
        require_token_off_loopback(args.host, token, args.insecure)
        autocast_for(args.weights or args.checkpoint, args.precision)  # without loading
        if args.checkpoint is not None:
            if not str(args.checkpoint).endswith(".onnx"):
                resolve_checkpoint(args.checkpoint)
            elif not Path(args.checkpoint).is_file():
                raise ValueError(f"model {args.checkpoint} does not exist")
    except ValueError as err:
        raise SystemExit(f"fcnseg serve: {err}") from err
    for flag, value in (("--timeout", args.timeout), ("--drain-timeout", args.drain_timeout)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise SystemExit(f"fcnseg serve: {flag} must be a number of seconds above 0")
    try:
        limits = ServeLimits(
            max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
            max_pixels=args.max_pixels,
            max_concurrent=args.max_concurrent,
            max_queue=args.max_queue,
            timeout=args.timeout,
        )
    except ValueError as err:  # e.g. --max-concurrent 0
        raise SystemExit(f"fcnseg serve: {err}") from err

    def ready(url: str) -> None:
        print(f"fcnseg serve: {url}  (API docs at /docs; Ctrl-C stops)", flush=True)

    # The model loads once the port listens: /health answers and /ready is 503 meanwhile.
    run_server(lambda: load_predictor(args), host=args.host, port=args.port, limits=limits,
               options=options, on_ready=ready, token=token, insecure=args.insecure,
               drain_timeout=args.drain_timeout)  # fmt: skip
    return 0


def add_eval_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: the four metrics, plots")
    p.add_argument("checkpoint", nargs="?", help=CHECKPOINT_HELP)
    add_weights_arg(p)
    p.add_argument(
        "--config", help="config for the data (default: the one stored with it; --weights: needed)"
    )
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
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="DataLoader processes decoding images ahead of the model (default: the config's "
        "data.num_workers)",
    )
    add_inference_args(p)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_eval)


def add_predict_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("predict", help="label maps and overlays for images, any size")
    p.add_argument("checkpoint", nargs="?", help=CHECKPOINT_HELP)
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    add_weights_arg(p)
    p.add_argument("-o", "--out", required=True, help="output directory")
    p.add_argument("--probabilities", action="store_true", help="also write NAME_probs.npy")
    p.add_argument(
        "--no-overlays",
        dest="overlays",
        action="store_false",
        help="write label maps only, no NAME_overlay.png (writing an overlay costs about as much "
        "CPU as a small model's prediction: leave them out when labelling large folders)",
    )
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
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="DataLoader processes decoding images ahead of the model (0: decode in turn)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="predict every image again (default: skip images whose outputs are all in -o, "
        "so a rerun resumes an interrupted run)",
    )
    add_inference_args(p)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_predict)


def add_export_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("export", help="ONNX (dynamic batch/height/width) or TorchScript")
    p.add_argument("checkpoint", nargs="?", help="checkpoint file or run directory (or --weights)")
    add_weights_arg(p)
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("-o", "--out", required=True, help="output file")
    g = p.add_argument_group("post-training quantization (ONNX Runtime, static, QDQ)")
    g.add_argument(
        "--quantize",
        choices=["int8"],
        help="int8 weights (per channel) and activations, calibrated on --calibrate images; "
        "refused when its labels agree with the float model's on under 90%% of the pixels",
    )
    g.add_argument(
        "--calibrate",
        metavar="FOLDER",
        help="images like those the model will see (a folder, or a data folder with images/)",
    )
    g.add_argument(
        "--calibration-images", type=int, default=32, metavar="N", help="images used (32)"
    )
    p.set_defaults(func=_export)


def add_serve_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("serve", help="HTTP API + web page: upload an image, see the overlay")
    p.add_argument("checkpoint", nargs="?", help=CHECKPOINT_HELP)
    add_weights_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one)")
    p.add_argument(
        "--token-file",
        metavar="FILE",
        help="the API requires 'Authorization: Bearer <token>' with the token in FILE (default: "
        "the FCNSEG_TOKEN environment variable; none: no token)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="serve beyond loopback (--host 0.0.0.0 …) without a token; refused otherwise",
    )
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="413 beyond (default 20)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="413 beyond (default 40M)")
    p.add_argument("--max-concurrent", type=int, default=1, help="inferences at once (1)")
    p.add_argument("--max-queue", type=int, default=8, help="requests waiting; 503 beyond (8)")
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="504 for a prediction not answered this long after it asked for a slot (default: "
        "none); a running inference keeps its slot until it ends",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM/Ctrl-C, wait at most this long for admitted requests (default 30)",
    )
    add_inference_args(p)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.set_defaults(func=_serve)
