"""tfquant (Keras 3) vs larq 0.14 (tf-keras) on Fashion-MNIST: the same binary CNN, same data.

The architecture is ``tfquant.zoo.binary_cnn`` (float stem conv 32 + BatchNorm + max pool;
per stage two binary 3x3 convolutions, sign inputs and sign kernels, ``padding="same"``,
``pad_values=1.0``, no bias, each followed by BatchNorm; max pool between stages; global
average pooling; Dense softmax). Its larq twin has the same layers and names, built from
tf-keras layers with ``larq.layers.QuantConv2D`` for the binary convolutions. Every model
starts from the same weights: one reference model is built from the seed and its weights
are copied into each, matched by layer and variable name (the signs of its kernels for Bop,
which trains binary weights directly). Methods:

* ``larq_ste_adam``: larq ``QuantConv2D(input_quantizer="ste_sign",
  kernel_quantizer="ste_sign", kernel_constraint="weight_clip")`` and tf-keras Adam;
* ``larq_bop``: larq ``QuantConv2D(kernel_quantizer=NoOp(precision=1))`` trained by
  ``larq.optimizers.CaseOptimizer``: ``Bop`` for the binary kernels (threshold 1e-6,
  gamma 1e-3: the values of larq's optimizer docs) and tf-keras' legacy Adam for the rest;
* ``tfquant_ste_adam``: ``tfquant.layers.QuantConv2D`` with ``"ste_sign"`` kernels and Keras
  3 Adam (the same method as ``larq_ste_adam``);
* ``tfquant_md_tanh_s``: ``tfquant.MirrorDescent()`` (MD-tanh-S, its defaults) with
  ``tfquant.callbacks.BetaAnnealing``;
* ``tfquant_binary_relax``: ``"scaled_sign"`` kernels, Adam, and
  ``tfquant.methods.binary_relax.apply`` (lambda from 1 to 100 over ``epochs - 1`` epochs,
  then exact quantization with the learning rate x0.1 in the last epoch, as ``tfquant train``).

Every seed in ``--seeds`` (default 0, 1, 2) builds its own reference weights and trains
every method from them, each ``fit`` on the same numpy arrays with shuffling seeded by the
seed (the two Kerases need not draw the same order); ``test_accuracy`` is the mean
over seeds, with the per-seed values and their standard deviation next to it. One seed's
difference between these methods is mostly noise (measured: 1-2 points between seeds of one
method), so the targets are judged on the means.

Test accuracy is that of the hard binary network with BatchNorm statistics re-estimated on
20 training batches, for every method: ``tfquant.finalize`` for tfquant models (hard
kernels, then re-estimation), :func:`reestimate_batchnorm_legacy` (the same cumulative
average, for tf-keras BatchNorm) for larq models, whose forward pass is already binary (the
accuracy before re-estimation is kept too).

Step time is timed separately from training, on fresh copies of the models (same layers,
optimizers and quantizers; step cost does not depend on the weight values), in ``--rounds``
interleaved rounds (the order reversed every other round) so load from other processes hits
every model alike. Each round times every model twice: ``--steps`` ``train_on_batch`` calls
on one batch (``seconds_per_step``, the mean of the calls, median over rounds) and one
``fit`` over ``--steps`` batches of the numpy training arrays (``seconds_per_step_fit``, the
median batch time from ``on_train_batch_begin`` to ``on_train_batch_end``, median over
rounds: Keras' own data pipeline, numpy arrays in both Kerases). The two modes weigh the
Kerases' per-call overheads differently (tf-keras' ``train_on_batch`` builds a one-batch
``tf.data`` dataset at every call, Keras 3's does not), so both are reported, with a target
flag each (``..._fit`` for ``fit``); ``fit`` is how the models train. The medians inside the
training runs are kept as each run's ``seconds_per_step_fit``. Ratios of two models are
reported as the ratio of their medians and as the median and quartiles of the round-by-round
ratio (both timed within seconds of each other), whose spread is the machine's noise:

* ``tfquant_ste_adam / larq_ste_adam``: Keras 3 tfquant over tf-keras larq, the same method
  (target: at most 1);
* ``tfquant_md_tanh_s / tfquant_ste_adam``: MirrorDescent over Adam (target: at most 1.15).

If Keras 3 is slower, ``step_time_breakdown`` says where: models timed but not trained
(``--timing-variants``), each against its baseline,

* ``tfquant_ste_adam_jit``, ``larq_ste_adam_jit``: compiled with ``jit_compile=True`` (XLA)
  instead of the default. Keras 3's default ``"auto"`` resolves to XLA only with an
  accelerator (off on CPU); tf-keras' default is off. What each model's ``jit_compile`` (and
  its optimizer's) resolved to is recorded under ``jit_compile``;
* ``tfquant_ste_adam_unsynced_bn``: the zoo's ``BatchNormalization(synchronized=True)`` set
  to ``synchronized=False`` (on one device the same numbers, other ops);
* ``larq_ste_adam_unfused_bn``: tf-keras ``BatchNormalization(fused=False)`` (Keras 3 has
  no fused BatchNorm kernel);
* ``keras3_float_adam``, ``tf_keras_float_adam``: the same network with float ``Conv2D``
  (no quantizer) in each Keras: the frameworks' own overhead, without tfquant or larq.

Writes ``compare_larq.json`` and ``compare_larq.png`` (test accuracy and step time bars) to
``--out``. Usage (about 7 minutes per seed on 2 CPU cores)::

    .venv/bin/python benchmarks/compare_larq.py                 # seeds 0,1,2
    .venv/bin/python benchmarks/compare_larq.py --seeds 0       # one seed, a quick look
    .venv/bin/python benchmarks/compare_larq.py --subset 512 --test-subset 512 \\
        --epochs 1 --seeds 0 --rounds 2 --steps 2              # a smoke run (~1 minute)

Two Kerases in one process: larq 0.14 builds on ``tf.keras`` and needs tf-keras (Keras 2).
The script sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported, so ``tf.keras`` is
tf-keras (larq's layers, the twin's layers and optimizers, its callbacks), while
``import keras`` stays Keras 3 whatever that variable says (tfquant, its models and
optimizers). It checks both: larq's layers must be tf-keras layers and tfquant's models
Keras 3 models. Keras 3 callbacks cannot be given to a tf-keras ``fit``, hence a step timer
for each. Bop and ``CaseOptimizer`` are legacy Keras optimizers and need
``tf.keras.optimizers.legacy.Adam`` as the optimizer of the float variables.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Before TensorFlow is imported: tf.keras, on which larq builds, is then tf-keras (Keras 2).
# `import keras` is Keras 3 whatever this says; tfquant uses only that.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402
import keras  # noqa: E402
import larq  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfquant  # noqa: E402
from tfquant import zoo  # noqa: E402
from tfquant.callbacks import BetaAnnealing  # noqa: E402
from tfquant.methods import binary_relax  # noqa: E402

tf_keras = tf.keras  # the legacy Keras 2 (tf_keras package): larq's layers and optimizers

METHODS = (
    "larq_ste_adam",
    "larq_bop",
    "tfquant_ste_adam",
    "tfquant_md_tanh_s",
    "tfquant_binary_relax",
)
# Timed only, to locate a step-time difference between the Kerases (see the docstring).
TIMING_VARIANTS = (
    "tfquant_ste_adam_jit",
    "larq_ste_adam_jit",
    "tfquant_ste_adam_unsynced_bn",
    "larq_ste_adam_unfused_bn",
    "keras3_float_adam",
    "tf_keras_float_adam",
)
# (numerator, denominator) of the step-time ratios reported; the first two are the targets.
RATIOS = (
    ("tfquant_ste_adam", "larq_ste_adam"),
    ("tfquant_md_tanh_s", "tfquant_ste_adam"),
    ("tfquant_binary_relax", "tfquant_ste_adam"),
    ("larq_bop", "larq_ste_adam"),
    ("tfquant_ste_adam_jit", "tfquant_ste_adam"),
    ("larq_ste_adam_jit", "larq_ste_adam"),
    ("tfquant_ste_adam_jit", "larq_ste_adam"),
    ("tfquant_ste_adam_unsynced_bn", "tfquant_ste_adam"),
    ("tfquant_ste_adam_unsynced_bn", "larq_ste_adam"),
    ("larq_ste_adam_unfused_bn", "larq_ste_adam"),
    ("tfquant_ste_adam_unsynced_bn", "larq_ste_adam_unfused_bn"),
    ("keras3_float_adam", "tf_keras_float_adam"),
    ("tfquant_ste_adam", "keras3_float_adam"),
    ("larq_ste_adam", "tf_keras_float_adam"),
)
TARGET_STE_ADAM_RATIO = 1.0  # tfquant (Keras 3) STE + Adam over larq (tf-keras) STE + Adam
TARGET_MD_RATIO = 1.15  # tfquant MD-tanh-S over tfquant STE + Adam
LABELS = {
    "larq_ste_adam": "larq\nSTE+Adam",
    "larq_bop": "larq\nBop",
    "tfquant_ste_adam": "tfquant\nSTE+Adam",
    "tfquant_md_tanh_s": "tfquant\nMD-tanh-S",
    "tfquant_binary_relax": "tfquant\nBinaryRelax",
}
_COPIED = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")


class LegacyStepTimer(common.StepTimes, tf_keras.callbacks.Callback):
    """:class:`common.StepTimes` as a tf-keras callback (for the larq models' ``fit``)."""


def is_tf_keras(model) -> bool:
    return isinstance(model, tf_keras.Model)


def step_timer(model, skip: int = 5):
    return LegacyStepTimer(skip) if is_tf_keras(model) else common.StepTimer(skip)


def check_larq_uses_tf_keras() -> None:
    """larq must build tf-keras layers (Keras 2), not Keras 3 ones."""
    mro = larq.layers.QuantConv2D.__mro__
    if tf_keras.layers.Layer not in mro or keras.layers.Layer in mro:
        raise ImportError(
            "larq's layers are not tf-keras layers: TensorFlow was imported before "
            "TF_USE_LEGACY_KERAS=1 was set. Run this script directly (it sets the variable "
            "first) or export TF_USE_LEGACY_KERAS=1."
        )
    if tf_keras.Model is keras.Model:
        raise ImportError("tf.keras is Keras 3 here: larq 0.14 needs tf-keras.")


def check_keras(name: str, model) -> None:
    """The larq twins (and ``tf_keras_*``) are tf-keras models, tfquant's Keras 3 ones."""
    legacy = name.startswith(("larq_", "tf_keras_"))
    ok = is_tf_keras(model) if legacy else isinstance(model, keras.Model) and not is_tf_keras(model)
    if not ok:
        raise TypeError(
            f"Expected {name!r} to be a {'tf-keras' if legacy else 'Keras 3'} model. "
            f"Received: {type(model).__module__}.{type(model).__name__}"
        )


# ------------------------------------------------------------------------------ models
def twin_cnn(
    k,
    conv=None,
    input_shape=(28, 28, 1),
    classes: int = 10,
    widths=(64, 128),
    bn_kwargs=None,
    name: str = "twin_cnn",
):
    """``tfquant.zoo.binary_cnn``'s layers and names in the Keras module ``k`` (``keras`` or
    ``tf_keras``), with ``conv(width, name)`` for the binary convolutions (default: float
    ``Conv2D``, no quantizer) and ``BatchNormalization(**bn_kwargs)``."""
    bn_kwargs = bn_kwargs or {}
    if conv is None:

        def conv(width, name):
            return k.layers.Conv2D(width, 3, padding="same", use_bias=False, name=name)

    inputs = k.Input(input_shape)
    x = k.layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = k.layers.BatchNormalization(name="stem_bn", **bn_kwargs)(x)
    x = k.layers.MaxPooling2D(2, name="stem_pool")(x)
    for s, width in enumerate(widths):
        for b in range(2):
            x = conv(width, f"s{s}_conv{b}")(x)
            x = k.layers.BatchNormalization(name=f"s{s}_bn{b}", **bn_kwargs)(x)
        if s < len(widths) - 1:
            x = k.layers.MaxPooling2D(2, name=f"s{s}_pool")(x)
    x = k.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = k.layers.Dense(classes, activation="softmax", name="classifier")(x)
    return k.Model(inputs, outputs, name=name)


def larq_binary_cnn(bop: bool = False, bn_kwargs=None):
    """The tf-keras twin with larq's ``QuantConv2D`` for the binary convolutions. ``bop``:
    kernels marked binary for Bop (``NoOp(precision=1)``, used as they are, no constraint)
    instead of ``ste_sign`` latent kernels clipped to [-1, 1]."""
    if bop:
        kernel = {"kernel_quantizer": larq.quantizers.NoOp(precision=1)}
    else:
        kernel = {"kernel_quantizer": "ste_sign", "kernel_constraint": "weight_clip"}

    def conv(width, name):
        return larq.layers.QuantConv2D(
            width,
            3,
            padding="same",
            pad_values=1.0,
            input_quantizer="ste_sign",
            use_bias=False,
            name=name,
            **kernel,
        )

    return twin_cnn(tf_keras, conv, bn_kwargs=bn_kwargs, name="larq_binary_cnn")


def _short_name(variable) -> str:
    # tf-keras: "s0_conv0/kernel:0"; Keras 3: "kernel" (the layer is in variable.path).
    return variable.name.split("/")[-1].split(":")[0]


def copy_weights(source, target, sign_binary_kernels: bool = False) -> int:
    """Copy kernels, biases and BatchNorm parameters layer by layer (matched by layer name
    and variable name), from a Keras 3 or tf-keras model into either.

    ``sign_binary_kernels``: larq's binary convolutions get ``sign(kernel)`` (+1 at 0), the
    binary weights the other models' first forward pass uses."""
    copied = 0
    for layer in target.layers:
        for variable in layer.weights:
            short = _short_name(variable)
            if short not in _COPIED:
                continue
            (value,) = [
                np.asarray(v.numpy())
                for v in source.get_layer(layer.name).weights
                if _short_name(v) == short
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


def reestimate_batchnorm_legacy(model, x: np.ndarray, batch_size: int = 128) -> int:
    """``tfquant.models.reestimate_batchnorm`` for a tf-keras model (which tfquant refuses):
    BatchNorm moving statistics become the average over the batches of ``x``."""
    bns = [m for m in model.submodules if isinstance(m, tf_keras.layers.BatchNormalization)]
    saved = [bn.momentum for bn in bns]
    used = 0
    try:
        for i, start in enumerate(range(0, len(x), batch_size)):
            for bn in bns:
                bn.momentum = i / (i + 1.0)  # cumulative mean: m_i = (i m_{i-1} + s_i)/(i+1)
            model(x[start : start + batch_size], training=True)
            used = i + 1
    finally:
        for bn, m in zip(bns, saved):
            bn.momentum = m
    return used


def md_kwargs(args) -> dict:
    """MirrorDescent's arguments given on the command line (its defaults otherwise)."""
    given = {"learning_rate": args.md_learning_rate, "beta_max": args.md_beta_max}
    return {k: v for k, v in given.items() if v is not None}


def build(method: str, reference, args) -> tuple:
    """(compiled model with the reference's weights, callbacks) of ``method`` (one of
    ``METHODS`` or ``TIMING_VARIANTS``)."""
    callbacks: list = []
    jit_compile = "auto"  # Keras 3's default; tf-keras' is None
    if method in ("larq_ste_adam", "larq_ste_adam_jit", "larq_ste_adam_unfused_bn"):
        model = larq_binary_cnn(
            bn_kwargs={"fused": False} if method == "larq_ste_adam_unfused_bn" else None
        )
        optimizer = tf_keras.optimizers.Adam(args.adam_learning_rate)
    elif method == "larq_bop":
        model = larq_binary_cnn(bop=True)
        optimizer = larq.optimizers.CaseOptimizer(
            (
                larq.optimizers.Bop.is_binary_variable,
                larq.optimizers.Bop(threshold=args.bop_threshold, gamma=args.bop_gamma),
            ),
            default_optimizer=tf_keras.optimizers.legacy.Adam(args.adam_learning_rate),
        )
    elif method == "tf_keras_float_adam":
        model = twin_cnn(tf_keras, name="tf_keras_float_cnn")
        optimizer = tf_keras.optimizers.Adam(args.adam_learning_rate)
    elif method == "keras3_float_adam":
        model = twin_cnn(keras, name="keras3_float_cnn")
        optimizer = keras.optimizers.Adam(args.adam_learning_rate)
    elif method in ("tfquant_ste_adam", "tfquant_ste_adam_jit", "tfquant_ste_adam_unsynced_bn"):
        model = zoo.binary_cnn(kernel_quantizer="ste_sign")
        if method == "tfquant_ste_adam_unsynced_bn":
            for layer in model.layers:  # read when the train function is traced
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = False
        optimizer = keras.optimizers.Adam(args.adam_learning_rate)
    elif method == "tfquant_md_tanh_s":
        model = zoo.binary_cnn(kernel_quantizer="ste_sign")
        optimizer = tfquant.MirrorDescent(**md_kwargs(args))
        callbacks = [BetaAnnealing()]
    elif method == "tfquant_binary_relax":
        model = zoo.binary_cnn(kernel_quantizer="scaled_sign")
        optimizer = keras.optimizers.Adam(args.adam_learning_rate)
        relaxed = max(args.epochs - 1, 1)  # tfquant train's setting (tfquant.train)
        callbacks = binary_relax.apply(
            model,
            lambda_init=1.0,
            growth=100.0 ** (1.0 / relaxed),
            phase_two_epoch=args.epochs - 1 if args.epochs > 1 else None,
            lr_multiplier=0.1 if args.epochs > 1 else None,
            epochs=args.epochs,
        )
    else:
        raise ValueError(f"Unknown method {method!r}. Expected one of {METHODS + TIMING_VARIANTS}.")
    check_keras(method, model)
    if method.endswith("_jit"):
        jit_compile = True
    elif is_tf_keras(model):
        jit_compile = None
    copy_weights(reference, model, sign_binary_kernels=method == "larq_bop")
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model, callbacks


def jit_compile_of(model) -> dict:
    """What ``jit_compile`` resolved to: ``model``, whether the train step is XLA-compiled
    (``model_setting``: the model's ``jit_compile`` as it stands, ``None`` in tf-keras for its
    default, no XLA), and the optimizer's own setting (tf-keras' optimizers have one; ``None``
    where the optimizer has none and runs inside the model's train step, as in Keras 3)."""
    optimizer = model.optimizer
    opt_jit = getattr(optimizer, "jit_compile", None)
    return {
        "model": bool(model.jit_compile),
        "model_setting": model.jit_compile,
        "optimizer": opt_jit if isinstance(opt_jit, (bool, type(None))) else str(opt_jit),
        "optimizer_class": f"{type(optimizer).__module__}.{type(optimizer).__name__}",
    }


# ------------------------------------------------------------------------- measuring
def train_and_evaluate(method: str, model, callbacks, train, test, args, seed: int) -> dict:
    keras.utils.set_random_seed(seed)  # the same shuffling seed for every method
    tf_keras.utils.set_random_seed(seed)
    timer = step_timer(model)
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
        reestimate_batchnorm_legacy(model, bn_data, batch_size=args.batch_size)
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


def interleaved_step_times(models: dict, x, y, rounds: int, steps: int, batch_size: int) -> dict:
    """Per model and round: the mean seconds of ``steps`` ``train_on_batch`` calls on one
    batch, and the median batch time of one ``fit`` over ``steps`` batches of ``x``; the
    models take turns in every round (reversed every other round) so load from other
    processes hits all alike. Median and quartiles over rounds, and every round."""
    xb, yb = x[:batch_size], y[:batch_size]
    xf, yf = x[: steps * batch_size], y[: steps * batch_size]
    times: dict = {name: {"train_on_batch": [], "fit": []} for name in models}

    def fit_round(model) -> float:
        timer = step_timer(model, skip=0)
        model.fit(
            xf, yf, batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[timer]
        )
        return float(np.median(timer.times))

    for model in models.values():  # trace both train functions and warm up
        for _ in range(3):
            model.train_on_batch(xb, yb)
        fit_round(model)
    for r in range(rounds):
        order = list(models) if r % 2 == 0 else list(models)[::-1]
        for name in order:
            model = models[name]
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(xb, yb)
            times[name]["train_on_batch"].append((time.perf_counter() - start) / steps)
            times[name]["fit"].append(fit_round(model))
    return {
        name: {
            mode: {
                "median": float(np.median(t)),
                "quartiles": [float(np.percentile(t, 25)), float(np.percentile(t, 75))],
                "min": float(np.min(t)),
                "rounds": [float(v) for v in t],
            }
            for mode, t in modes.items()
        }
        for name, modes in times.items()
    }


def step_time_ratio(times: dict, a: str, b: str) -> dict:
    """``a`` over ``b`` in each timing mode (see :func:`common.step_time_ratio`)."""
    return {
        mode: common.step_time_ratio(times[a][mode]["rounds"], times[b][mode]["rounds"])
        for mode in ("train_on_batch", "fit")
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
    ax_time.set_ylabel("ms per training step (train_on_batch, median)")
    for ax in (ax_acc, ax_time):
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(
        "binary_cnn on Fashion-MNIST: larq 0.14 on tf-keras (gray) vs tfquant on Keras 3 (blue)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_step_times(times: dict, ratios: dict, jit: dict) -> None:
    """The step-time table and ratios, readable, on stderr."""
    head = "ms per step (median over rounds)"
    width = max(len(head), *(len(n) for n in times))
    lines = [f"{head:<{width + 2}}train_on_batch     fit  jit"]
    for name, t in times.items():
        lines.append(
            f"{name:<{width + 2}}{1e3 * t['train_on_batch']['median']:>14.2f}"
            f"{1e3 * t['fit']['median']:>8.2f}  {jit[name]['model']}"
        )
    lines.append("ratios (of medians; per-round median [quartiles]):")
    for key, r in ratios.items():
        cells = [
            f"{mode} {r[mode]['ratio_of_medians']:.3f}; {r[mode]['per_round_median']:.3f} "
            f"[{r[mode]['per_round_quartiles'][0]:.3f}, {r[mode]['per_round_quartiles'][1]:.3f}]"
            for mode in ("train_on_batch", "fit")
        ]
        lines.append(f"  {key}: " + " | ".join(cells))
    print("\n".join(lines), file=sys.stderr, flush=True)


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
    parser.add_argument(
        "--timing-variants",
        default=",".join(TIMING_VARIANTS),
        help="models timed (not trained) to locate step-time differences; '' for none",
    )
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
    if args.rounds < 1 or args.steps < 1:
        parser.error(f"--rounds and --steps must be >= 1. Received: {args.rounds}, {args.steps}")
    seeds = common.parse_seeds(parser, args.seeds)
    methods = [m for m in args.methods.split(",") if m]
    variants = [m for m in args.timing_variants.split(",") if m]
    for given, known, flag in (
        (methods, METHODS, "methods"),
        (variants, TIMING_VARIANTS, "timing-variants"),
    ):
        unknown = sorted(set(given) - set(known))
        if unknown:
            parser.error(f"unknown --{flag} {unknown}; expected some of {list(known)}")

    md_config = (
        tfquant.MirrorDescent(**md_kwargs(args)).get_config()
        if "tfquant_md_tanh_s" in methods
        else {}
    )
    check_larq_uses_tf_keras()
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, test = common.load_data(
        "fashion_mnist", subset=args.subset or None, test_subset=args.test_subset or None
    )
    if len(train[0]) < args.steps * args.batch_size:
        parser.error(f"--steps x --batch-size exceeds the {len(train[0])} training images")

    # Step time first, on fresh copies, while nothing else of ours is running.
    keras.utils.set_random_seed(seeds[0])
    reference = zoo.binary_cnn(kernel_quantizer="ste_sign")
    timing_models, timing_errors = {}, {}
    for name in methods + variants:
        try:
            timing_models[name] = build(name, reference, args)[0]
            if name in variants:  # XLA may refuse a model: report it rather than stop
                timing_models[name].train_on_batch(train[0][:8], train[1][:8])
        except Exception as error:
            if name in methods:
                raise
            timing_errors[name] = f"{type(error).__name__}: {error}"[:500]
            timing_models.pop(name, None)
            print(f"{name}: not timed ({timing_errors[name]})", file=sys.stderr, flush=True)
    jit = {name: jit_compile_of(model) for name, model in timing_models.items()}
    step_times = interleaved_step_times(
        timing_models, train[0], train[1], args.rounds, args.steps, args.batch_size
    )
    del timing_models
    ratios = {
        f"{a}/{b}": step_time_ratio(step_times, a, b)
        for a, b in RATIOS
        if a in step_times and b in step_times
    }
    print_step_times(step_times, ratios, jit)

    runs: dict = {m: [] for m in methods}
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        reference = zoo.binary_cnn(kernel_quantizer="ste_sign")
        for method in methods:
            model, callbacks = build(method, reference, args)
            run = train_and_evaluate(method, model, callbacks, train, test, args, seed)
            run["seed"] = seed
            if isinstance(model.optimizer, tfquant.MirrorDescent):
                run["final_beta"] = float(model.optimizer.beta)
            runs[method].append(run)
            print(method, run, file=sys.stderr, flush=True)

    results = {}
    for method in methods:
        t = step_times[method]
        results[method] = {
            **common.over_seeds("test_accuracy", [r["test_accuracy"] for r in runs[method]]),
            "seconds_per_step": t["train_on_batch"]["median"],
            "seconds_per_step_quartiles": t["train_on_batch"]["quartiles"],
            "seconds_per_step_rounds": t["train_on_batch"]["rounds"],
            "seconds_per_step_fit": t["fit"]["median"],
            "seconds_per_step_fit_quartiles": t["fit"]["quartiles"],
            "seconds_per_step_fit_rounds": t["fit"]["rounds"],
            "jit_compile": jit[method],
            "runs": runs[method],
        }

    out = {
        "benchmark": "compare_larq",
        "model": "tfquant.zoo.binary_cnn (Keras 3; larq twin: tf-keras + larq.layers.QuantConv2D)",
        "data": "fashion_mnist",
        "data_pipeline": "Model.fit and train_on_batch on numpy arrays, in both Kerases",
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
        "step_timing": {"rounds": args.rounds, "steps": args.steps},
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "tf_keras": __import__("tf_keras").__version__,
            "larq": larq.__version__,
            "tfquant": tfquant.__version__,
        },
        "results": results,
        "step_time_ratios": ratios,
        "step_time_breakdown": {
            name: {**step_times[name], "jit_compile": jit[name]}
            for name in variants
            if name in step_times
        },
        "step_time_breakdown_errors": timing_errors,
    }
    ste = ratios.get("tfquant_ste_adam/larq_ste_adam")
    if ste is not None:
        tob = ste["train_on_batch"]
        out["step_time_ratio_tfquant_over_larq_ste_adam"] = tob["ratio_of_medians"]
        out["step_time_ratio_tfquant_over_larq_ste_adam_per_round"] = {
            "median": tob["per_round_median"],
            "quartiles": tob["per_round_quartiles"],
        }
        out["step_time_ratio_tfquant_over_larq_ste_adam_fit"] = ste["fit"]["ratio_of_medians"]
        out["target_ste_adam_step_time_at_most_1x_larq"] = bool(
            tob["ratio_of_medians"] <= TARGET_STE_ADAM_RATIO
        )
        out["target_ste_adam_step_time_at_most_1x_larq_fit"] = bool(
            ste["fit"]["ratio_of_medians"] <= TARGET_STE_ADAM_RATIO
        )
    if {"tfquant_ste_adam", "larq_ste_adam"} <= results.keys():
        out["accuracy_diff_tfquant_minus_larq_ste_adam"] = (
            results["tfquant_ste_adam"]["test_accuracy"] - results["larq_ste_adam"]["test_accuracy"]
        )
    md = ratios.get("tfquant_md_tanh_s/tfquant_ste_adam")
    if md is not None:
        tob = md["train_on_batch"]
        out["step_time_ratio_md_tanh_s_over_tfquant_ste_adam"] = tob["ratio_of_medians"]
        out["step_time_ratio_md_tanh_s_over_tfquant_ste_adam_per_round"] = {
            "median": tob["per_round_median"],
            "quartiles": tob["per_round_quartiles"],
        }
        out["step_time_ratio_md_tanh_s_over_tfquant_ste_adam_fit"] = md["fit"]["ratio_of_medians"]
        out["target_md_step_time_at_most_1.15x_adam"] = bool(
            tob["ratio_of_medians"] <= TARGET_MD_RATIO
        )
        out["target_md_step_time_at_most_1.15x_adam_fit"] = bool(
            md["fit"]["ratio_of_medians"] <= TARGET_MD_RATIO
        )
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
            md_acc = np.array(results["tfquant_md_tanh_s"]["test_accuracy_per_seed"])
            larq_best = np.array(results[best]["test_accuracy_per_seed"])
            gain = common.paired_gain(md_acc, larq_best)
            out["accuracy_gain_md_tanh_s_over_larq_best"] = gain
            out["target_md_tanh_s_accuracy_above_larq_best"] = bool(gain["mean"] > 0)
            # Above by more than the seeds' noise: the whole 95% interval is above 0.
            out["target_md_tanh_s_accuracy_above_larq_best_confirmed"] = bool(
                gain["ci95"] is not None and gain["ci95"][0] > 0
            )
    out["machine"] = common.machine()
    common.dump(out, str(out_dir / "compare_larq.json"))
    plot(results, out_dir / "compare_larq.png")
    print_step_times(step_times, ratios, jit)
    print(
        f"wrote {out_dir / 'compare_larq.json'} and {out_dir / 'compare_larq.png'}", file=sys.stderr
    )
    return out


if __name__ == "__main__":
    main()
