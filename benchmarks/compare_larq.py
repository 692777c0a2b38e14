"""tfquant vs larq 0.14 on Fashion-MNIST: the same binary CNN, same data, epochs and seed.

The architecture is ``tfquant.zoo.binary_cnn`` (float stem conv 32 + BatchNorm + max pool;
per stage two binary 3x3 convolutions, sign inputs and sign kernels, ``padding="same"``,
``pad_values=1.0``, no bias, each followed by BatchNorm; max pool between stages; global
average pooling; Dense softmax). Its larq twin has the same layers and names, with
``larq.layers.QuantConv2D`` for the binary convolutions. Every model starts from the same
weights: one reference model is built from ``--seed`` and its weights are copied into each
(the signs of its kernels for Bop, which trains binary weights directly). Methods:

* ``larq_ste_adam``: larq ``QuantConv2D(input_quantizer="ste_sign",
  kernel_quantizer="ste_sign", kernel_constraint="weight_clip")`` and Keras Adam;
* ``larq_bop``: larq ``QuantConv2D(kernel_quantizer=NoOp(precision=1))`` trained by
  ``larq.optimizers.CaseOptimizer``: ``Bop`` for the binary kernels (threshold 1e-6,
  gamma 1e-3: the values of larq's optimizer docs) and Adam for everything else;
* ``tfquant_ste_adam``: ``tfquant.layers.QuantConv2D`` with ``"ste_sign"`` kernels and the
  same Keras Adam (the same method as ``larq_ste_adam``);
* ``tfquant_md_tanh_s``: ``tfquant.MirrorDescent()`` (MD-tanh-S, its defaults) with
  ``tfquant.callbacks.BetaAnnealing``;
* ``tfquant_binary_relax``: ``"scaled_sign"`` kernels, Adam, and
  ``tfquant.methods.binary_relax.apply`` (lambda from 1 to 100 over ``epochs - 1`` epochs,
  then exact quantization with the learning rate x0.1 in the last epoch, as ``tfquant train``).

Every seed in ``--seeds`` (default 0, 1, 2) builds its own reference weights and trains
every method from them with its own shuffling; ``test_accuracy`` is the mean over seeds,
with the per-seed values and their standard deviation next to it. One seed's difference
between these methods is mostly noise (measured: 1-2 points between seeds of one method),
so the targets are judged on the means.

Test accuracy is that of the hard binary network with BatchNorm statistics re-estimated on
20 training batches, for every method: ``tfquant.finalize`` for tfquant models (hard
kernels, then re-estimation), ``tfquant.models.reestimate_batchnorm`` for larq models, whose
forward pass is already binary (the accuracy before re-estimation is kept too).

Seconds per step: the medians inside ``fit`` depend on whatever else loads the machine
while each method happens to train, so the reported ``seconds_per_step`` is timed
separately, on fresh copies of the five models (same layers, optimizers and quantizers;
step cost does not depend on the weight values): ``--rounds`` interleaved rounds of
``--steps`` ``train_on_batch`` calls per method on one batch, median over rounds. The
per-``fit`` median is kept as ``seconds_per_step_fit``. The STE + Adam target compares the
two medians (``step_time_ratio_tfquant_over_larq_ste_adam``); the median and quartiles of
the round-by-round ratio are reported next to it as a measure of the noise.

Writes ``compare_larq.json`` and ``compare_larq.png`` (test accuracy and step time bars) to
``--out``. Usage (about 7 minutes per seed on 2 CPU cores)::

    .venv/bin/python benchmarks/compare_larq.py                 # seeds 0,1,2
    .venv/bin/python benchmarks/compare_larq.py --seeds 0       # one seed, a quick look

larq 0.14 and tf-keras: ``import tfquant`` (first) sets ``TF_USE_LEGACY_KERAS=1``, so
``tf.keras`` is tf-keras 2.16 and larq, which builds on ``tf.keras``, makes tf-keras layers;
the script checks this. Bop and ``CaseOptimizer`` are legacy Keras optimizers and need
``tf.keras.optimizers.legacy.Adam`` as the optimizer of the float variables.
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
import larq  # noqa: E402  (after common, which imports tfquant: tf-keras)
import numpy as np  # noqa: E402

import tfquant  # noqa: E402
from tfquant import zoo  # noqa: E402
from tfquant._keras import keras, tf  # noqa: E402
from tfquant.callbacks import BetaAnnealing  # noqa: E402
from tfquant.methods import binary_relax  # noqa: E402

METHODS = (
    "larq_ste_adam",
    "larq_bop",
    "tfquant_ste_adam",
    "tfquant_md_tanh_s",
    "tfquant_binary_relax",
)
LABELS = {
    "larq_ste_adam": "larq\nSTE+Adam",
    "larq_bop": "larq\nBop",
    "tfquant_ste_adam": "tfquant\nSTE+Adam",
    "tfquant_md_tanh_s": "tfquant\nMD-tanh-S",
    "tfquant_binary_relax": "tfquant\nBinaryRelax",
}
_COPIED = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")


def check_larq_uses_tf_keras() -> None:
    """larq must build tf-keras layers (Keras 2), the Keras tfquant and LCE use."""
    base = larq.layers.QuantConv2D.__mro__
    if not any(cls is keras.layers.Layer for cls in base):
        raise ImportError(
            "larq's layers are not tf-keras layers: import tfquant before tensorflow and larq "
            "(or export TF_USE_LEGACY_KERAS=1)."
        )


# ------------------------------------------------------------------------------ models
def larq_binary_cnn(
    input_shape=(28, 28, 1), classes: int = 10, widths=(64, 128), bop: bool = False
) -> keras.Model:
    """``tfquant.zoo.binary_cnn`` with larq's ``QuantConv2D`` for the binary convolutions
    (same layer names). ``bop``: kernels marked binary for Bop (``NoOp(precision=1)``, used
    as they are, no constraint) instead of ``ste_sign`` latent kernels clipped to [-1, 1]."""
    if bop:
        kernel = {"kernel_quantizer": larq.quantizers.NoOp(precision=1)}
    else:
        kernel = {"kernel_quantizer": "ste_sign", "kernel_constraint": "weight_clip"}
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.MaxPooling2D(2, name="stem_pool")(x)
    for s, width in enumerate(widths):
        for b in range(2):
            x = larq.layers.QuantConv2D(
                width,
                3,
                padding="same",
                pad_values=1.0,
                input_quantizer="ste_sign",
                use_bias=False,
                name=f"s{s}_conv{b}",
                **kernel,
            )(x)
            x = keras.layers.BatchNormalization(name=f"s{s}_bn{b}")(x)
        if s < len(widths) - 1:
            x = keras.layers.MaxPooling2D(2, name=f"s{s}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="larq_binary_cnn")


def copy_weights(source: keras.Model, target: keras.Model, sign_binary_kernels: bool = False):
    """Copy kernels, biases and BatchNorm parameters layer by layer (matched by name).

    ``sign_binary_kernels``: the binary convolutions get ``sign(kernel)`` (+1 at 0), the
    binary weights the other models' first forward pass uses."""
    copied = 0
    for layer in target.layers:
        for variable in layer.weights:
            short = variable.name.split("/")[-1].split(":")[0]
            if short not in _COPIED:
                continue
            (value,) = [
                v.numpy()
                for v in source.get_layer(layer.name).weights
                if v.name.split("/")[-1].split(":")[0] == short
            ]
            if (
                sign_binary_kernels
                and short == "kernel"
                and isinstance(layer, larq.layers.QuantConv2D)
            ):
                value = np.where(value >= 0, 1.0, -1.0).astype(value.dtype)
            variable.assign(value)
            copied += 1
    return copied


