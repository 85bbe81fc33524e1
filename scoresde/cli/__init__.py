"""Command line: ``scoresde bench`` (the main job), ``methods``, ``train``, ``sample``, ``likelihood``, ``fields``,
``fit``; one module per command, each with ``add_arguments(parser)`` and ``run(args) -> exit status``.

Bad input ends in one line on stderr naming the flag and what it accepts, exit status 2, before any work. Building
the parsers imports no torch: each command imports what it needs in ``run``.
"""

from __future__ import annotations

import sys

from .._version import __version__
from . import bench, fields, fit, likelihood, methods, sample, train
from .args import DefaultsFormatter, Parser

__all__ = ["main", "COMMANDS"]

COMMANDS = (bench, methods, train, sample, likelihood, fields, fit)  # in `scoresde --help`'s order


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the command; returns its exit status."""
    p = Parser(prog="scoresde", description="Score-based diffusion models as SDEs and ODEs.")
    p.add_argument("--version", action="version", version=f"scoresde {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        parser = sub.add_parser(command.NAME, help=command.HELP, formatter_class=DefaultsFormatter)
        command.add_arguments(parser)
        parser.set_defaults(func=command.run)
    try:
        args = p.parse_args(argv)
    except SystemExit as stop:  # a usage error (2, its one line printed), --help or --version (0)
        return stop.code if isinstance(stop.code, int) else 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
