"""``tfquant train``: the subcommand over :func:`tfquant.train.run`.

Its flags are built from what they set: ``--method``'s choices and help from the method
registry (:mod:`tfquant.methods`), the methods' option flags (``--bits``, ...) from their
declared options, and the numeric settings' ranges from :data:`tfquant.train.FIELDS`.
"""

from __future__ import annotations

import argparse
import json


def option_type(option):
    """The argparse ``type`` of a declared :class:`tfquant.methods.Option`: its range, in
    the parser's words (``"Expected an integer in 1..8. Received: '9'"``)."""
    from tfquant.cli import int_in

    if option.type is int:
        return int_in(int(option.min), None if option.max is None else int(option.max))

    def parse(text: str):
        try:
            value = option.type(text)
        except (TypeError, ValueError):
            value = None
        if value is None or not option.allows(value):
            raise argparse.ArgumentTypeError(
                f"Expected {option.describe_range()}. Received: {text!r}"
            )
        return value

    parse.__name__ = option.type.__name__
    return parse


def _add_option(p, option, default=None, help_text: str | None = None) -> None:
    """A flag for a declared option: ``store_true`` for a bool, else typed by its range."""
    text = option.help if help_text is None else help_text
    if option.type is bool:
        p.add_argument(option.flag, action="store_true", help=text)
    elif option.choices is not None:
        p.add_argument(option.flag, choices=option.choices, default=default, help=text)
    else:
        p.add_argument(option.flag, type=option_type(option), default=default, help=text)


def _method_options_help() -> dict:
    """Option name -> (its declaration, help naming the methods that declare it and their
    defaults)."""
    from tfquant import methods

    found = {}
    for name, declared in methods.options().items():
        who = methods.declaring(name)
        first = declared[0]
        text = f"{', '.join(who)}: {first.help}"
        if first.type is int and first.min is not None and first.max is not None:
            text += f", {int(first.min)}..{int(first.max)}"
        defaults = [o.default for o in declared]
        if first.type is not bool and any(d is not None for d in defaults):
            if len({repr(d) for d in defaults}) == 1:
                text += f" (default {defaults[0]})"
            else:
                pairs = ", ".join(f"{d} for {m}" for d, m in zip(defaults, who))
                text += f" (default: {pairs})"
        found[name] = (first, text)
    return found


def register(subparsers) -> None:
    from tfquant import datasets, methods, zoo
    from tfquant.train import FIELDS, TrainConfig

    defaults = TrainConfig()
    fields = {f.name: f for f in FIELDS}
    p = subparsers.add_parser(
        "train",
        help="train a zoo network on real data, finalize, save, convert and benchmark it",
        description=(
            "Train a network from the zoo with a method (see --method) on an offline "
            "dataset, finalize it, save model.keras, convert it through LCE to "
            "model.tflite, benchmark it and write report.json, report.md and curves.png "
            "to --out."
        ),
    )
    p.add_argument(
        "--dataset",
        default=defaults.dataset,
        choices=sorted(datasets.DATASETS),
        help=f"default {defaults.dataset}",
    )
    p.add_argument(
        "--model",
        default=defaults.model,
        choices=sorted(zoo.MODELS),
        help=f"default {defaults.model}",
    )
    p.add_argument(
        "--method",
        default=defaults.method,
        choices=methods.names(),
        help="; ".join(f"{m}: {methods.get(m).summary}" for m in methods.names())
        + f" (default {defaults.method})",
    )
    _add_option(p, fields["epochs"], defaults.epochs, f"default {defaults.epochs}")
    _add_option(p, fields["batch_size"], defaults.batch_size, f"default {defaults.batch_size}")
    _add_option(p, fields["learning_rate"], None, "default: the method's")
    for name, (option, text) in _method_options_help().items():
        default = getattr(defaults, name, None)
        _add_option(p, option, default if option.choices is not None else None, text)
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="train on an image-folder tree (one sub-folder of images per class) instead of "
        "--dataset; a --validation-split of it is held out and evaluated",
    )
    p.add_argument(
        "--image-size",
        metavar="H,W",
        help="with --data-dir: resize every image to H,W (default: the images' own size, "
        "which must then be one size)",
    )
    p.add_argument(
        "--augment",
        action="store_true",
        help="with --data-dir: random horizontal flips and shifts of up to 1/8 of the size",
    )
    _add_option(
        p,
        fields["validation_split"],
        defaults.validation_split,
        f"with --data-dir: held-out fraction, in (0, 1) (default {defaults.validation_split})",
    )
    _add_option(p, fields["limit"], None, "train on the first N samples only (N >= 8)")
    _add_option(p, fields["seed"], defaults.seed, f"default {defaults.seed}")
    p.add_argument("--out", default=defaults.out, help="output directory (default runs/train)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a previous run's artifacts in --out"
    )
    p.add_argument("--no-convert", action="store_true", help="skip conversion and benchmarking")
    p.add_argument(
        "--strategy",
        choices=("none", "mirrored"),
        default=defaults.strategy,
        help="mirrored: train under tf.distribute, over every local GPU (or the CPU), or "
        "across the workers TF_CONFIG names (MultiWorkerMirroredStrategy: start one process "
        "per worker with the same arguments; the chief writes --out); default none",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run whose per-epoch checkpoints are in --out/checkpoints (same "
        "arguments); it ends with the weights of an uninterrupted run",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_train)


# flags whose TrainConfig field is not the flag's own value
_NOT_FIELDS = ("convert", "verbose")


def config_from_args(args: argparse.Namespace):
    """The :class:`tfquant.train.TrainConfig` that ``tfquant train`` runs for ``args``:
    every field from the flag of its name, ``convert`` from ``--no-convert`` and
    ``verbose`` from ``-q``."""
    import dataclasses

    from tfquant.train import TrainConfig

    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if f.name not in _NOT_FIELDS and hasattr(args, f.name)
    }
    return TrainConfig(**values, convert=not args.no_convert, verbose=0 if args.quiet else None)


def _cmd_train(args: argparse.Namespace) -> int:
    from tfquant.train import run

    # run checks the config and --out first; its refusals are ConfigErrors (a missing
    # dataset a DatasetNotFoundError): TfquantErrors, which the command line reports as bad
    # input by their type. A ValueError from inside TensorFlow or Keras is a bug to report,
    # with its traceback.
    report = run(config_from_args(args))
    if "worker" in report:
        print(json.dumps({"worker": report["worker"], "artifacts": "written by the chief"}))
        return 0
    brief = {
        "test_accuracy": report["test_accuracy"],
        "test_accuracy_tflite": report.get("test_accuracy_tflite"),
        "tflite_bytes": report.get("tflite_bytes"),
        "bitpacked_bytes": report["size"]["bitpacked_bytes"],
        "latency_ms_1thread": (report.get("latency_ms") or {}).get("median_ms"),
        "ops": (report.get("conversion") or {}).get("ops"),
        "train_seconds": round(report["train_seconds"], 1),
    }
    print(json.dumps(brief, indent=2))
    print(f"wrote to {args.out}: {', '.join(report['artifacts'])}")
    return 0
