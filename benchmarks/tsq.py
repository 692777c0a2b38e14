"""Two-Step Quantization (TSQ) on Fashion-MNIST: ternary weights on sparse 2-bit codes vs float.

Measures the hard-quantized test accuracy of ``tfquant.zoo.binary_cnn`` (float stem and
classifier, four hidden 3x3 convolutions) trained five ways, with the same data, seed,
epoch budget ``E = --epochs`` and batch 128 (Adam, learning rate 1e-3; the last
``F = --finetune-epochs`` epochs at 1e-4 with a fresh Adam), each evaluated on the test set
after ``tfquant.finalize`` (kernels exactly ternary, BatchNorm re-estimated on 20 training
batches):

* ``float``: ``zoo.build(..., method="float")`` (ReLU activations, float kernels): the
  reference.
* ``tsq``: ``zoo.build(..., method="tsq")`` (``SparseQuantizer`` codes at the fixed point
  threshold 0.3254 / step 0.6508, ``SteTernary(method="optimal")`` kernels) trained by
  ``tfquant.methods.tsq.fit``: ``E - F`` epochs of code learning with float kernels, step 2
  (per-layer ternary response reconstruction on ``--step2-inputs`` training images), then
  ``F`` epochs of fine-tuning with ternary kernels.
* ``tsq_no_step2``: as ``tsq`` without step 2 (fine-tuning from the optimal ternary
  approximation of the step-1 kernels only): what step 2 adds.
* ``tsq_threshold0``: as ``tsq`` with dense codes (``SparseQuantizer(2, threshold=0)``,
  HWGQ's half-wave quantizer, step 0.5388): what the sparsity threshold adds.
* ``joint``: dense 2-bit codes and TWN ternary kernels (``SteTernary(method="twn")``)
  trained together from scratch with a straight-through estimator, the same schedule as
  ``float``: the joint-training baseline TSQ is meant to beat.

The test set is used for nothing but the final evaluation. Every variant runs once per seed
of ``--seeds``; the JSON gives per-seed accuracies, train seconds (and step 2's seconds and
per-layer reconstruction errors for the TSQ variants), the paired gains of ``tsq`` over the
others in accuracy points (``common.paired_gain``, 95% interval over seeds), two targets
(TSQ within 1 point of float; TSQ at least as accurate as joint) with verdicts, and, unless
``--no-convert``, the conversion of the first seed's ``tsq`` and ``float`` models through
Larq Compute Engine: which ternary layers became exact int8 kernels, the ops, the size ratio
tsq / float (target <= 0.3) and the TFLite vs Keras argmax agreement on the test set
(target >= 0.995).

Run (about 25 minutes on 2 idle CPU cores for the defaults: 15 runs of 3 epochs on 20000
images, about 40 s of training each, plus about 90 s per step 2 (6 of them: 12000 rows
and 100 iterations per layer) and the conversion)::

    .venv/bin/python benchmarks/tsq.py --out runs/tsq.json --png runs/tsq.png

A smoke run (about 30 s)::

    .venv/bin/python benchmarks/tsq.py --seeds 0 --epochs 2 --subset 256 --test-subset 128 \
        --step2-inputs 64 --step2-samples 300 --step2-iterations 3

``--subset 0`` trains on all 60k images.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfquant  # noqa: E402
from tfquant import quantizers, zoo  # noqa: E402
from tfquant.methods import tsq  # noqa: E402

VARIANTS = ("float", "tsq", "tsq_no_step2", "tsq_threshold0", "joint")
TERNARY_LAYERS = ("s0_conv0", "s0_conv1", "s1_conv0", "s1_conv1")
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
BN_BATCHES = 20  # finalize re-estimates BatchNorm on this many training batches
TARGET_WITHIN_FLOAT_POINTS = -1.0  # tsq - float, in accuracy points, at least
TARGET_SIZE_RATIO = 0.3  # tsq flatbuffer bytes / float flatbuffer bytes, at most
TARGET_AGREEMENT = 0.995  # TFLite vs Keras argmax agreement on the test set, at least


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--methods", default=",".join(VARIANTS), help=f"some of {VARIANTS}")
    p.add_argument("--epochs", type=int, default=3, help="total epochs E of every variant")
    p.add_argument(
        "--finetune-epochs", type=int, default=1, help="last F epochs (TSQ step 3) at lr / 10"
    )
    p.add_argument("--subset", type=int, default=20000, help="training images (0: all)")
    p.add_argument("--test-subset", type=int, default=0, help="test images (0: all)")
    p.add_argument("--step2-inputs", type=int, default=2048, help="training images of step 2")
    p.add_argument("--step2-samples", type=int, default=12000, help="step 2's rows per layer")
    p.add_argument("--step2-iterations", type=int, default=100, help="step 2's outer rounds")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--png", default=None, help="plot the accuracies here (needs matplotlib)")
    p.add_argument("--no-convert", action="store_true", help="skip the LCE conversion")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error(f"Expected --epochs >= 2. Received: --epochs={args.epochs}")
    if not 1 <= args.finetune_epochs < args.epochs:
        p.error(
            "Expected 1 <= --finetune-epochs < --epochs. Received: "
            f"--finetune-epochs={args.finetune_epochs}, --epochs={args.epochs}"
        )
    for name in ("subset", "test_subset"):
        if getattr(args, name) < 0:
            p.error(f"Expected --{name.replace('_', '-')} >= 0. Received: {getattr(args, name)}")
    for name in ("step2_inputs", "step2_samples", "step2_iterations"):
        if getattr(args, name) < 1:
            p.error(f"Expected --{name.replace('_', '-')} >= 1. Received: {getattr(args, name)}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(VARIANTS))
    if unknown or not methods:
        p.error(f"Expected --methods among {VARIANTS}. Received: {args.methods!r}")
    if len(set(methods)) != len(methods):
        p.error(f"Expected each of --methods once. Received: {args.methods!r}")
    args.methods = [v for v in VARIANTS if v in methods]
    args.seeds = common.parse_seeds(p, args.seeds)
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"Expected distinct --seeds. Received: {args.seeds}")
    return args


# ----------------------------------------------------------------- the variants
def build(variant: str, input_shape, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    if variant == "float":
        return zoo.build("binary_cnn", method="float", input_shape=input_shape, classes=10)
    if variant in ("tsq", "tsq_no_step2"):
        return zoo.build("binary_cnn", method="tsq", input_shape=input_shape, classes=10)
    dense_codes = quantizers.SparseQuantizer(2, threshold=0.0)  # HWGQ: step 0.5388
    kernel = quantizers.SteTernary(method="optimal" if variant == "tsq_threshold0" else "twn")
    return zoo.binary_cnn(
        input_shape=input_shape, classes=10, input_quantizer=dense_codes, kernel_quantizer=kernel
    )


def train_two_stage(model: keras.Model, x, y, args) -> None:
    """``E - F`` epochs at the learning rate, then ``F`` at a tenth of it, a fresh Adam per
    stage: the schedule ``tsq.fit`` gives its two training stages."""
    code_epochs = args.epochs - args.finetune_epochs
    for lr, first, last in (
        (LEARNING_RATE, 0, code_epochs),
        (LEARNING_RATE / 10, code_epochs, args.epochs),
    ):
        model.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        model.fit(
            x, y, batch_size=BATCH_SIZE, epochs=last, initial_epoch=first, verbose=0, shuffle=True
        )


def run_variant(variant: str, args, train, test, seed: int) -> tuple[keras.Model, dict]:
    model = build(variant, train[0].shape[1:], seed)
    run: dict = {"seed": seed}
    start = time.perf_counter()
    if variant in ("float", "joint"):
        train_two_stage(model, *train, args)
    else:
        result = tsq.fit(
            model,
            *train,
            code_epochs=args.epochs - args.finetune_epochs,
            finetune_epochs=args.finetune_epochs,
            batch_size=BATCH_SIZE,
            learning_rate=LEARNING_RATE,
            step2=variant != "tsq_no_step2",
            step2_inputs=args.step2_inputs,
            verbose=0,
            seed=seed,
            samples=args.step2_samples,
            iterations=args.step2_iterations,
        )
        run["step2_seconds"] = result.step2_seconds
        run["step2_layers"] = [
            {
                "name": r.name,
                "rows": int(r.rows),
                "error_before": float(np.mean(r.error_before)),
                "error_after": float(np.mean(r.error_after)),
                "folded": bool(r.folded),
            }
            for r in result.records
        ]
    run["train_seconds"] = time.perf_counter() - start
    tfquant.finalize(model, train[0][: BN_BATCHES * BATCH_SIZE], batch_size=BATCH_SIZE)
    run["test_accuracy"] = common.accuracy(model, *test)
    return model, run


# ----------------------------------------------------------------- statistics and targets
# ----------------------------------------------------------------- conversion
def conversion(tsq_model: keras.Model, float_model: keras.Model | None, train, test) -> dict:
    c = common.convert_and_compare(tsq_model, float_model, train, test, TERNARY_LAYERS)
    out = {
        "model": "tsq, first seed, finalized",
        **{k: c[k] for k in ("convert_seconds", "layers", "ops", "sizes", "parity_64", "notes")},
        "ternary_layers_int8": c["layers_int8"],
        "ternary_layers_exact": c["layers_exact"],
        "tflite_bytes_tsq": c["tflite_bytes"],
        "tflite_test_accuracy": c["tflite_test_accuracy"],
        "targets": {"tflite_keras_argmax_agreement": common.agreement_target(c, TARGET_AGREEMENT)},
    }
    if c["tflite_bytes_float"] is not None:
        ratio = c["tflite_bytes"] / c["tflite_bytes_float"]
        out["tflite_bytes_float"] = c["tflite_bytes_float"]
        out["size_ratio_tsq_over_float"] = ratio
        out["targets"]["size_ratio_tsq_over_float"] = {
            "target": f"tsq flatbuffer at most {TARGET_SIZE_RATIO} x the float one",
            "measured": ratio,
            "verdict": "met" if ratio <= TARGET_SIZE_RATIO else "missed",
        }
    else:
        out["size_ratio_tsq_over_float"] = None
        out["note"] = "float not among --methods: no size ratio"
    return out


def plot(results: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[tsq bench] matplotlib not importable: no PNG", file=sys.stderr)
        return False
    names = list(results)
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 2, 4))
    means = [results[n]["test_accuracy"] for n in names]
    ax.bar(range(len(names)), means, color="#9bb7d4", label="mean over seeds")
    for i, n in enumerate(names):
        points = results[n]["test_accuracy_per_seed"]
        ax.scatter([i] * len(points), points, color="black", s=14, zorder=3)
    if "float" in results:
        ax.axhline(results["float"]["test_accuracy"], ls="--", color="gray", label="float mean")
    low = min(min(results[n]["test_accuracy_per_seed"]) for n in names)
    ax.set_ylim(max(0.0, low - 0.05), min(1.0, max(means) + 0.03))
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("hard test accuracy")
    ax.set_title("binary_cnn on Fashion-MNIST: TSQ variants")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ----------------------------------------------------------------- main
def main(argv=None) -> dict:
    args = parse_args(argv)
    train, test = common.load_data(
        "fashion_mnist", subset=args.subset or None, test_subset=args.test_subset or None
    )
    runs: dict = {v: [] for v in args.methods}
    kept: dict = {}  # the first seed's finalized tsq and float models, for the conversion
    for seed in args.seeds:
        for variant in args.methods:
            model, run = run_variant(variant, args, train, test, seed)
            runs[variant].append(run)
            if seed == args.seeds[0] and variant in ("tsq", "float") and not args.no_convert:
                kept[variant] = model
            print(
                f"[tsq bench] seed {seed} {variant}: {run['test_accuracy']:.4f} "
                f"({run['train_seconds']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )

    results = {}
    for variant, rs in runs.items():
        results[variant] = {
            **common.over_seeds("test_accuracy", [r["test_accuracy"] for r in rs]),
            "train_seconds_per_seed": [r["train_seconds"] for r in rs],
        }
        if variant.startswith("tsq"):
            results[variant]["step2_seconds_per_seed"] = [r["step2_seconds"] for r in rs]
            results[variant]["step2_layers_per_seed"] = [r["step2_layers"] for r in rs]

    paired, targets = {}, {}
    if "tsq" in results:
        for other in ("float", "joint", "tsq_no_step2", "tsq_threshold0"):
            if other in results:
                paired[f"tsq_minus_{other}_points"] = common.to_points(
                    common.paired_gain(
                        results["tsq"]["test_accuracy_per_seed"],
                        results[other]["test_accuracy_per_seed"],
                    )
                )
        if "tsq_minus_float_points" in paired:
            targets["tsq_within_1pt_of_float"] = common.verdict_within(
                paired["tsq_minus_float_points"],
                "TSQ within 1.0 point of float",
                TARGET_WITHIN_FLOAT_POINTS,
            )
        if "tsq_minus_joint_points" in paired:
            targets["tsq_at_least_joint"] = common.verdict_ahead(
                paired["tsq_minus_joint_points"], "TSQ at least as accurate as joint training"
            )

    out = {
        "benchmark": "tsq",
        "data": "fashion_mnist",
        "model": "tfquant.zoo.binary_cnn (float stem and classifier, 4 hidden 3x3 convs)",
        "train_images": len(train[0]),
        "test_images": len(test[0]),
        "config": {
            **{k: v for k, v in vars(args).items() if k not in ("out", "png")},
            "batch_size": BATCH_SIZE,
            "learning_rate": LEARNING_RATE,
            "finetune_learning_rate": LEARNING_RATE / 10,
            "bn_batches": BN_BATCHES,
        },
        "machine": common.machine(),
        "results": results,
        "paired": paired,
        "targets": targets,
    }
    if not args.no_convert:
        if "tsq" in kept:
            try:
                out["conversion"] = conversion(kept["tsq"], kept.get("float"), train, test)
            except Exception as e:  # keep the training results of a long run
                print(f"[tsq bench] conversion failed: {e!r}", file=sys.stderr, flush=True)
                out["conversion"] = {"error": repr(e)}
        else:
            out["conversion"] = {"skipped": "tsq not among --methods"}
    if args.png:
        out["png"] = args.png if plot(results, args.png) else None
    common.dump(out, args.out)
    return out


if __name__ == "__main__":
    main()
