"""The shared test sets: numpy references and checks reused per component."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from tfquant import quantizers
from tfquant._keras import iter_layers, keras, tf

# The ``tfquant`` command as the installed console script runs it (its entry point,
# ``_tfquant_launcher``, prepares signals and logging before TensorFlow is imported).
TFQUANT = [sys.executable, "-m", "_tfquant_launcher"]


def tfquant_cli(*args, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run ``tfquant *args`` in a subprocess, output captured as text."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [*TFQUANT, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        **kwargs,
    )


BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def run_benchmark(script: str, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``benchmarks/<script> *args`` from the project root, output captured as text."""
    return subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, script), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=timeout,
        cwd=os.path.dirname(BENCHMARKS),
    )


def conv_bn_dense(input_shape, filters: int, units: int, kernel_quantizer="ste_sign", seed=0):
    """QuantConv2D (3x3, float input) -> synchronized BatchNorm -> Flatten -> QuantDense with
    sign inputs: the smallest network with every kind of weight and a BatchNorm."""
    from tfquant import layers

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.QuantConv2D(filters, 3, kernel_quantizer=kernel_quantizer, use_bias=False),
            keras.layers.BatchNormalization(synchronized=True),
            keras.layers.Flatten(),
            layers.QuantDense(units, input_quantizer="ste_sign", kernel_quantizer=kernel_quantizer),
        ]
    )


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0).astype(np.float32)


def grad_of(fn, x, seed=0):
    """Return (y, dL/dx) for L = sum(fn(x) * r) with a fixed random r."""
    x = tf.constant(x)
    r = tf.constant(np.random.default_rng(seed).normal(size=x.shape).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        loss = tf.reduce_sum(y * r)
    return y.numpy(), tape.gradient(loss, x).numpy(), r.numpy()


def assert_roundtrip(quantizer: quantizers.Quantizer, x: np.ndarray) -> None:
    """Serialization round trip: same class, same config, same output."""
    config = quantizers.serialize(quantizer)
    clone = quantizers.get(config)
    assert type(clone) is type(quantizer)
    assert clone.get_config() == quantizer.get_config()
    np.testing.assert_array_equal(clone(x).numpy(), quantizer(x).numpy())


def binary_cnn(kernel_quantizer="ste_sign", input_shape=(16, 16, 32), seed=0) -> keras.Model:
    """Two binary convs (same-with-ones padding) with BatchNorm, as LCE likes them."""
    keras.utils.set_random_seed(seed)
    from tfquant.layers import QuantConv2D

    common = dict(
        padding="same",
        pad_values=1.0,
        input_quantizer="ste_sign",
        kernel_quantizer=kernel_quantizer,
        use_bias=False,
    )
    model = keras.Sequential(
        [
            keras.Input(input_shape),
            QuantConv2D(32, 3, **common),
            keras.layers.BatchNormalization(),
            QuantConv2D(64, 3, **common),
            keras.layers.BatchNormalization(),
        ]
    )
    randomize_batchnorm(model, seed)
    return model


def randomize_batchnorm(model: keras.Model, seed: int = 0) -> None:
    """Give BatchNorm layers non-trivial statistics so folding is exercised."""
    rng = np.random.default_rng(seed)
    for bn in [m for m in iter_layers(model) if isinstance(m, keras.layers.BatchNormalization)]:
        gamma, beta, mean, var = bn.get_weights()
        bn.set_weights(
            [
                rng.uniform(0.5, 2.0, gamma.shape),
                rng.normal(0, 0.5, beta.shape),
                rng.normal(0, 2.0, mean.shape),
                rng.uniform(2.0, 20.0, var.shape),
            ]
        )
