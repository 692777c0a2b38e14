"""``tfquant bench``: latency of a model here (LCE's interpreter) or on a device (ssh, adb).

A ``.tflite`` is validated here (pure Python) before anything runs it; a ``.keras`` model is
converted here together with its float twin. Imports the converter only when the command
runs.
"""

from __future__ import annotations

import argparse
import json
import os

from tfquant.cli.common import UNSAFE_HELP, UsageError, int_in, outputs
from tfquant.progress import Progress


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


def _bench_models(args: argparse.Namespace, tmp: str, progress: Progress) -> dict[str, str]:
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


def _bench_local(args, models: dict[str, str], progress: Progress) -> dict:
    """Each model timed in a child process with LCE's interpreter."""
    from tfquant.converters import bench
    from tfquant.converters.validate import InvalidFlatbufferError

    rows = []
    for name, path in models.items():
        progress(f"timing the {name} at {len(args.threads)} thread count(s)")
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


def run(args: argparse.Namespace) -> int:
    """Time the model (and its float twin) here or on a device; print a Markdown table."""
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
    plan = outputs(
        [args.model, args.float_twin, args.benchmark_binary],
        [(args.json, "JSON output")],
        overwrite=args.overwrite,
    )
    for path, (what, data) in read.items():
        _validate_tflite(data, path, what)
    # Progress lines for the slow work only: a conversion, a device.
    progress = Progress(
        total=6 if keras_model and target.kind == "local" else None,
        enabled=keras_model or target.kind != "local",
    )
    try:
        with tempfile.TemporaryDirectory(prefix="tfquant-bench-") as tmp:
            models = _bench_models(args, tmp, progress)
            if target.kind == "local":
                result = _bench_local(args, models, progress)
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
        with plan:
            plan.write(args.json, json.dumps(result, indent=2) + "\n")
            plan.commit()
        print(f"wrote {args.json}")
    return 0


def _threads(text: str) -> list[int]:
    """``--threads 1,2,4`` (or ``1 2 4``): thread counts 1..256."""
    one = int_in(1, 256)
    return [one(part) for part in text.split(",") if part.strip()] or [one(text)]


def register(sub) -> None:
    """Add ``bench`` to the subparsers ``sub``."""
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
    p.add_argument("--unsafe", action="store_true", help=UNSAFE_HELP)
    p.set_defaults(func=run)
