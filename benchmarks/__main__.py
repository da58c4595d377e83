"""Command line of the benchmark suite: ``python -m benchmarks <subcommand> ...``.

Subcommands live in their own modules, listed in :data:`SUBCOMMAND_MODULES`. Each such
module defines ``add_parser(subparsers) -> argparse.ArgumentParser``, which adds its
parser to ``subparsers`` and sets ``func`` (``args -> exit status``) as a default.
Modules that do not exist (yet) are skipped, so ``quality`` and ``paper`` can be added
by creating ``benchmarks/quality.py`` and ``benchmarks/paper.py``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "benchmarks.speed",
    "benchmarks.steps",
    "benchmarks.quality",
    "benchmarks.paper",
    "benchmarks.precision",
    "benchmarks.distill_main",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Benchmarks of invertible against its peers."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns its exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
