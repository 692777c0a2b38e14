"""The multi-class STE as tfquant first wrote it: the categorical over every code of a window
(a codes axis per element) differentiated with a nested GradientTape. Slow and memory-hungry,
but a direct transcription of the estimator (the gradients of ``stop_gradient(y_hard - pi) +
pi`` contracted with the grid), kept as the reference the closed form is tested against."""

import numpy as np

from tfquant._keras import tf
from tfquant.quantizers.cpq import (
    _as,
    _forward_codes,
    bit_levels,
    code_range,
    cpq_probabilities,
)


def window(k_star, bits, signed, local_grid):
    """Codes the backward pass sums over, and their validity (None: all valid)."""
    lo, hi = code_range(bits, signed)
    if local_grid is None or 2**bits <= 2 * local_grid + 1:
        return tf.constant(np.arange(lo, hi + 1), k_star.dtype), None
    offsets = tf.constant(np.arange(-local_grid, local_grid + 1), k_star.dtype)
    codes = tf.stop_gradient(k_star)[..., None] + offsets
    return codes, tf.logical_and(codes >= lo, codes <= hi)


def soft_code(x, alpha, sigma, k_star, bits, signed, scheme, fuzz, local_grid, level_weights):
    """sum_k k pi~_k, the smoothed staircase the STE differentiates."""
    codes, valid = window(k_star, bits, signed, local_grid)
    pi = cpq_probabilities(x, alpha, sigma, bits, signed, fuzz, codes, valid)
    if level_weights is not None:
        onehot = tf.one_hot(bit_levels(codes, bits, signed, scheme) - 1, bits, dtype=x.dtype)
        lw = tf.cast(level_weights, x.dtype)[..., None, :]  # (..., 1, bits)
        pi = pi * tf.reduce_sum(lw * onehot, axis=-1)
        floor = np.finfo(x.dtype.as_numpy_dtype).tiny  # all masses underflowed: pi = 0
        pi = pi / tf.maximum(tf.reduce_sum(pi, axis=-1, keepdims=True), floor)
    return tf.reduce_sum(pi * codes, axis=-1)


def cpq_quantize(
    x, alpha, sigma, bits=2, signed=True, *, level_weights=None, scheme="A", fuzz=0.0,
    local_grid=4,
):  # fmt: skip
    """The reference of ``tfquant.quantizers.cpq.cpq_quantize`` (same arguments)."""
    x = tf.convert_to_tensor(x)
    alpha, sigma = _as(alpha, x.dtype), _as(sigma, x.dtype)
    extra = [] if level_weights is None else [_as(level_weights, x.dtype)]

    @tf.custom_gradient
    def _call(x, alpha, sigma, *extra):
        lw = extra[0] if extra else None
        k_star = _forward_codes(x, alpha, bits, signed, scheme, lw)

        def grad(dy):
            inputs = [x, alpha, sigma, *extra]
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                soft = soft_code(
                    x, alpha, sigma, k_star, bits, signed, scheme, fuzz, local_grid, lw
                )
            grads = tape.gradient(
                soft,
                inputs,
                output_gradients=dy * tf.stop_gradient(alpha),
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            grads[1] = grads[1] + tf.reduce_sum(dy * k_star)
            return grads

        return alpha * k_star, grad

    return _call(x, alpha, sigma, *extra)
