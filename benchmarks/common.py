"""Shared pieces of the benchmark scripts: data, the binary-weight CNN, train + evaluate.

Keras 3 (``import keras``, TensorFlow backend), as tfquant; ``compare_larq.py`` adds larq's
tf-keras models beside it.

Every training benchmark builds the same network with :func:`binary_weight_cnn` and runs
:func:`fit_and_evaluate`, so methods are compared on equal terms (same data, epochs, seed).
"""

from __future__ import annotations

import json
import platform
import time

import keras
import numpy as np
import tensorflow as tf

import tfquant
from tfquant import datasets


def load_data(
    name: str = "fashion_mnist", subset: int | None = None, test_subset: int | None = None
):
    """``((x_train, y_train), (x_test, y_test))``, optionally the first ``subset`` samples."""
    (xtr, ytr), (xte, yte) = datasets.load(name)
    if subset:
        xtr, ytr = xtr[:subset], ytr[:subset]
    if test_subset:
        xte, yte = xte[:test_subset], yte[:test_subset]
    return (xtr, ytr), (xte, yte)


def binary_weight_cnn(
    kernel_quantizer="ste_sign",
    input_shape=(28, 28, 1),
    classes: int = 10,
    widths=(32, 64, 128),
    seed: int = 0,
) -> keras.Model:
    """A CNN whose every conv and dense kernel is quantized; activations stay float ReLU.

    The setting of the mirror-descent paper (weights only, all layers including the first
    and last). ``kernel_quantizer`` may be a string, a config dict or a callable returning a
    fresh quantizer per layer (for quantizers holding per-layer state).
    """
    keras.utils.set_random_seed(seed)

    def kq():
        return kernel_quantizer() if callable(kernel_quantizer) else kernel_quantizer

    x = inputs = keras.Input(input_shape)
    for i, width in enumerate(widths):
        x = tfquant.layers.QuantConv2D(
            width, 3, padding="same", kernel_quantizer=kq(), use_bias=False, name=f"conv{i}"
        )(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(2)(x) if i < len(widths) - 1 else x
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = tfquant.layers.QuantDense(classes, kernel_quantizer=kq(), use_bias=False, name="dense")(x)
    x = keras.layers.BatchNormalization(name="bn_out")(x)
    outputs = keras.layers.Softmax()(x)
    return keras.Model(inputs, outputs, name="binary_weight_cnn")


class StepTimes:
    """Wall time of each training batch; the first ``skip`` (tracing, warm-up) are dropped.

    The callback methods without a Keras base class: :class:`StepTimer` is the Keras 3
    callback, and a tf-keras one is ``class T(StepTimes, tf_keras.callbacks.Callback)`` (a
    Keras 3 callback cannot be given to a tf-keras ``fit``, nor the other way round)."""

    def __init__(self, skip: int = 5):
        super().__init__()
        self.skip = skip
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)

    @property
    def seconds_per_step(self) -> float:
        times = self.times[self.skip :] or self.times
        return float(np.median(times))


class StepTimer(StepTimes, keras.callbacks.Callback):
    """:class:`StepTimes` as a Keras 3 callback."""


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=512, verbose=0), -1) == y))


def fit_and_evaluate(
    model: keras.Model,
    optimizer,
    train,
    test,
    *,
    epochs: int,
    batch_size: int = 128,
    callbacks=(),
    bn_batches: int = 20,
    verbose: int = 0,
) -> dict:
    """Train, then report test accuracy before and after ``tfquant.finalize`` (hard weights,
    BatchNorm re-estimated on ``bn_batches`` training batches) and seconds per step."""
    timer = StepTimer()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(
        train[0],
        train[1],
        epochs=epochs,
        batch_size=batch_size,
        callbacks=[timer, *callbacks],
        verbose=verbose,
        shuffle=True,
    )
    train_seconds = time.perf_counter() - start
    soft = accuracy(model, *test)
    tfquant.finalize(model, train[0][: bn_batches * batch_size], batch_size=batch_size)
    hard = accuracy(model, *test)
    return {
        "test_accuracy_hard": hard,
        "test_accuracy_before_finalize": soft,
        "train_accuracy_last_epoch": float(history.history["accuracy"][-1]),
        "seconds_per_step": timer.seconds_per_step,
        "train_seconds": train_seconds,
        "steps": len(timer.times),
    }


