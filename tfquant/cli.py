"""The ``tfquant`` command line: ``tfquant convert | summary | bench`` (and ``train``).

Each subcommand is registered by a function ``register(subparsers)`` that adds its parser
and sets ``func`` (``args -> exit code``). The subcommands of this module are listed in
``_BUILTIN``; other modules that define ``register`` join through ``SUBCOMMAND_MODULES``
(e.g. ``tfquant._train_cli`` for ``tfquant train``), so a new subcommand is one new module
plus one line here. Bad input (a missing file, something that is not a model, a model LCE
cannot take, an output that cannot be written) prints a message on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Modules defining ``register(subparsers)``; a module that is not there yet is skipped.
SUBCOMMAND_MODULES: tuple[str, ...] = ("tfquant._train_cli",)

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad input to a subcommand: reported on stderr with exit code 2."""


class _Progress:
    """Step-by-step progress on stderr: ``[step] message ... done (1.2 s)``."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._start: float | None = None

    def __call__(self, message: str) -> None:
        self._finish()
        if self.enabled:
            print(f"  {message} ...", end="", file=sys.stderr, flush=True)
        self._start = time.perf_counter()

    def _finish(self, failed: bool = False) -> None:
        if self._start is not None and self.enabled:
            took = f"{time.perf_counter() - self._start:.1f} s"
            print(f" failed ({took})" if failed else f" {took}", file=sys.stderr, flush=True)
        self._start = None

    def close(self, failed: bool = False) -> None:
        self._finish(failed)


def _check_writable(path: str, what: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"cannot write the {what} {path!r}: it is a directory")
    if not os.path.isdir(directory):
        raise UsageError(
            f"cannot write the {what} {path!r}: directory {directory!r} does not exist"
        )
    if not os.access(directory, os.W_OK):
        raise UsageError(
            f"cannot write the {what} {path!r}: directory {directory!r} is not writable"
        )


def _load_npy(path: str | None):
    if path is None:
        return None
    import numpy as np

    try:
        return np.load(path).astype("float32")
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the data file {path!r} as a .npy array: {e}") from e


# ---------------------------------------------------------------------------------------------
# convert


def _cmd_convert(args: argparse.Namespace) -> int:
    _check_writable(args.output, "output")
    if args.report:
        _check_writable(args.report, "report")
    if args.int8 in ("auto", "none"):
        int8: str | list[str] = args.int8
    else:
        int8 = [n.strip() for n in args.int8.split(",") if n.strip()]
    data = _load_npy(args.data)

    from tfquant.converters import convert_with_report, write_atomic

    progress = _Progress(not args.quiet)
    try:
        flatbuffer, report = convert_with_report(
            args.model,
            target=args.target,
            inference_input_type=args.input_type,
            inference_output_type=args.output_type,
            int8=int8,
            calibration_data=data,
            allow_float=args.allow_float,
            rewrite=not args.no_rewrite,
            verify=not args.no_verify,
            parity_inputs=data,
            progress=progress,
        )
        progress("writing " + args.output)
        write_atomic(args.output, flatbuffer)
        if args.report:
            write_atomic(args.report, report.to_json() + "\n")
    except BaseException:
        progress.close(failed=True)
        raise
    progress.close()
    print(f"wrote {args.output} ({len(flatbuffer) / 1024:.1f} KiB)")
    print(report.text())
    if args.report:
        print(f"report: {args.report}")
    return 0


def _register_convert(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a Keras model to an LCE TFLite flatbuffer, with a report",
        description="Convert a tfquant Keras 3 model (.keras or .h5 file) through Larq "
        "Compute Engine (model.export, then LCE's convert_saved_model), check it against "
        "Keras with LCE's interpreter, and print what each quantized layer became. A "
        "SavedModel directory (from model.export) holds no Keras layers: it is converted as "
        "it is, without tfquant's rewrites or per-layer checks, and checked against its own "
        "serving signature.",
    )
    p.add_argument("model", help="a .keras or .h5 file, or a SavedModel directory")
    p.add_argument("-o", "--output", required=True, help="the .tflite file to write")
    p.add_argument("--report", help="also write the conversion report as JSON here")
    p.add_argument("--target", choices=("arm", "xcore"), default="arm")
    p.add_argument(
        "--int8",
        default="auto",
        metavar="auto|none|LAYER,...",
        help="ternary / k-bit layers as exact int8 kernels: 'auto' (default) for all of "
        "them, 'none' to leave them float32, or a comma-separated list of layer names",
    )
    p.add_argument(
        "--data",
        metavar="INPUTS.npy",
        help="representative inputs (a batch, .npy) for int8 calibration and the parity "
        "check; default: random standard-normal inputs",
    )
    p.add_argument("--input-type", choices=("float32", "int8"), default="float32")
    p.add_argument("--output-type", choices=("float32", "int8"), default="float32")
    p.add_argument(
        "--allow-float",
        action="store_true",
        help="accept layers declared binary that did not become LceBconv2d",
    )
    p.add_argument("--no-rewrite", action="store_true", help="convert the model as it is")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=_cmd_convert)


# ---------------------------------------------------------------------------------------------
# summary


def _cmd_summary(args: argparse.Namespace) -> int:
    import tfquant
    from tfquant.converters import load_model

    model = load_model(args.model)
    result = tfquant.summary(model, print_fn=None if args.json else print)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    return 0


def _register_summary(sub) -> None:
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
    p.set_defaults(func=_cmd_summary)


# ---------------------------------------------------------------------------------------------
# bench


def _cmd_bench(args: argparse.Namespace) -> int:
    from tfquant.converters import bench

    if not os.path.isfile(args.model):
        raise UsageError(f"flatbuffer not found: {args.model!r}")
    if args.json:
        _check_writable(args.json, "JSON output")
    with open(args.model, "rb") as f:
        flatbuffer = f.read()
    try:
        results = bench.local_latency(
            flatbuffer, threads=args.threads, runs=args.runs, warmup=args.warmup
        )
    except ValueError as e:
        raise UsageError(f"cannot run {args.model!r}: {e}") from e
    for r in results:
        print(
            f"{r['runtime']:<14} threads={r['threads']}  median {r['median_ms']:.2f} ms  "
            f"(min {r['min_ms']:.2f}, {r['runs']} runs)"
        )
    if args.json:
        from tfquant.converters import write_atomic

        write_atomic(args.json, json.dumps(results, indent=2) + "\n")
    return 0


def _register_bench(sub) -> None:
    p = sub.add_parser(
        "bench", help="latency of a .tflite file in LCE's interpreter on this machine"
    )
    p.add_argument("model", help="a .tflite flatbuffer (from tfquant convert)")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="thread counts")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", help="also write the results as JSON here")
    p.set_defaults(func=_cmd_bench)


_BUILTIN: tuple[Callable, ...] = (_register_convert, _register_summary, _register_bench)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="tfquant", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _BUILTIN:
        register(sub)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from tfquant import __version__

        print(__version__)
        return 0
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    from tfquant.converters import ConversionError

    try:
        return int(args.func(args) or 0)
    except (UsageError, ConversionError) as e:
        print(f"tfquant {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: subcommand modules raise
    # tfquant.cli.UsageError, which must be the class main() catches.
    from tfquant.cli import main as _main

    sys.exit(_main())
