"""The ``fcnseg`` command line: one module per group of commands (``train``, ``infer``,
``model``), each adding its sub-parsers; this module parses and dispatches."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

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
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        add_summary_parser,
        add_geometry_parser,
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
        return args.func(args)
    finally:
        # Leave torchrun's process group cleanly: gloo aborts at exit if it is still alive.
        from fcnseg.engine.distributed import cleanup

        cleanup()


if __name__ == "__main__":
    sys.exit(main())
