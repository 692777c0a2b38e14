"""BinaryRelax vs STE + Adam on Fashion-MNIST: hard-quantized test accuracy as JSON.

Both train :func:`common.binary_weight_cnn` (every conv and dense kernel binary, float ReLU
activations) with Adam, the same data, epochs, batch size and seed, and are evaluated by
:func:`common.fit_and_evaluate` after ``tfquant.finalize`` (kernels exactly binary,
BatchNorm re-estimated):

* ``ste_adam``: ``SteSign`` kernels (sign, straight-through gradient clipped at 1).
* ``binary_relax``: ``ScaledSign`` kernels (per output channel, alpha = mean |w|) relaxed by
  ``tfquant.methods.binary_relax.apply``: lambda grows geometrically per step from
  ``--lambda-init`` to ``--lambda-end`` over phase one (the authors' 1.04 per epoch is for
  runs of hundreds of epochs; this keeps the same geometric continuation in a short run),
  then the last ``--phase-two-epochs`` epochs train on the exact binary weights with the
  learning rate times ``--lr-multiplier``.
* ``ste_scaled_lr_drop`` (control, not run by default: ``--methods`` adds it): ``ScaledSign``
  kernels with a plain straight-through estimator and the same learning-rate drop for the
  last ``--phase-two-epochs`` epochs, i.e. BinaryRelax without the relaxation.

The data, epochs, batch size and Adam learning rate default to those of
``benchmarks/mirror_descent.py`` (20000 training images, all 10000 test images, 3 epochs,
batch 128, 1e-3). Each method runs once per seed in ``--seeds``; the JSON gives every run and
the mean.

Run (about 5 minutes on 2 CPU cores)::

    .venv/bin/python benchmarks/binary_relax.py --out runs/binary_relax.json

``--subset 0`` trains on all 60k images.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import keras  # noqa: E402

import tfquant  # noqa: E402
from tfquant.methods import binary_relax  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--subset", type=int, default=20000, help="training images (0: all)")
    p.add_argument("--test-subset", type=int, default=0, help="test images (0: all)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's, both methods")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated model seeds")
    p.add_argument("--methods", default="ste_adam,binary_relax", help=f"some of {METHODS}")
    p.add_argument("--lambda-init", type=float, default=1.0)
    p.add_argument("--lambda-end", type=float, default=100.0)
    p.add_argument("--phase-two-epochs", type=int, default=1)
    p.add_argument("--lr-multiplier", type=float, default=0.1)
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    if not 0 < args.phase_two_epochs < args.epochs:
        p.error(
            f"Expected 0 < --phase-two-epochs < --epochs. Received: "
            f"--phase-two-epochs={args.phase_two_epochs}, --epochs={args.epochs}"
        )
    if not args.lambda_end >= args.lambda_init > 0:
        p.error(
            f"Expected --lambda-end >= --lambda-init > 0. Received: "
            f"--lambda-init={args.lambda_init}, --lambda-end={args.lambda_end}"
        )
    args.methods = args.methods.split(",")
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"Expected --methods among {METHODS}. Received: {unknown}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"Expected comma-separated integers. Received: --seeds={args.seeds!r}")
    return args


def run_ste_adam(args, train, test, seed: int) -> dict:
    model = common.binary_weight_cnn("ste_sign", seed=seed)
    optimizer = keras.optimizers.Adam(args.learning_rate)
    return common.fit_and_evaluate(
        model, optimizer, train, test, epochs=args.epochs, batch_size=args.batch_size
    )


def binary_relax_settings(args, n_train: int) -> dict:
    steps_per_epoch = math.ceil(n_train / args.batch_size)
    phase_one_steps = steps_per_epoch * (args.epochs - args.phase_two_epochs)
    return dict(
        lambda_init=args.lambda_init,
        growth=(args.lambda_end / args.lambda_init) ** (1.0 / max(phase_one_steps - 1, 1)),
        update="step",
        phase_two_epoch=args.epochs - args.phase_two_epochs,
        lr_multiplier=args.lr_multiplier,
        epochs=args.epochs,
    )


def run_binary_relax(args, train, test, seed: int) -> dict:
    model = common.binary_weight_cnn(
        lambda: tfquant.quantizers.ScaledSign(per_channel=True), seed=seed
    )
    settings = binary_relax_settings(args, len(train[0]))
    callbacks = binary_relax.apply(model, **settings)
    optimizer = keras.optimizers.Adam(args.learning_rate)
    result = common.fit_and_evaluate(
        model,
        optimizer,
        train,
        test,
        epochs=args.epochs,
        batch_size=args.batch_size,
        callbacks=callbacks,
    )
    return result


def run_ste_scaled_lr_drop(args, train, test, seed: int) -> dict:
    model = common.binary_weight_cnn(
        lambda: tfquant.quantizers.ScaledSign(per_channel=True), seed=seed
    )
    drop_epoch = args.epochs - args.phase_two_epochs
    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch, lr: lr * args.lr_multiplier if epoch == drop_epoch else lr
    )
    optimizer = keras.optimizers.Adam(args.learning_rate)
    return common.fit_and_evaluate(
        model,
        optimizer,
        train,
        test,
        epochs=args.epochs,
        batch_size=args.batch_size,
        callbacks=[schedule],
    )


RUNS = {
    "ste_adam": run_ste_adam,
    "binary_relax": run_binary_relax,
    "ste_scaled_lr_drop": run_ste_scaled_lr_drop,
}
METHODS = tuple(RUNS)


def main(argv=None) -> dict:
    args = parse_args(argv)
    train, test = common.load_data(
        "fashion_mnist", subset=args.subset or None, test_subset=args.test_subset or None
    )
    runs = {name: RUNS[name] for name in args.methods}
    results: dict = {name: {} for name in runs}
    for seed in args.seeds:
        for name, run in runs.items():
            results[name][f"seed_{seed}"] = run(args, train, test, seed)
            print(name, seed, results[name][f"seed_{seed}"], file=sys.stderr, flush=True)

    def mean(name: str, key: str) -> float:
        return statistics.fmean(r[key] for r in results[name].values())

    summary = {
        name: {
            "test_accuracy_hard_mean": mean(name, "test_accuracy_hard"),
            "test_accuracy_hard_min": min(r["test_accuracy_hard"] for r in results[name].values()),
            "seconds_per_step_mean": mean(name, "seconds_per_step"),
        }
        for name in runs
    }
    report = {
        "benchmark": "binary_relax",
        "data": "fashion_mnist",
        "model": "benchmarks.common.binary_weight_cnn (every conv and dense kernel binary)",
        "train_images": len(train[0]),
        "test_images": len(test[0]),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "binary_relax_schedule": binary_relax_settings(args, len(train[0])),
        "summary": summary,
        "results": results,
        "machine": common.machine(),
    }
    if {"binary_relax", "ste_adam"} <= set(summary):
        report["accuracy_gain_binary_relax_over_adam"] = (
            summary["binary_relax"]["test_accuracy_hard_mean"]
            - summary["ste_adam"]["test_accuracy_hard_mean"]
        )
    common.dump(report, args.out)
    return report


if __name__ == "__main__":
    main()
