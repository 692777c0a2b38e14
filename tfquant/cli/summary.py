"""``tfquant summary``: per-layer bits, parameters, bit-packed memory and MACs of a model.

Imports the model loader only when the command runs.
"""

from __future__ import annotations

import argparse
import json

from tfquant.cli.common import UNSAFE_HELP, outputs


def run(args: argparse.Namespace) -> int:
    """Print the summary of ``args.model`` as a table, or as JSON with ``--json``."""
    import tfquant
    from tfquant.converters import load_model

    outputs([args.model], [], overwrite=False)
    model = load_model(args.model, unsafe=args.unsafe)
    result = tfquant.summary(model, print_fn=None if args.json else print)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    return 0


def register(sub) -> None:
    """Add ``summary`` to the subparsers ``sub``."""
    p = sub.add_parser(
        "summary",
        help="per-layer bits, parameters, bit-packed memory and MACs of a model",
    )
    p.add_argument(
        "model",
        help="a .keras or .h5 file (a SavedModel directory from model.export holds no "
        "Keras layers to summarise)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--unsafe", action="store_true", help=UNSAFE_HELP)
    p.set_defaults(func=run)
