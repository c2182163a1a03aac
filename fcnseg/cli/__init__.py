"""The ``fcnseg`` command line: one module per group of commands (``train``, ``infer``,
``model``), each adding its sub-parsers; this module parses and dispatches.

A user's mistake (input, config, file, network, state) ends the command with one line on
stderr, ``fcnseg <command>: <what is wrong and what to do>``, and exit status 1;
``fcnseg --debug …`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from fcnseg.cli.data import add_inspect_parser
from fcnseg.cli.infer import (
    add_eval_parser,
    add_export_parser,
    add_predict_parser,
    add_serve_parser,
)
from fcnseg.cli.model import add_geometry_parser, add_summary_parser
from fcnseg.cli.train import add_demo_parser, add_train_parser

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="fcnseg", description="Fully Convolutional Networks for semantic segmentation."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error, not one line"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        add_summary_parser,
        add_geometry_parser,
        add_inspect_parser,
        add_train_parser,
        add_eval_parser,
        add_predict_parser,
        add_export_parser,
        add_serve_parser,
        add_demo_parser,
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
        _check_device(args)
        _check_out_folder(args)
        return args.func(args)
    except SystemExit as stop:
        if args.debug and stop.__cause__ is not None:  # a command's own one-line message
            traceback.print_exception(stop.__cause__)
        if isinstance(stop.code, str):
            raise SystemExit(_flatten(stop.code)) from stop.__cause__
        raise
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"fcnseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as err:
        if args.debug:
            raise
        raise SystemExit(f"fcnseg {args.command}: {_one_line(err)}") from err
    finally:
        # Leave torchrun's process group cleanly: gloo aborts at exit if it is still alive.
        from fcnseg.engine.distributed import cleanup

        cleanup()


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that report a user's mistake: bad input, config, file, data, checkpoint, weights
    (ConfigError, DataError and CheckpointError are ValueErrors), or the file system / network."""
    from fcnseg.weights import WeightsUnavailableError

    return (ValueError, OSError, WeightsUnavailableError)


def _one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (an OSError as ``file: reason``)."""
    if isinstance(err, OSError) and err.strerror:
        where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
        text = f"{where}: {err.strerror}" if where else err.strerror
        if isinstance(err, FileExistsError | NotADirectoryError):
            text += ": a file stands where a folder is needed; move it or choose another path"
    else:
        text = str(err) or type(err).__name__
    return _flatten(text)


def _flatten(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


#: Commands whose ``-o`` is a folder they create.
_FOLDER_OUTPUTS = ("train", "eval", "predict", "demo")


def _check_out_folder(args: argparse.Namespace) -> None:
    """``-o`` of a command that writes a folder is not an existing file (which would fail late,
    as "File exists")."""
    out = getattr(args, "out", None)
    if args.command in _FOLDER_OUTPUTS and out is not None and Path(out).is_file():
        raise ValueError(f"-o {out} is a file; give a folder (it is created if missing)")


def _check_device(args: argparse.Namespace) -> None:
    """``--device`` names a device this machine has (before any model is loaded)."""
    device = getattr(args, "device", None)
    if device is not None and device != "auto":
        from fcnseg.device import resolve_device

        resolve_device(device)


if __name__ == "__main__":
    sys.exit(main())