def md_kwargs(args) -> dict:
    """MirrorDescent's arguments given on the command line (its defaults otherwise)."""
    given = {"learning_rate": args.md_learning_rate, "beta_max": args.md_beta_max}
    return {k: v for k, v in given.items() if v is not None}


def build(method: str, reference: keras.Model, args) -> tuple[keras.Model, object, list]:
    """(model with the reference's weights, optimizer, callbacks) of ``method``."""
    callbacks: list = []
    if method == "larq_ste_adam":
        model = larq_binary_cnn()
        optimizer = keras.optimizers.Adam(args.adam_learning_rate)
    elif method == "larq_bop":
        model = larq_binary_cnn(bop=True)
        optimizer = larq.optimizers.CaseOptimizer(
            (
                larq.optimizers.Bop.is_binary_variable,
                larq.optimizers.Bop(threshold=args.bop_threshold, gamma=args.bop_gamma),
            ),
            default_optimizer=keras.optimizers.legacy.Adam(args.adam_learning_rate),
        )
    elif method == "tfquant_ste_adam":
        model = zoo.binary_cnn(kernel_quantizer="ste_sign")
        optimizer = keras.optimizers.Adam(args.adam_learning_rate)
    elif method == "tfquant_md_tanh_s":
        model = zoo.binary_cnn(kernel_quantizer="ste_sign")
        optimizer = tfquant.MirrorDescent(**md_kwargs(args))
        callbacks = [BetaAnnealing()]
    elif method == "tfquant_binary_relax":
        model = zoo.binary_cnn(kernel_quantizer="scaled_sign")
        optimizer = keras.optimizers.Adam(args.adam_learning_rate)
        relaxed = max(args.epochs - 1, 1)  # tfquant train's setting (tfquant/train.py)
        callbacks = binary_relax.apply(
            model,
            lambda_init=1.0,
            growth=100.0 ** (1.0 / relaxed),
            phase_two_epoch=args.epochs - 1 if args.epochs > 1 else None,
            lr_multiplier=0.1 if args.epochs > 1 else None,
            epochs=args.epochs,
        )
    else:
        raise ValueError(f"Unknown method {method!r}. Expected one of {METHODS}.")
    copy_weights(reference, model, sign_binary_kernels=method == "larq_bop")
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, optimizer, callbacks


