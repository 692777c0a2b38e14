"""The ``tfquant`` command line: ``tfquant convert | summary | bench`` (and ``train``).

Each subcommand is registered by a function ``register(subparsers)`` that adds its parser
and sets ``func`` (``args -> exit code``). The subcommands of this module are listed in
``_BUILTIN``; other modules that define ``register`` join through ``SUBCOMMAND_MODULES``
(e.g. ``tfquant.cli.train`` for ``tfquant train``), so a new subcommand is one new module
plus one line here. Bad input (a missing file, something that is not a model, a model LCE
cannot take, an output that cannot be written) prints a message on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Modules defining ``register(subparsers)``; a module that is not there yet is skipped.
SUBCOMMAND_MODULES: tuple[str, ...] = ("tfquant.cli.train",)

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


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``low..high`` written in ASCII digits (``int()``
    alone also takes ``"1_0"`` and ``"٣"``); the error names the range."""
    expected = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"

    def parse(text: str) -> int:
        digits = text.strip()
        if not re.fullmatch(r"[+-]?[0-9]{1,20}", digits):
            raise argparse.ArgumentTypeError(f"Expected {expected}. Received: {text!r}")
        value = int(digits)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"Expected {expected}. Received: {text!r}")
        return value

    parse.__name__ = "integer"
    return parse


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0."""
    import math

    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"Expected a finite number > 0. Received: {text!r}"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"Expected a finite number > 0. Received: {text!r}")
    return value


def _outputs(inputs, outputs: list[tuple[str | None, str]], overwrite: bool):
    """Check every output path against the inputs and each other before any work."""
    from tfquant._files import FileError, Outputs, check_input

    plan = Outputs(inputs, overwrite=overwrite)
    try:
        for path in inputs:
            if path is not None:
                check_input(path, "input", directory=True)
        for path, what in outputs:
            if path is not None:
                plan.add(path, what)
    except FileError as e:
        raise UsageError(str(e)) from None
    return plan


def _load_npy(path: str | None):
    if path is None:
        return None
    import numpy as np

    from tfquant._files import FileError, check_input

    try:
        check_input(path, "data file")
        array = np.load(path, allow_pickle=False)
    except FileError as e:
        raise UsageError(str(e)) from None
    except (OSError, ValueError, EOFError) as e:
        raise UsageError(f"Cannot read the data file {path!r} as a .npy array: {e}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        array.close()
        raise UsageError(
            f"Expected a .npy file holding one array. Received: {path!r}, an .npz archive "
            "of several arrays; save the one you want with numpy.save"
        )
    if array.dtype.kind not in "biuf" or array.ndim < 1 or array.shape[0] < 1:
        raise UsageError(
            f"Expected a non-empty numeric array (a batch of inputs) in {path!r}. Received: "
            f"dtype {array.dtype}, shape {array.shape}"
        )
    return array.astype("float32")


_UNSAFE_HELP = (
    "load model files that carry Python code (a Lambda layer's serialized function, or "
    "graph ops that read or write files): that code runs on this machine. Only for files "
    "you trust; by default such a model is refused"
)


# ---------------------------------------------------------------------------------------------
# convert


def _cmd_convert(args: argparse.Namespace) -> int:
    outputs = _outputs(
        [args.model, args.data],
        [(args.output, "output"), (args.report, "report")],
        overwrite=args.overwrite,
    )
    if args.int8 in ("auto", "none"):
        int8: str | list[str] = args.int8
    else:
        int8 = [n.strip() for n in args.int8.split(",") if n.strip()]
        if not int8:
            raise UsageError(
                f"Expected --int8 auto, none or comma-separated layer names. Received: {args.int8!r}"
            )
    data = _load_npy(args.data)

    from tfquant.converters import convert_with_report

    progress = _Progress(not args.quiet)
    with outputs:
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
                unsafe=args.unsafe,
            )
            progress("writing " + args.output)
            outputs.write(args.output, flatbuffer)
            if args.report:
                outputs.write(args.report, report.to_json() + "\n")
            outputs.commit()
        except BaseException:
            progress.close(failed=True)
            raise
    progress.close()
    print(f"wrote {args.output} ({len(flatbuffer) / 1024:.1f} KiB)")
    print(report.text())
    if args.report:
        print(f"wrote {args.report} (the report as JSON)")
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
    p.add_argument("--unsafe", action="store_true", help=_UNSAFE_HELP)
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing files at -o / --report"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=_cmd_convert)


# ---------------------------------------------------------------------------------------------
# summary


def _cmd_summary(args: argparse.Namespace) -> int:
    import tfquant
    from tfquant.converters import load_model

    _outputs([args.model], [], overwrite=False)
    model = load_model(args.model, unsafe=args.unsafe)
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
    p.add_argument("--unsafe", action="store_true", help=_UNSAFE_HELP)
    p.set_defaults(func=_cmd_summary)


# ---------------------------------------------------------------------------------------------
# bench


def _read_tflite(path: str, what: str = "flatbuffer") -> bytes:
    from tfquant.converters.validate import read_flatbuffer_file

    try:
        return read_flatbuffer_file(path)  # stat()s first: a FIFO would block
    except FileNotFoundError as e:
        raise UsageError(f"{what} not found: {path!r}") from e
    except ValueError as e:  # a FIFO, a directory, a device
        raise UsageError(str(e)) from e
    except OSError as e:
        raise UsageError(f"cannot read {path!r}: {e.strerror or e}") from e


def _validate_tflite(data: bytes, path: str, what: str = "flatbuffer") -> None:
    from tfquant.converters.validate import InvalidFlatbufferError, validate_flatbuffer

    try:
        validate_flatbuffer(data)
    except InvalidFlatbufferError as e:
        raise UsageError(str(e) if what == "flatbuffer" else f"{what} {path!r}: {e}") from e


def _bench_models(args: argparse.Namespace, tmp: str, progress: _Progress) -> dict[str, str]:
    """name -> .tflite path: the model (converted first when it is a Keras file) and, when
    there is one, its float twin (``--float-twin``, or made from the Keras model)."""
    models = {}
    if args.model.endswith((".keras", ".h5")):
        from tfquant.converters import convert_with_report, load_model
        from tfquant.models import float_twin

        if args.float_twin:
            raise UsageError(
                "--float-twin is for a .tflite model; a Keras model's twin is made from it"
            )
        progress(f"loading {args.model}")
        model = load_model(args.model, unsafe=args.unsafe)
        progress("making the float twin")
        try:
            twin = float_twin(model)
        except ValueError as e:
            raise UsageError(f"{args.model}: {e}") from None
        # The model converts as `tfquant convert` would (a layer declared binary that stays
        # float is an error, not a slow row in the table); the twin is float by design.
        for name, keras_model, allow_float in (("model", model, False), ("float twin", twin, True)):
            progress(f"converting the {name}")
            flatbuffer, _ = convert_with_report(
                keras_model, target=args.target, verify=False, allow_float=allow_float
            )
            path = os.path.join(tmp, name.replace(" ", "_") + ".tflite")
            with open(path, "wb") as f:
                f.write(flatbuffer)
            models[name] = path
        return models
    models["model"] = args.model  # both validated by _cmd_bench
    if args.float_twin:
        models["float twin"] = args.float_twin
    return models


def _bench_local(args, models: dict[str, str]) -> dict:
    from tfquant.converters import bench
    from tfquant.converters.validate import InvalidFlatbufferError

    rows = []
    for name, path in models.items():
        try:
            results = bench.isolated_latency(
                path,
                threads=args.threads,
                runs=args.runs or 20,
                warmup=3 if args.warmup is None else args.warmup,
                timeout=args.timeout,
            )
        except InvalidFlatbufferError as e:
            raise UsageError(str(e)) from e
        except (RuntimeError, OSError) as e:  # timed out, LCE missing, no room for a temp copy
            raise UsageError(f"cannot run {path!r}: {e}") from e
        for r in results:
            # LCE's interpreter in a child process: the mean of the timed runs is the
            # "average" of lce_benchmark_model; init and first inference are not measured.
            rows.append({"model": name, **r, "inference_ms": r["mean_ms"]})
    return {"device": "local", "runtime": "LCE interpreter (x86)", "rows": rows}


def _cmd_bench(args: argparse.Namespace) -> int:
    # A .tflite is validated here (pure Python), then timed in a child process locally, or
    # by lce_benchmark_model on the device: a damaged file never reaches an interpreter.
    import tempfile

    from tfquant.converters import device as device_mod

    try:
        target = device_mod.parse_device(args.device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if target.kind == "local":
        for flag in ("benchmark_binary", "device_dir", "ssh_config"):
            if getattr(args, flag):
                raise UsageError(f"--{flag.replace('_', '-')} is for --device ssh:... or adb")
    elif not args.benchmark_binary:
        raise UsageError(
            f"--device {args.device} needs --benchmark-binary PATH: LCE's lce_benchmark_model "
            "built for the device (LCE's releases ship it for Android arm64 and aarch64 Linux)"
        )
    elif not os.path.isfile(args.benchmark_binary):
        raise UsageError(f"benchmark binary not found: {args.benchmark_binary!r}")
    if target.kind != "ssh" and (args.ssh_config or args.ssh_option):
        raise UsageError("--ssh-config and --ssh-option are for --device ssh:...")
    threads = args.threads or ([1] if target.kind == "local" else [1, 2, 4])
    args.threads = threads
    keras_model = args.model.endswith((".keras", ".h5"))
    read = {}
    if not keras_model:  # read first: a FIFO must not block, a missing file is named as such
        read = {args.model: ("flatbuffer", _read_tflite(args.model))}
        if args.float_twin:
            read[args.float_twin] = ("float twin", _read_tflite(args.float_twin, "float twin"))
    outputs = _outputs(
        [args.model, args.float_twin, args.benchmark_binary],
        [(args.json, "JSON output")],
        overwrite=args.overwrite,
    )
    for path, (what, data) in read.items():
        _validate_tflite(data, path, what)
    # Progress lines for the slow work only: a conversion, a device.
    progress = _Progress(keras_model or target.kind != "local")
    try:
        with tempfile.TemporaryDirectory(prefix="tfquant-bench-") as tmp:
            models = _bench_models(args, tmp, progress)
            if target.kind == "local":
                progress(f"timing {len(models)} model(s) at {len(threads)} thread count(s)")
                result = _bench_local(args, models)
            else:
                try:
                    result = device_mod.benchmark(
                        target,
                        models,
                        args.benchmark_binary,
                        threads=threads,
                        runs=args.runs,
                        warmup=args.warmup,
                        extra_args={name: args.benchmark_arg for name in models},
                        device_dir=args.device_dir,
                        ssh_config=args.ssh_config,
                        ssh_options=args.ssh_option,
                        timeout=args.timeout,
                        progress=progress,
                    )
                except device_mod.DeviceError as e:
                    raise UsageError(str(e)) from None
    except BaseException:
        progress.close(failed=True)
        raise
    progress.close()
    made = "made from the model" if "float twin" in models and not args.float_twin else None
    result["source"] = {"model": args.model, "float twin": args.float_twin or made}
    where = result["device"] + (f" ({result['arch']})" if result.get("arch") else "")
    print(f"{args.model} on {where}")
    print(device_mod.markdown_table(result["rows"]))
    if args.json:
        with outputs:
            outputs.write(args.json, json.dumps(result, indent=2) + "\n")
            outputs.commit()
        print(f"wrote {args.json}")
    return 0


def _threads(text: str) -> list[int]:
    """``--threads 1,2,4`` (or ``1 2 4``): thread counts 1..256."""
    one = int_in(1, 256)
    return [one(part) for part in text.split(",") if part.strip()] or [one(text)]


def _register_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="latency of a model here (LCE's interpreter) or on a device over ssh or adb "
        "(LCE's lce_benchmark_model), beside its float twin",
        description="Time a .tflite model, or a .keras model converted here together with its "
        "float twin, at each thread count. --device local runs LCE's interpreter on this "
        "machine; ssh:[USER@]HOST[:PORT] and adb[:SERIAL] copy --benchmark-binary and the "
        "models to a temporary directory on the device, run them, and remove it. Prints a "
        "Markdown table.",
    )

    class Threads(argparse.Action):
        # A repeated count would only time the same thing twice and give the JSON two rows
        # for one thread count: refused rather than silently merged.
        def __call__(self, parser, namespace, values, option_string=None):
            flat = [n for group in values for n in group]
            if len(set(flat)) != len(flat):
                parser.error(
                    f"argument {option_string}: Expected distinct thread counts. "
                    f"Received: {' '.join(map(str, flat))}"
                )
            setattr(namespace, self.dest, flat)

    p.add_argument(
        "model",
        help="a .tflite flatbuffer (from tfquant convert), or a .keras model: converted here "
        "together with its float twin (same layers without quantizers), and both timed",
    )
    p.add_argument(
        "--device",
        default="local",
        metavar="DEVICE",
        help="local (default), ssh:[USER@]HOST[:PORT] (uses your ssh config, keys and agent; "
        "no password prompts) or adb[:SERIAL]",
    )
    p.add_argument(
        "--benchmark-binary",
        metavar="PATH",
        help="this machine's copy of the device's lce_benchmark_model (LCE's releases: "
        "Android arm64, aarch64 Linux); TensorFlow Lite's benchmark_model serves models "
        "without Lce ops. Required for ssh and adb",
    )
    p.add_argument(
        "--float-twin",
        metavar="PATH",
        help="a .tflite float version of MODEL to time beside it (speed-up column)",
    )
    p.add_argument(
        "--threads",
        type=_threads,
        nargs="+",
        action=Threads,
        metavar="N[,N...]",
        help="distinct thread counts, 1..256 (default: 1,2,4 on a device, 1 locally)",
    )
    p.add_argument(
        "--runs",
        type=int_in(1, 100_000),
        help="timed runs per thread count, 1..100000 (default: 20 locally, the binary's own "
        "on a device)",
    )
    p.add_argument(
        "--warmup",
        type=int_in(0, 10_000),
        help="warm-up runs, 0..10000 (default: 3 locally, the binary's own on a device)",
    )
    p.add_argument(
        "--timeout",
        type=int_in(1, 86_400),
        default=600,
        metavar="SECONDS",
        help="stop each run (and each copy to the device) after this long (default: 600)",
    )
    p.add_argument(
        "--benchmark-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="pass FLAG to the benchmark binary (repeatable), e.g. "
        "--benchmark-arg=--use_indirect_bgemm=true",
    )
    p.add_argument(
        "--device-dir",
        metavar="DIR",
        help="where on the device the temporary directory goes (default: /tmp over ssh, "
        "/data/local/tmp over adb)",
    )
    p.add_argument("--ssh-config", metavar="FILE", help="ssh -F FILE (for ssh and scp)")
    p.add_argument(
        "--ssh-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="ssh -o OPTION (repeatable), e.g. --ssh-option IdentityFile=~/.ssh/pi",
    )
    p.add_argument(
        "--target",
        choices=("arm", "xcore"),
        default="arm",
        help="LCE's conversion target for a .keras model (default: arm)",
    )
    p.add_argument("--json", help="also write the results as JSON here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--unsafe", action="store_true", help=_UNSAFE_HELP)
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


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived; ``signum`` says which. A KeyboardInterrupt, so
    ``except Exception`` clauses in libraries let it through to :func:`main`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _signals_raise(received: list[int]) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` once and are recorded in
    ``received``; later ones (during the clean-up the first one starts) are ignored, so
    clean-up is not cut short."""

    def handler(signum, frame):
        for s in _SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        received.append(signum)
        raise Interrupted(signum)

    try:
        previous = {s: signal.signal(s, handler) for s in _SIGNALS}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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
    from tfquant.converters import ConversionError

    _files.COMMITTED.clear()
    received: list[int] = []
    with _signals_raise(received):
        try:
            return int(args.func(args) or 0)
        except BaseException as e:
            # An exception raised inside a C extension's callback can come out as another
            # error (a SystemError, or a library's "could not export" wrapping it): once a
            # signal has arrived, whatever ends the command is the interruption.
            if received or isinstance(e, KeyboardInterrupt):
                signum = received[0] if received else signal.SIGINT
                kept = (
                    "; wrote " + ", ".join(_files.COMMITTED) + " before it"
                    if _files.COMMITTED
                    else "; nothing written"
                )
                print(f"tfquant {args.command}: interrupted{kept}", file=sys.stderr)
                return 128 + int(signum)
            if isinstance(e, (UsageError, ConversionError, _files.FileError)):
                print(f"tfquant {args.command}: error: {e}", file=sys.stderr)
                return EXIT_BAD_INPUT
            raise


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: subcommand modules raise
    # tfquant.cli.UsageError, which must be the class main() catches.
    from tfquant.cli import main as _main

    sys.exit(_main())
