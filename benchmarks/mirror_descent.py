"""Mirror descent vs STE + Adam on Fashion-MNIST: the same binary-weight CNN, same epochs.

Trains :func:`benchmarks.common.binary_weight_cnn` (every conv and dense kernel binary,
activations float, as in the paper) with

* ``md_tanh_s``: ``tfquant.MirrorDescent(mirror_map="tanh")`` (MD-tanh-S) + ``BetaAnnealing``;
* ``md_softmax_s``: ``tfquant.MirrorDescent(mirror_map="softmax")`` (MD-softmax-S) + ``BetaAnnealing``;
* ``ste_adam``: ``SteSign`` kernels and Keras Adam (BinaryConnect style),

then ``tfquant.finalize`` (hard +-1 weights, BatchNorm re-estimated) and prints JSON: the
hard-quantized test accuracy and seconds per step of each, and the step-time ratio
MirrorDescent / Adam (target: at most 1.15). Seconds per step are timed after training in
interleaved rounds (``seconds_per_step``; the median inside ``fit`` is kept as
``seconds_per_step_fit``), so other processes' load on a shared machine affects every method
alike; the median and quartiles of the round-by-round ratio give the noise of the ratio.
Everything is Keras 3 (``import keras``, TensorFlow backend).

Every method trains once per seed of ``--seeds`` (default 0, 1, 2: initial weights and
shuffling); accuracies are means over seeds, with the per-seed values and their standard
deviation (1-2 points between seeds here, more than most differences between methods).

Usage (about 2 minutes per seed on 2 CPU cores)::

    .venv/bin/python benchmarks/mirror_descent.py --subset 20000 --epochs 3
    .venv/bin/python benchmarks/mirror_descent.py --subset 512 --test-subset 512 \
        --epochs 1 --seeds 0                                  # a smoke run (~30 s)

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
from tfquant.callbacks import BetaAnnealing  # noqa: E402


def methods(md_learning_rate: float, adam_learning_rate: float) -> dict:
    """name -> (optimizer factory, callbacks factory)."""
    return {
        "md_tanh_s": (
            lambda: tfquant.MirrorDescent(learning_rate=md_learning_rate, mirror_map="tanh"),
            lambda: [BetaAnnealing()],
        ),
        "md_softmax_s": (
            lambda: tfquant.MirrorDescent(learning_rate=md_learning_rate, mirror_map="softmax"),
            lambda: [BetaAnnealing()],
        ),
        "ste_adam": (lambda: keras.optimizers.Adam(adam_learning_rate), lambda: []),
        # Not run by default: MD-tanh-S forwarding sign(u) (BinaryConnect on the dual).
        "md_tanh_s_quantized_forward": (
            lambda: tfquant.MirrorDescent(learning_rate=md_learning_rate, forward="quantized"),
            lambda: [BetaAnnealing()],
        ),
    }


class SoftAccuracy(keras.callbacks.Callback):
    """At the end of training, the test accuracy of the soft (not yet hard-quantized) model
    with BatchNorm re-estimated like ``finalize`` does: the reference the hard accuracy is
    compared with. (The moving statistics lag behind a primal that anneals within a few
    hundred steps, so the accuracy before ``finalize`` understates the soft model.)"""

    def __init__(self, train_x, test, bn_batches: int = 20, batch_size: int = 128):
        super().__init__()
        self.train_x, self.test = train_x[: bn_batches * batch_size], test
        self.batch_size = batch_size
        self.accuracy = None

    def on_train_end(self, logs=None):
        tfquant.models.reestimate_batchnorm(self.model, self.train_x, batch_size=self.batch_size)
        # Not model.predict: inside fit it would replace the History that fit returns.
        x, y = self.test
        hits = 0
        for i in range(0, len(x), 512):
            hits += int(np.sum(np.argmax(self.model(x[i : i + 512]).numpy(), -1) == y[i : i + 512]))
        self.accuracy = hits / len(x)


TARGET_MD_STEP_TIME_RATIO = 1.15  # MirrorDescent's step time over Adam's, at most


def interleaved_step_times(models: dict, x, y, rounds: int = 12, steps: int = 5) -> dict:
    """Seconds per training step of each model in each of ``rounds`` interleaved rounds of
    ``steps`` ``train_on_batch`` calls, so load from other processes hits every method alike
    (the per-fit medians are only comparable on an idle machine)."""
    times: dict = {name: [] for name in models}
    for model in models.values():  # warm up (the train function is already traced)
        model.train_on_batch(x, y)
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(x, y)
            times[name].append((time.perf_counter() - start) / steps)
    return times


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subset", type=int, default=20000, help="training images (0: all)")
    parser.add_argument("--test-subset", type=int, default=0, help="test images (0: all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--md-learning-rate", type=float, default=None, help="default: MirrorDescent's own default"
    )
    parser.add_argument("--adam-learning-rate", type=float, default=1e-3)
    parser.add_argument("--methods", default="md_tanh_s,md_softmax_s,ste_adam")
    parser.add_argument(
        "--seeds", default="0,1,2", help="comma-separated seeds (initial weights, shuffling)"
    )
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    md_lr = args.md_learning_rate
    if md_lr is None:
        md_lr = float(f"{tfquant.MirrorDescent().get_config()['learning_rate']:.6g}")
    train, test = common.load_data(
        "fashion_mnist", subset=args.subset or None, test_subset=args.test_subset or None
    )
    table = methods(md_lr, args.adam_learning_rate)
    seeds = common.parse_seeds(parser, args.seeds)
    results, models = {}, {}
    for name in args.methods.split(","):
        make_optimizer, make_callbacks = table[name]
        runs = []
        for seed in seeds:
            model = common.binary_weight_cnn("ste_sign", seed=seed)
            soft = SoftAccuracy(train[0], test, batch_size=args.batch_size)
            run = common.fit_and_evaluate(
                model,
                make_optimizer(),
                train,
                test,
                epochs=args.epochs,
                batch_size=args.batch_size,
                callbacks=[*make_callbacks(), soft],
            )
            run["seed"] = seed
            run["test_accuracy_soft_bn_reestimated"] = soft.accuracy
            if isinstance(model.optimizer, tfquant.MirrorDescent):
                run["final_beta"] = model.optimizer.beta
            print(name, run, file=sys.stderr, flush=True)
            runs.append(run)
        models[name] = model
        soft_acc = [r["test_accuracy_soft_bn_reestimated"] for r in runs]
        results[name] = {
            **common.over_seeds("test_accuracy_hard", [r["test_accuracy_hard"] for r in runs]),
            "test_accuracy_soft_bn_reestimated": float(np.mean(soft_acc)),
            "seconds_per_step": float(np.median([r["seconds_per_step"] for r in runs])),
            "runs": runs,
        }

    # Step time after training: interleaved rounds on one training batch.
    x, y = train[0][: args.batch_size], train[1][: args.batch_size]
    for name, rounds in interleaved_step_times(models, x, y).items():
        results[name]["seconds_per_step_fit"] = results[name].pop("seconds_per_step")
        results[name]["seconds_per_step"] = float(np.median(rounds))
        results[name]["seconds_per_step_rounds"] = [float(t) for t in rounds]

    out = {
        "benchmark": "mirror_descent",
        "data": "fashion_mnist",
        "train_images": len(train[0]),
        "test_images": len(test[0]),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seeds": seeds,
        "md_learning_rate": md_lr,
        "adam_learning_rate": args.adam_learning_rate,
        "results": results,
        "machine": common.machine(),
    }
    # Keras 3 compiles with jit_compile="auto": XLA only with an accelerator.
    out["jit_compile"] = {name: bool(m.jit_compile) for name, m in models.items()}
    if "ste_adam" in results:
        adam = results["ste_adam"]
        for name in results:
            if name.startswith("md_"):
                ratio = results[name]["seconds_per_step"] / adam["seconds_per_step"]
                out[f"step_time_ratio_{name}_over_adam"] = ratio
                per_round = common.step_time_ratio(
                    results[name]["seconds_per_step_rounds"], adam["seconds_per_step_rounds"]
                )
                out[f"step_time_ratio_{name}_over_adam_per_round"] = {
                    "median": per_round["per_round_median"],
                    "quartiles": per_round["per_round_quartiles"],
                }
                out[f"target_{name}_step_time_at_most_1.15x_adam"] = bool(
                    ratio <= TARGET_MD_STEP_TIME_RATIO
                )
                gain = common.paired_gain(
                    results[name]["test_accuracy_hard_per_seed"],
                    adam["test_accuracy_hard_per_seed"],
                )
                out[f"accuracy_gain_{name}_over_adam"] = gain
                # "At least as accurate" on the mean over seeds; the gain's 95% interval says
                # whether the difference is larger than the seeds' noise.
                out[f"target_{name}_at_least_as_accurate_as_adam"] = bool(gain["mean"] >= 0)
    common.dump(out, args.out)
    return out


if __name__ == "__main__":
    main()
