"""``fcnseg train`` and ``fcnseg demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TypeAlias

    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_demo_parser", "add_train_parser"]


def _train(args: argparse.Namespace) -> int:
    import shlex

    from fcnseg.cli.data import resolve_run_config, save_config
    from fcnseg.config import ConfigError
    from fcnseg.data.base import DataError
    from fcnseg.engine.trainer import Trainer, TrainingInterrupted

    try:  # a config file or shipped name, or a data folder (surveyed, with the recipe)
        cfg, report = resolve_run_config(args.config, args.set, progress=not args.no_progress)
    except (ConfigError, DataError) as err:
        raise SystemExit(f"fcnseg train: {err}") from err
    if report:
        print("\n".join(report))
    if args.save_config:
        save_config(cfg, args.save_config, args.config)
        print(f"wrote {args.save_config}; edit it, then: fcnseg train {args.save_config}")
        return 0
    source = Path(args.config)
    name = source.resolve().name if source.is_dir() else source.stem  # `fcnseg train .` too
    run_dir = Path(args.out) if args.out else Path("runs") / name
    last = run_dir / "checkpoints" / "last"
    if not args.resume and any(
        Path(f"{last}{ext}").exists() for ext in (".safetensors", ".state.pt")
    ):
        raise SystemExit(
            f"fcnseg train: {run_dir} already holds a run; add --resume to continue it or "
            "choose another -o"
        )
    from fcnseg.checkpoint import CheckpointError

    sets = [x for item in args.set for x in ("--set", item)]
    extra = ["--stop-at", str(args.stop_at)] if args.stop_at is not None else []
    extra += ["--no-progress"] if args.no_progress else []
    resume = shlex.join(
        ["fcnseg", "train", args.config, "-o", str(run_dir), *sets, *extra, "--resume"]
    )
    trainer = None
    try:
        trainer = Trainer(cfg, run_dir, resume=args.resume, progress=not args.no_progress)
        trainer.check_finished()
        for change in trainer.resume_changes if trainer.dist.is_main else []:
            print(
                f"fcnseg train: --resume changes {change.describe()} (recorded in "
                f"{run_dir / 'config.yaml'})",
                file=sys.stderr,
            )
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
        if trainer is None or not any(run_dir.glob("checkpoints/last*")):
            raise SystemExit(f"fcnseg train: {err}") from err
        raise SystemExit(
            f"fcnseg train: {err} (training into {run_dir}; its checkpoints are intact: "
            "continue with --resume once this is fixed)"
        ) from err
    if trainer.dist.is_main:
        print(f"run directory: {result.run_dir}")
        if result.metrics:
            from fcnseg.metrics import absent_note

            mean_iu = result.metrics["mean_iu"]
            note = absent_note(result.metrics)
            print(f"val mean IU {mean_iu:.4f} at iteration {result.iteration}{note}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fcnseg.demo import run_demo

    run_demo(Path(args.out), iterations=args.iterations, progress=not args.no_progress)
    return 0


def add_train_parser(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "train", help="train from a YAML config (file or shipped name) or a data folder"
    )
    p.add_argument(
        "config",
        help="config file, shipped config name (fcnseg/configs), or a data folder with images/ "
        "and masks/ (its classes are inferred and printed; see fcnseg inspect)",
    )
    p.add_argument("-o", "--out", help="run directory (default: runs/<config name>)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in the run directory")
    p.add_argument(
        "--save-config", metavar="FILE", help="write the resolved config as YAML and stop"
    )
    p.add_argument("--stop-at", type=int, help="stop (with a checkpoint) after this iteration")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_train)


def add_demo_parser(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "demo", help="train a small FCN-8s on generated shapes, then predict (a few minutes)"
    )
    p.add_argument("-o", "--out", default="fcnseg-demo", help="output directory")
    p.add_argument("--iterations", type=int, default=None, help="override the training length")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_demo)
