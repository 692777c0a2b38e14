"""Tune MirrorDescent against STE + Adam on a validation split, never on the test set.

Trains on the first ``--subset`` Fashion-MNIST training images and measures the hard
(``tfquant.finalize``d) accuracy on training images 50,000-59,999, which no run trains on;
the test set is left to ``benchmarks/mirror_descent.py`` and ``benchmarks/compare_larq.py``.
Each variant is a base method and ``+``-joined options::

    md                  MirrorDescent() (its defaults) + BetaAnnealing
    ste                 Keras Adam (1e-3) on SteSign kernels
    +lr3e-3             learning rate (md default 1e-2, ste 1e-3)
    +bm1000             beta_max (md)
    +fr0.7              BetaAnnealing(fraction=0.7): beta_max after 70% of the run (md)
    +cos                cosine decay of the learning rate to 0 over the run
    +hard0.8            beta_max at 80% of the run, then forward Q(w) (beta = infinity:
                        BinaryConnect on the dual) for the last 20% (md)
    +ema                Keras use_ema=True, ema_momentum=0.99 (the kernels finalize sees
                        are the moving average)

Prints one JSON object per run (and appends it to ``--out``), then a JSON summary: the mean,
standard deviation and per-seed validation accuracy of each variant. Usage (about 1-1.5
minutes per run on 2 CPU cores)::

    .venv/bin/python benchmarks/md_sweep.py --arch binary_cnn \\
        --variants ste,md,md+lr3e-3+bm1000 --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402
import keras  # noqa: E402

import tfquant  # noqa: E402
from tfquant import zoo  # noqa: E402
from tfquant.callbacks import BetaAnnealing  # noqa: E402

ARCHS = ("binary_cnn", "bireal_cnn", "binary_weight_cnn")


class HardFinish(keras.callbacks.Callback):
    """From step ``step`` on, forward ``Q(w)`` (gate 1): MD in the limit beta -> infinity,
    i.e. BinaryConnect on the dual, for the rest of the run."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step
        self.done = False

    def on_train_batch_begin(self, batch, logs=None):
        opt = self.model.optimizer
        if not self.done and int(opt.iterations.numpy()) >= self.step:
            for layer in tfquant.models.quantized_layers(self.model):
                layer.kernel_gate.assign(1.0)
            self.done = True


def make_method(variant: str, steps: int):
    """(optimizer, callbacks) of a variant string such as ``md+lr3e-3+bm1000``."""
    base, *options = variant.split("+")
    if base not in ("md", "ste"):
        raise ValueError(f"Expected a variant starting with md or ste. Received: {variant!r}")
    lr = 1e-2 if base == "md" else 1e-3
    kwargs: dict = {}
    fraction, cosine, hard = 1.0, False, None
    for option in options:
        if option.startswith("lr"):
            lr = float(option[2:])
        elif option.startswith("bm") and base == "md":
            kwargs["beta_max"] = float(option[2:])
        elif option.startswith("fr") and base == "md":
            fraction = float(option[2:])
        elif option.startswith("hard") and base == "md":
            hard = float(option[4:])
        elif option == "cos":
            cosine = True
        elif option == "ema":
            kwargs.update(use_ema=True, ema_momentum=0.99)
        else:
            raise ValueError(f"Unknown option {option!r} in variant {variant!r}")
    rate = keras.optimizers.schedules.CosineDecay(lr, steps) if cosine else lr
    if base == "md":
        callbacks = [BetaAnnealing(fraction=fraction if hard is None else hard)]
        if hard is not None:
            callbacks.append(HardFinish(int(round(hard * steps))))
        return tfquant.MirrorDescent(learning_rate=rate, **kwargs), callbacks
    return keras.optimizers.Adam(rate, **kwargs), []


def build(arch: str, seed: int) -> keras.Model:
    if arch == "binary_weight_cnn":
        return common.binary_weight_cnn("ste_sign", seed=seed)
    keras.utils.set_random_seed(seed)
    return zoo.build(arch)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="binary_cnn", choices=ARCHS)
    parser.add_argument("--variants", default="ste,md")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--subset", type=int, default=20000, help="training images (<= 50000)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", default=None, help="append each run's JSON line here")
    args = parser.parse_args(argv)
    if not 0 < args.subset <= 50000:
        parser.error(f"--subset must be in [1, 50000]. Received: {args.subset}")
    variants = [v for v in args.variants.split(",") if v]
    seeds = common.parse_seeds(parser, args.seeds)
    (x, y), _ = common.load_data("fashion_mnist")
    train, validation = (x[: args.subset], y[: args.subset]), (x[50000:], y[50000:])
    steps = -(-args.subset // args.batch_size) * args.epochs
    for variant in variants:
        make_method(variant, steps)  # bad variants fail before any training

    runs: dict = {v: [] for v in variants}
    for seed in seeds:
        for variant in variants:
            model = build(args.arch, seed)
            optimizer, callbacks = make_method(variant, steps)
            start = time.perf_counter()
            run = common.fit_and_evaluate(
                model,
                optimizer,
                train,
                validation,
                epochs=args.epochs,
                batch_size=args.batch_size,
                callbacks=callbacks,
            )
            run = {
                "arch": args.arch,
                "variant": variant,
                "seed": seed,
                "validation_accuracy_hard": run.pop("test_accuracy_hard"),
                **run,
                "wall_seconds": time.perf_counter() - start,
            }
            runs[variant].append(run)
            print(json.dumps(run), file=sys.stderr, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(run) + "\n")
    summary = {
        "benchmark": "md_sweep",
        "arch": args.arch,
        "train_images": args.subset,
        "validation_images": "fashion_mnist train[50000:60000]",
        "epochs": args.epochs,
        "seeds": seeds,
        "results": {
            v: common.over_seeds(
                "validation_accuracy_hard", [r["validation_accuracy_hard"] for r in rs]
            )
            for v, rs in runs.items()
        },
        "machine": common.machine(),
    }
    common.dump(summary)
    return summary


if __name__ == "__main__":
    main()
