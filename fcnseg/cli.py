"""The ``fcnseg`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TypeAlias

    from fcnseg.inference import InferenceOptions
    from fcnseg.models import FCN

    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["main"]


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


def _train(args: argparse.Namespace) -> int:
    import shlex

    from fcnseg.config import ConfigError, load_config
    from fcnseg.engine.trainer import Trainer, TrainingInterrupted

    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as err:
        raise SystemExit(f"fcnseg train: {err}") from err
    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    last = run_dir / "checkpoints" / "last"
    if not args.resume and any(
        Path(f"{last}{ext}").exists() for ext in (".safetensors", ".state.pt")
    ):
        raise SystemExit(
            f"fcnseg train: {run_dir} already holds a run; add --resume to continue it or "
            "choose another -o"
        )
    from fcnseg.checkpoint import CheckpointError
    from fcnseg.data.base import DataError

    sets = [x for item in args.set for x in ("--set", item)]
    extra = ["--stop-at", str(args.stop_at)] if args.stop_at is not None else []
    extra += ["--no-progress"] if args.no_progress else []
    resume = shlex.join(
        ["fcnseg", "train", args.config, "-o", str(run_dir), *sets, *extra, "--resume"]
    )
    trainer = None
    try:
        trainer = Trainer(cfg, run_dir, resume=args.resume, progress=not args.no_progress)
        result = trainer.train(stop_at=args.stop_at)
    except TrainingInterrupted as stop:
        if trainer is None or trainer.dist.is_main:
            print(f"fcnseg train: {stop}\nresume with:\n  {resume}", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print(
            f"fcnseg train: interrupted without saving; the checkpoints already in {run_dir} "
            f"(if any) are intact; resume with:\n  {resume}",
            file=sys.stderr,
        )
        return 130
    except (CheckpointError, ConfigError, DataError, FloatingPointError) as err:
        raise SystemExit(f"fcnseg train: {err}") from err
    except OSError as err:
        raise SystemExit(
            f"fcnseg train: {err} (training into {run_dir}; its checkpoints are intact: "
            "continue with --resume once this is fixed)"
        ) from err
    if trainer.dist.is_main:
        print(f"run directory: {result.run_dir}")
        if result.metrics:
            print(f"val mean IU {result.metrics['mean_iu']:.4f} at iteration {result.iteration}")
    return 0


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
            options=_inference_options(args),
        )
    except (CheckpointError, ConfigError, DataError) as err:
        raise SystemExit(f"fcnseg eval: {err}") from err
    return 0


def _inference_options(args: argparse.Namespace) -> InferenceOptions:
    """The :class:`InferenceOptions` of ``--tile/--overlap``, ``--tta`` and ``--crf …`` (the
    same flags for predict, eval and serve)."""
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
        )
    except ValueError as err:
        raise SystemExit(f"fcnseg {args.command}: {err}") from err


def _add_inference_args(p: argparse.ArgumentParser) -> None:
    """The flags :func:`_inference_options` reads."""
    g = p.add_argument_group("inference (tiling, test-time augmentation, CRF)")
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


def _predict(args: argparse.Namespace) -> int:
    from fcnseg.checkpoint import CheckpointError
    from fcnseg.data.base import DataError
    from fcnseg.inference import Predictor, predict_paths

    failures: list[tuple[Path, str]] = []
    options = _inference_options(args)
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
        )
    except (CheckpointError, DataError, ValueError) as err:
        raise SystemExit(f"fcnseg predict: {err}") from err
    print(f"wrote {len(written)} label maps (+ overlays) to {args.out}")
    for path, message in failures:
        print(f"skipped {path}: {message}", file=sys.stderr)
    if failures:
        print(f"fcnseg predict: {len(failures)} file(s) could not be read (above)", file=sys.stderr)
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    from fcnseg.checkpoint import CheckpointError
    from fcnseg.export import export_model

    try:
        path = export_model(args.checkpoint, args.out, fmt=args.format)
    except (CheckpointError, ValueError) as err:
        raise SystemExit(f"fcnseg export: {err}") from err
    print(f"wrote {path}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from fcnseg.checkpoint import CheckpointError
    from fcnseg.inference import Predictor
    from fcnseg.serve.app import ServeLimits, run_server

    options = _inference_options(args)
    try:
        predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device)
    except (CheckpointError, ValueError) as err:
        raise SystemExit(f"fcnseg serve: {err}") from err
    limits = ServeLimits(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=args.max_pixels,
        max_concurrent=args.max_concurrent,
        max_queue=args.max_queue,
    )
    print(f"fcnseg serve: http://{args.host}:{args.port}/  (API docs at /docs; Ctrl-C stops)")
    run_server(predictor, host=args.host, port=args.port, limits=limits, options=options)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fcnseg.demo import run_demo

    run_demo(Path(args.out), iterations=args.iterations, progress=not args.no_progress)
    return 0


def _add_summary_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("summary", help="per-layer table: output shapes and parameter counts")
    _add_model_args(p)
    p.add_argument("--input", default="3x500x500", help="input shape CxHxW (default 3x500x500)")
    p.set_defaults(func=_summary)


def _add_geometry_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("geometry", help="stride, offset and receptive field of every layer")
    _add_model_args(p)
    p.set_defaults(func=_geometry)


def _add_train_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("train", help="train from a YAML config (file or shipped name)")
    p.add_argument("config", help="config file, or a shipped config name (fcnseg/configs)")
    p.add_argument("-o", "--out", help="run directory (default: runs/<config name>)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in the run directory")
    p.add_argument("--stop-at", type=int, help="stop (with a checkpoint) after this iteration")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_train)


def _add_eval_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: the four metrics, plots")
    p.add_argument("checkpoint", help="checkpoint file or run directory")
    p.add_argument("--config", help="config for the data (default: the one in the checkpoint)")
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
    _add_inference_args(p)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_eval)


def _add_predict_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("predict", help="label maps and overlays for images, any size")
    p.add_argument("checkpoint", help="checkpoint file or run directory")
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("-o", "--out", required=True, help="output directory")
    p.add_argument("--probabilities", action="store_true", help="also write NAME_probs.npy")
    p.add_argument("--batch-size", type=int, default=4, help="same-size images per pass (4)")
    _add_inference_args(p)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_predict)


def _add_export_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("export", help="ONNX (dynamic batch/height/width) or TorchScript")
    p.add_argument("checkpoint", help="checkpoint file or run directory")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("-o", "--out", required=True, help="output file")
    p.set_defaults(func=_export)


def _add_serve_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("serve", help="HTTP API + web page: upload an image, see the overlay")
    p.add_argument("checkpoint", help="checkpoint file, run directory or exported .onnx")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="413 beyond (default 20)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="413 beyond (default 40M)")
    p.add_argument("--max-concurrent", type=int, default=1, help="inferences at once (1)")
    p.add_argument("--max-queue", type=int, default=8, help="requests waiting; 503 beyond (8)")
    _add_inference_args(p)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.set_defaults(func=_serve)


def _add_demo_parser(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "demo", help="train a small FCN-8s on generated shapes, then predict (a few minutes)"
    )
    p.add_argument("-o", "--out", default="fcnseg-demo", help="output directory")
    p.add_argument("--iterations", type=int, default=None, help="override the training length")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="fcnseg", description="Fully Convolutional Networks for semantic segmentation."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_summary_parser,
        _add_geometry_parser,
        _add_train_parser,
        _add_eval_parser,
        _add_predict_parser,
        _add_export_parser,
        _add_serve_parser,
        _add_demo_parser,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fcnseg`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        return args.func(args)
    finally:
        # Leave torchrun's process group cleanly: gloo aborts at exit if it is still alive.
        from fcnseg.engine.distributed import cleanup

        cleanup()


if __name__ == "__main__":
    sys.exit(main())