# ------------------------------------------------------------------------- measuring
def train_and_evaluate(method: str, model, callbacks, train, test, args, seed: int) -> dict:
    keras.utils.set_random_seed(seed)  # the same shuffling for every method
    timer = common.StepTimer()
    start = time.perf_counter()
    history = model.fit(
        train[0],
        train[1],
        epochs=args.epochs,
        batch_size=args.batch_size,
        callbacks=[timer, *callbacks],
        verbose=0,
        shuffle=True,
    )
    train_seconds = time.perf_counter() - start
    before = common.accuracy(model, *test)
    bn_data = train[0][: args.bn_batches * args.batch_size]
    if method.startswith("tfquant_"):
        tfquant.finalize(model, bn_data, batch_size=args.batch_size)
    else:  # the forward pass is already the binary network
        tfquant.models.reestimate_batchnorm(model, bn_data, batch_size=args.batch_size)
    result = {
        "test_accuracy": common.accuracy(model, *test),
        "test_accuracy_before_bn_reestimation": before,
        "train_accuracy_last_epoch": float(history.history["accuracy"][-1]),
        "seconds_per_step_fit": timer.seconds_per_step,
        "train_seconds": train_seconds,
        "steps": len(timer.times),
    }
    if method == "larq_bop":  # Bop's kernels are exactly +-1 (what the forward pass uses)
        kernels = [
            layer.kernel.numpy()
            for layer in model.layers
            if isinstance(layer, larq.layers.QuantConv2D)
        ]
        result["bop_kernels_binary"] = bool(all(np.all(np.abs(k) == 1) for k in kernels))
    return result


