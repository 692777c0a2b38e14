"""``tfquant train``: the subcommand over :func:`tfquant.train.run`."""

from __future__ import annotations

import argparse
import json
import os


def register(subparsers) -> None:
    from tfquant import datasets, zoo
    from tfquant.cli import int_in, positive_float
    from tfquant.train import METHODS, TrainConfig

    defaults = TrainConfig()
    p = subparsers.add_parser(
        "train",
        help="train a zoo network on real data, finalize, save, convert and benchmark it",
        description=(
            "Train a network from the zoo with a method (binary: ste, md-*, binary-relax; "
            "ternary weights on 2-bit codes: tsq; k-bit weights and activations: cpq (with "
            "DropBits and, with --learn-bits, learned per-layer widths), dorefa; float: the "
            "reference) on an offline "
            "dataset, finalize it, save "
            "model.keras, convert it through LCE to model.tflite, benchmark it and write "
            "report.json, report.md and curves.png to --out."
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
        "--method", default=defaults.method, choices=METHODS, help=f"default {defaults.method}"
    )
    p.add_argument("--epochs", type=int_in(1, 10_000), default=defaults.epochs)
    p.add_argument("--batch-size", type=int_in(1, 65_536), default=defaults.batch_size)
    p.add_argument(
        "--learning-rate", type=positive_float, default=None, help="default: the method's"
    )
    p.add_argument(
        "--finetune-epochs",
        type=int_in(0, 9_999),
        default=None,
        help="tsq only: epochs of step 3 (fine-tuning with ternary kernels) out of --epochs "
        "(default: a third, at least 1)",
    )
    p.add_argument(
        "--bits",
        type=int_in(1, 8),
        default=None,
        help="cpq, dorefa: bits of the hidden layers' weights and activations, 1..8 "
        "(default: 3 for cpq, 2 for dorefa)",
    )
    p.add_argument(
        "--learn-bits",
        action="store_true",
        help="cpq: learn each layer's weight bit-width (hard-concrete gates on DropBits' "
        "levels), starting at --bits; the report lists them",
    )
    p.add_argument(
        "--dropbits",
        choices=("A", "B", "none"),
        default="A",
        help="cpq: DropBits scheme, A (drop the grid's outer range, default), B (drop its "
        "resolution) or none",
    )
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
    p.add_argument(
        "--validation-split",
        type=positive_float,
        default=defaults.validation_split,
        help=f"with --data-dir: held-out fraction, in (0, 1) (default {defaults.validation_split})",
    )
    p.add_argument(
        "--limit", type=int_in(8), default=None, help="train on the first N samples only (N >= 8)"
    )
    p.add_argument("--seed", type=int_in(0, 2**32 - 1), default=defaults.seed)
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


def config_from_args(args: argparse.Namespace):
    """The :class:`tfquant.train.TrainConfig` that ``tfquant train`` runs for ``args``."""
    from tfquant.train import TrainConfig

    return TrainConfig(
        dataset=args.dataset,
        model=args.model,
        method=args.method,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        finetune_epochs=args.finetune_epochs,
        bits=args.bits,
        learn_bits=args.learn_bits,
        dropbits=args.dropbits,
        limit=args.limit,
        data_dir=args.data_dir,
        image_size=args.image_size,
        augment=args.augment,
        validation_split=args.validation_split,
        seed=args.seed,
        out=args.out,
        overwrite=args.overwrite,
        convert=not args.no_convert,
        verbose=0 if args.quiet else None,
        strategy=args.strategy,
        resume=args.resume,
    )


def raised_by_tfquant(error: BaseException) -> bool:
    """Whether ``error`` was raised in tfquant's own code (its innermost frame is in the
    package): tfquant's errors say what was expected and received, and are the user's to
    fix; a ValueError raised inside TensorFlow or Keras while training is not."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    package = os.path.dirname(os.path.abspath(__file__))
    return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(package + os.sep)


def _cmd_train(args: argparse.Namespace) -> int:
    from tfquant.cli import UsageError
    from tfquant.datasets import DatasetNotFoundError
    from tfquant.train import run

    config = config_from_args(args)
    try:
        report = run(config)  # checks the config and --out first
    except (ValueError, DatasetNotFoundError) as e:
        if type(e).__module__.startswith("tfquant.converters") or not raised_by_tfquant(e):
            raise  # a failure inside TensorFlow or Keras: a bug to report, with its traceback
        raise UsageError(str(e)) from e
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