def over_seeds(key: str, values) -> dict:
    """``{key: mean, key_std: sample std (None for one seed), key_per_seed: values}``.

    Methods are compared on the mean: one seed's difference between them is mostly noise."""
    values = [float(v) for v in values]
    return {
        key: float(np.mean(values)),
        f"{key}_std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
        f"{key}_per_seed": values,
    }


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (normal beyond).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def paired_gain(a, b) -> dict:
    """How much method ``a`` beats method ``b`` over the same seeds (same initial weights and
    data order per seed): the mean of the per-seed differences ``a - b``, its 95% confidence
    interval (Student's t; ``None`` for one seed), and on how many seeds ``a`` was ahead.

    Pairing by seed removes the variation the seed causes in both methods alike. A gain
    whose interval lies above 0 is one the seed noise cannot explain; one whose interval
    straddles 0 is a tie at this number of seeds."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"Expected two equal-length, non-empty lists. Received: {a.tolist()}, {b.tolist()}"
        )
    diff = a - b
    n, mean = diff.size, float(diff.mean())
    ci = None
    if n > 1:
        half = (_T975[n - 2] if n - 1 <= len(_T975) else 1.96) * diff.std(ddof=1) / np.sqrt(n)
        ci = [mean - float(half), mean + float(half)]
    return {
        "mean": mean,
        "ci95": ci,
        "per_seed": [float(d) for d in diff],
        "ahead_on_seeds": int((diff > 0).sum()),
        "seeds": n,
    }


def step_time_ratio(a_rounds, b_rounds) -> dict:
    """Step time of ``a`` over ``b``, from their per-round times of interleaved rounds: the
    ratio of the medians over rounds, and the median and quartiles of the round-by-round
    ratio (both timed within seconds of each other: the spread is the machine's noise)."""
    a, b = np.asarray(a_rounds, dtype=float), np.asarray(b_rounds, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"Expected two equal-length, non-empty lists. Received: {a.tolist()}, {b.tolist()}"
        )
    paired = a / b
    return {
        "ratio_of_medians": float(np.median(a) / np.median(b)),
        "per_round_median": float(np.median(paired)),
        "per_round_quartiles": [float(np.percentile(paired, 25)), float(np.percentile(paired, 75))],
    }


def to_points(gain: dict) -> dict:
    """A :func:`paired_gain` of accuracy fractions, in accuracy points (x100)."""
    ci = gain["ci95"]
    return {
        "mean": 100 * gain["mean"],
        "ci95": None if ci is None else [100 * ci[0], 100 * ci[1]],
        "per_seed": [100 * d for d in gain["per_seed"]],
        "ahead_on_seeds": gain["ahead_on_seeds"],
        "seeds": gain["seeds"],
    }


def _measured(gain: dict, target: str) -> dict:
    return {
        "target": target,
        "measured": {"mean_points": gain["mean"], "ci95_points": gain["ci95"]},
    }


def verdict_within(gain: dict, target: str, bound: float = -1.0) -> dict:
    """A gain in points (:func:`to_points`) against "within ``-bound`` points": met when the
    whole 95% interval is above ``bound``, missed when below, else inconclusive."""
    out = _measured(gain, target)
    if gain["ci95"] is None:
        out["verdict"] = "met" if gain["mean"] > bound else "missed"
        out["note"] = "one seed, no interval: judged on the mean"
    elif gain["ci95"][0] > bound:
        out["verdict"] = "met"
    elif gain["ci95"][1] < bound:
        out["verdict"] = "missed"
    else:
        out["verdict"] = f"inconclusive (interval straddles {bound:.1f})"
    return out


def verdict_ahead(gain: dict, target: str) -> dict:
    """A gain in points against "at least as good": met when the interval is above 0,
    missed when below, else a tie."""
    out = _measured(gain, target)
    low, high = gain["ci95"] or (gain["mean"], gain["mean"])
    out["verdict"] = "met" if low > 0 else "missed" if high < 0 else "tie"
    if gain["ci95"] is None:
        out["note"] = "one seed, no interval: judged on the mean"
    return out


def convert_and_compare(model, float_model, train, test, layer_names) -> dict:
    """Convert a finalized model (``tfquant.converters.convert_with_report``, calibrated on
    64 training images) and run the flatbuffer on the whole test set beside Keras: what
    each layer became, whether all of ``layer_names`` became exact int8, ops, sizes, TFLite
    and Keras test accuracy, their argmax agreement, and the float model's file size."""
    from tfquant import converters

    xtr, xte = train[0], test[0]
    start = time.perf_counter()
    flatbuffer, report = converters.convert_with_report(
        model, calibration_data=xtr[:64], parity_inputs=xte[:64]
    )
    seconds = time.perf_counter() - start
    rep = report.as_dict()
    layers = {
        layer["name"]: {k: layer.get(k) for k in ("declared", "became", "exact", "ops", "reason")}
        for layer in rep["layers"]
    }
    tflite = np.concatenate(
        [converters.flatbuffer.run(flatbuffer, xte[i : i + 512])[0] for i in range(0, len(xte), 512)]
    )
    keras_out = model.predict(xte, batch_size=512, verbose=0)
    out = {
        "convert_seconds": seconds,
        "layers": layers,
        "layers_int8": all(layers.get(n, {}).get("became") == "int8" for n in layer_names),
        "layers_exact": all(layers.get(n, {}).get("exact") is True for n in layer_names),
        "ops": converters.flatbuffer.op_counts(flatbuffer),
        "sizes": rep["sizes"],
        "parity_64": rep["parity"],
        "notes": rep["notes"],
        "tflite_bytes": len(flatbuffer),
        "tflite_test_accuracy": float(np.mean(np.argmax(tflite, -1) == test[1])),
        "keras_test_accuracy": float(np.mean(np.argmax(keras_out, -1) == test[1])),
        "max_abs_prob_diff": float(np.max(np.abs(tflite - keras_out))),
        "agreement": float(np.mean(np.argmax(tflite, -1) == np.argmax(keras_out, -1))),
        "test_images": len(xte),
        "tflite_bytes_float": None,
    }
    if float_model is not None:
        float_fb, _ = converters.convert_with_report(
            float_model, calibration_data=xtr[:64], verify=False
        )
        out["tflite_bytes_float"] = len(float_fb)
    return out


def agreement_target(compared: dict, target: float) -> dict:
    """The target "TFLite's argmax agrees with Keras on >= target of the test set"."""
    return {
        "target": f"TFLite argmax agrees with Keras on >= {target} of the test set",
        "measured": compared["agreement"],
        "test_images": compared["test_images"],
        "verdict": "met" if compared["agreement"] >= target else "missed",
    }


def parse_seeds(parser, text: str) -> list[int]:
    """The integers of a comma-separated ``--seeds`` value; a usage error (exit 2) otherwise."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers. Received: {text!r}")
    if not seeds:
        parser.error(f"--seeds needs at least one seed. Received: {text!r}")
    return seeds


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu_count": __import__("os").cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def dump(result: dict, path: str | None = None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")