def interleaved_step_times(models: dict, x, y, rounds: int, steps: int) -> dict:
    """Median over ``rounds`` of the mean seconds of ``steps`` ``train_on_batch`` calls, the
    methods taking turns in every round so load from other processes hits all alike."""
    times: dict = {name: [] for name in models}
    for model in models.values():  # trace the train function and warm up
        for _ in range(3):
            model.train_on_batch(x, y)
    for r in range(rounds):
        order = list(models) if r % 2 == 0 else list(models)[::-1]
        for name in order:
            model = models[name]
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(x, y)
            times[name].append((time.perf_counter() - start) / steps)
    return {
        name: {
            "median": float(np.median(t)),
            "min": float(np.min(t)),
            "rounds": [round(v, 6) for v in t],
        }
        for name, t in times.items()
    }


def plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    colors = ["tab:gray" if n.startswith("larq_") else "tab:blue" for n in names]
    labels = [LABELS.get(n, n) for n in names]
    fig, (ax_acc, ax_time) = plt.subplots(1, 2, figsize=(11, 4))
    acc = [results[n]["test_accuracy"] for n in names]
    std = [results[n].get("test_accuracy_std") or 0.0 for n in names]
    bars = ax_acc.bar(labels, acc, color=colors, yerr=std, capsize=3)
    ax_acc.bar_label(bars, fmt="%.3f", fontsize=8, padding=6)
    low = min(acc)
    ax_acc.set_ylim(max(0.0, low - 0.1), min(1.0, max(acc) + 0.03))
    ax_acc.set_ylabel("test accuracy (hard, BN re-est.; mean, std over seeds)")
    ms = [1e3 * results[n]["seconds_per_step"] for n in names]
    bars = ax_time.bar(labels, ms, color=colors)
    ax_time.bar_label(bars, fmt="%.1f", fontsize=8)
    ax_time.set_ylabel("ms per training step (median)")
    for ax in (ax_acc, ax_time):
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("binary_cnn on Fashion-MNIST: larq 0.14 (gray) vs tfquant (blue)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--subset", type=int, default=20000, help="training images (0: all)")
    parser.add_argument("--test-subset", type=int, default=0, help="test images (0: all)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--seeds",
        default="0,1,2",
        help="comma-separated seeds; each trains every method from its own initial weights",
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--adam-learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--md-learning-rate", type=float, default=None, help="default: MirrorDescent's own"
    )
    parser.add_argument(
        "--md-beta-max", type=float, default=None, help="default: MirrorDescent's own"
    )
    parser.add_argument("--bop-threshold", type=float, default=1e-6)
    parser.add_argument("--bop-gamma", type=float, default=1e-3)
    parser.add_argument("--bn-batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10, help="step-timing rounds")
    parser.add_argument("--steps", type=int, default=5, help="train steps per timing round")
    parser.add_argument("--out", default="runs/compare_larq", help="directory for JSON + PNG")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1. Received: {args.epochs}")
    seeds = common.parse_seeds(parser, args.seeds)
    md_config = tfquant.MirrorDescent(**md_kwargs(args)).get_config()
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; expected some of {list(METHODS)}")

    check_larq_uses_tf_keras()
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, test = common.load_data(
        "fashion_mnist", subset=args.subset or None, test_subset=args.test_subset or None
    )
    # Step time first, on fresh copies, while nothing else of ours is running.
    keras.utils.set_random_seed(seeds[0])
    reference = zoo.binary_cnn(kernel_quantizer="ste_sign")
    x, y = train[0][: args.batch_size], train[1][: args.batch_size]
    timing_models = {m: build(m, reference, args)[0] for m in methods}
    step_times = interleaved_step_times(timing_models, x, y, args.rounds, args.steps)
    del timing_models
    print(
        "step times (s):",
        {m: round(t["median"], 5) for m, t in step_times.items()},
        file=sys.stderr,
        flush=True,
    )

    runs: dict = {m: [] for m in methods}
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        reference = zoo.binary_cnn(kernel_quantizer="ste_sign")
        for method in methods:
            model, _, callbacks = build(method, reference, args)
            run = train_and_evaluate(method, model, callbacks, train, test, args, seed)
            run["seed"] = seed
            if isinstance(model.optimizer, tfquant.MirrorDescent):
                run["final_beta"] = float(model.optimizer.beta)
            runs[method].append(run)
            print(method, run, file=sys.stderr, flush=True)

    results = {}
    for method in methods:
        results[method] = {
            **common.over_seeds("test_accuracy", [r["test_accuracy"] for r in runs[method]]),
            "seconds_per_step": step_times[method]["median"],
            "seconds_per_step_min": step_times[method]["min"],
            "seconds_per_step_rounds": step_times[method]["rounds"],
            "runs": runs[method],
        }

    out = {
        "benchmark": "compare_larq",
        "model": "tfquant.zoo.binary_cnn (larq twin: larq.layers.QuantConv2D)",
        "data": "fashion_mnist",
        "train_images": len(train[0]),
        "test_images": len(test[0]),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seeds": seeds,
        "adam_learning_rate": args.adam_learning_rate,
        "md": {
            k: float(f"{v:.6g}") for k, v in md_config.items() if k in ("learning_rate", "beta_max")
        },
        "bop": {"threshold": args.bop_threshold, "gamma": args.bop_gamma},
        "versions": {
            "larq": larq.__version__,
            "tf_keras": __import__("tf_keras").__version__,
            "tensorflow": tf.__version__,
        },
        "results": results,
    }
    if {"tfquant_ste_adam", "larq_ste_adam"} <= results.keys():
        ratio = (
            results["tfquant_ste_adam"]["seconds_per_step"]
            / results["larq_ste_adam"]["seconds_per_step"]
        )
        out["step_time_ratio_tfquant_over_larq_ste_adam"] = ratio
        # The same ratio round by round (both timed within seconds of each other): its spread
        # says how much of a difference the machine's noise can produce.
        paired = np.array(results["tfquant_ste_adam"]["seconds_per_step_rounds"]) / np.array(
            results["larq_ste_adam"]["seconds_per_step_rounds"]
        )
        out["step_time_ratio_tfquant_over_larq_ste_adam_per_round"] = {
            "median": float(np.median(paired)),
            "quartiles": [float(np.percentile(paired, 25)), float(np.percentile(paired, 75))],
        }
        out["accuracy_diff_tfquant_minus_larq_ste_adam"] = (
            results["tfquant_ste_adam"]["test_accuracy"] - results["larq_ste_adam"]["test_accuracy"]
        )
        out["target_ste_adam_step_time_at_most_1x_larq"] = bool(ratio <= 1.0)
    larq_methods = [m for m in results if m.startswith("larq_")]
    if larq_methods:
        best = max(larq_methods, key=lambda m: results[m]["test_accuracy"])
        out["larq_best"] = {"method": best, "test_accuracy": results[best]["test_accuracy"]}
        for m in results:
            if m.startswith("tfquant_"):
                out[f"step_time_ratio_{m}_over_larq_ste_adam"] = (
                    results[m]["seconds_per_step"] / results["larq_ste_adam"]["seconds_per_step"]
                    if "larq_ste_adam" in results
                    else None
                )
        if "tfquant_md_tanh_s" in results:
            md = np.array(results["tfquant_md_tanh_s"]["test_accuracy_per_seed"])
            larq_best = np.array(results[best]["test_accuracy_per_seed"])
            gain = common.paired_gain(md, larq_best)
            out["accuracy_gain_md_tanh_s_over_larq_best"] = gain
            out["target_md_tanh_s_accuracy_above_larq_best"] = bool(gain["mean"] > 0)
            # Above by more than the seeds' noise: the whole 95% interval is above 0.
            out["target_md_tanh_s_accuracy_above_larq_best_confirmed"] = bool(
                gain["ci95"] is not None and gain["ci95"][0] > 0
            )
    out["machine"] = common.machine()
    common.dump(out, str(out_dir / "compare_larq.json"))
    plot(results, out_dir / "compare_larq.png")
    print(
        f"wrote {out_dir / 'compare_larq.json'} and {out_dir / 'compare_larq.png'}", file=sys.stderr
    )
    return out


if __name__ == "__main__":
    main()
