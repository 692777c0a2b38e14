"""``tfquant convert``: a Keras model (or a SavedModel) to an LCE flatbuffer, with a report.

Imports the converter only when the command runs.
"""

from __future__ import annotations

import argparse

from tfquant.cli.common import UNSAFE_HELP, UsageError, load_npy, outputs
from tfquant.progress import Progress


def run(args: argparse.Namespace) -> int:
    """Convert ``args.model``; write ``-o`` (and ``--report``) together at the end."""
    plan = outputs(
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
    data = load_npy(args.data)

    from tfquant.converters import convert_with_report

    progress = Progress(enabled=not args.quiet)
    with plan:
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
            plan.write(args.output, flatbuffer)
            if args.report:
                plan.write(args.report, report.to_json() + "\n")
            plan.commit()
        except BaseException:
            progress.close(failed=True)
            raise
    progress.close()
    print(f"wrote {args.output} ({len(flatbuffer) / 1024:.1f} KiB)")
    print(report.text())
    if args.report:
        print(f"wrote {args.report} (the report as JSON)")
    return 0


def register(sub) -> None:
    """Add ``convert`` to the subparsers ``sub``."""
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
    p.add_argument("--unsafe", action="store_true", help=UNSAFE_HELP)
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing files at -o / --report"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)
