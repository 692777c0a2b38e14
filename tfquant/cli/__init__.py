"""The tfquant command line: tfquant convert | summary | bench | train.

One module per subcommand (convert, summary, bench, train), each with a function
``register(subparsers)`` that adds its parser and sets ``func`` (``args -> exit code``);
:mod:`tfquant.cli.common` holds what they share. This module is the dispatcher: it builds
the parser, runs the subcommand with the signals of :mod:`tfquant._signals` raising, and
maps the outcome to an exit status. Input that is the user's to fix raises a
:class:`tfquant.errors.TfquantError` (a missing file, something that is not a model, a model
LCE cannot take, an output that cannot be written): one line on stderr, exit status 2. Any
other exception is a bug and keeps its traceback.

The package may import every other part of tfquant; nothing in tfquant imports it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from tfquant import _signals
from tfquant.cli import bench, convert, summary, train
from tfquant.cli.common import UsageError, int_in, positive_float
from tfquant.errors import TfquantError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__all__ = [
    "EXIT_BAD_INPUT",
    "SUBCOMMANDS",
    "UsageError",
    "build_parser",
    "int_in",
    "main",
    "positive_float",
]

# The subcommands, in the order ``tfquant --help`` lists them.
SUBCOMMANDS = (convert, summary, bench, train)

EXIT_BAD_INPUT = 2

_DESCRIPTION = (
    "Train binary and low-bit Keras 3 networks and ship them through Larq Compute Engine: "
    "tfquant convert | summary | bench | train. Run tfquant COMMAND --help for a command's "
    "options."
)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="tfquant", description=_DESCRIPTION)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status: 0, 2 for bad input (also argparse's
    usage errors, raised as SystemExit(2)), 128 + the signal number when interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from tfquant import __version__

        print(__version__)
        return 0
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    from tfquant import _files

    _files.COMMITTED.clear()
    received: list[int] = []
    with _signals.raising(received):
        try:
            return int(args.func(args) or 0)
        except BaseException as e:
            # An exception raised inside a C extension's callback can come out as another
            # error (a SystemError, or a library's "could not export" wrapping it): once a
            # signal has arrived, whatever ends the command is the interruption.
            if received or isinstance(e, KeyboardInterrupt):
                signum = received[0] if received else signal.SIGINT
                line = _signals.interrupted_line(args.command, _files.COMMITTED)
                print(line, file=sys.stderr)
                return 128 + int(signum)
            if isinstance(e, TfquantError):  # the converter's errors are ones too
                print(f"tfquant {args.command}: error: {e}", file=sys.stderr)
                return EXIT_BAD_INPUT
            raise
