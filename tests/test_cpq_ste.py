"""CPQ's multi-class STE in closed form (no codes axis) against the reference with a codes
axis and a nested tape (tests/cpq_reference.py) and against finite differences, for every bit
width, signed and unsigned, with and without DropBits masks and gates; and CPQ under XLA."""

import numpy as np
import pytest
from cpq_reference import cpq_quantize as reference_quantize

from tfquant._keras import keras, tf
from tfquant.layers import QuantConv2D, QuantDense
from tfquant.quantizers.cpq import CPQQuantizer, code_range, cpq_quantize

MODES = ("plain", "ones", "gates", "dropbits")


def level_weights(mode, bits, n, rng, dtype):
    """None, all ones, one gate per level (nested products), or per-element DropBits masks
    times gates (some levels exactly 0)."""
    if mode == "plain":
        return None
    if mode == "ones":
        return np.ones(bits, dtype)
    gates = np.cumprod(rng.uniform(0.2, 1.0, bits - 1))
    if mode == "gates":
        return np.concatenate([[1.0], gates]).astype(dtype)
    keep = np.cumprod(rng.uniform(size=(n, bits - 1)) > 0.3, axis=1)
    return np.concatenate([np.ones((n, 1)), keep * gates], axis=1).astype(dtype)


def value_and_grads(fn, x, alpha, sigma, lw, dy, **kwargs):
    args = [tf.constant(x), tf.constant(alpha, x.dtype), tf.constant(sigma, x.dtype)]
    if lw is not None:
        args.append(tf.constant(lw))
    with tf.GradientTape() as tape:
        tape.watch(args)
        y = fn(*args[:3], level_weights=None if lw is None else args[3], **kwargs)
        loss = tf.reduce_sum(y * dy)
    return y.numpy(), [g.numpy() for g in tape.gradient(loss, args)]


def compare(bits, signed, mode, scheme, dtype, n=200, alpha=0.3, sigma=0.13, fuzz=0.0):
    rng = np.random.default_rng(bits + 10 * signed)
    lo, hi = code_range(bits, signed)
    x = rng.uniform((lo - 3) * alpha, (hi + 3) * alpha, n).astype(dtype)
    lw = level_weights(mode, bits, n, rng, dtype)
    dy = rng.normal(size=n).astype(dtype)
    kwargs = {"bits": bits, "signed": signed, "scheme": scheme, "fuzz": fuzz}
    if mode == "dropbits":
        # only inputs whose active grid holds mass: beyond 40 sigma from it (the masses'
        # clip) the reference divides underflowed masses (level-weight gradients up to 1e296,
        # NaN for x); the closed form gives zero gradients there (tested below)
        y, grads = value_and_grads(cpq_quantize, x, alpha, sigma, lw, dy, **kwargs)
        assert all(np.isfinite(g).all() for g in grads)
        near = np.abs(x - y) < 30 * sigma + alpha / 2
        x, lw, dy = x[near], lw[near], dy[near]
    y, grads = value_and_grads(cpq_quantize, x, alpha, sigma, lw, dy, **kwargs)
    y_ref, grads_ref = value_and_grads(reference_quantize, x, alpha, sigma, lw, dy, **kwargs)
    np.testing.assert_array_equal(y, y_ref)  # the same forward
    return grads, grads_ref


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_closed_form_matches_the_reference_float64(bits, signed, mode):
    schemes = ("A",) if mode == "plain" or bits == 1 else ("A", "B")
    for scheme in schemes:
        for fuzz in (0.0, 1e-4):
            grads, grads_ref = compare(bits, signed, mode, scheme, np.float64, fuzz=fuzz)
            for name, g, ref in zip(("x", "alpha", "sigma", "weights"), grads, grads_ref):
                np.testing.assert_allclose(
                    g, ref, rtol=1e-6, atol=1e-6, err_msg=f"d/d{name}, {scheme}, fuzz {fuzz}"
                )


@pytest.mark.parametrize("bits", [2, 4, 6])
@pytest.mark.parametrize("mode", MODES)
def test_closed_form_matches_the_reference_float32(bits, mode):
    """float32: the two sum the same terms in different orders (sums of up to 2^b terms)."""
    grads, grads_ref = compare(bits, True, mode, "A", np.float32)
    for g, ref in zip(grads, grads_ref):
        scale = 1.0 + np.abs(ref)
        assert np.max(np.abs(g - ref) / scale) < 1e-3


def soft_code_np(x, alpha, sigma, bits, signed, w=None, scheme_levels=None):
    """sum_k k pi~_k in float64 numpy over the whole grid (weights w per code)."""
    lo, hi = code_range(bits, signed)
    k = np.arange(lo, hi + 1, dtype=np.float64)
    edges = alpha * np.concatenate([k - 0.5, [hi + 0.5]])
    c = 1.0 / (1.0 + np.exp(-(edges[None, :] - x[:, None]) / sigma))
    p = c[:, 1:] - c[:, :-1]
    if w is not None:
        p = p * w
    return (p * k).sum(axis=1) / p.sum(axis=1)


@pytest.mark.parametrize("bits, signed", [(1, True), (2, True), (3, False), (4, True)])
def test_closed_form_against_finite_differences(bits, signed):
    """float64 central differences of alpha * soft code (with DropBits-like code weights)."""
    alpha, sigma, h = 0.6, 0.25, 1e-6
    lo, hi = code_range(bits, signed)
    rng = np.random.default_rng(bits)
    x = rng.uniform((lo - 1) * alpha, (hi + 1) * alpha, 50)
    lw = np.concatenate([[1.0], np.cumprod(rng.uniform(0.3, 1.0, bits - 1))])
    from tfquant.quantizers.cpq import bit_levels

    w = lw[bit_levels(np.arange(lo, hi + 1), bits, signed).numpy() - 1]
    dy = np.ones_like(x)
    y, (dx, da, ds, dw) = value_and_grads(
        cpq_quantize, x, alpha, sigma, lw, dy, bits=bits, signed=signed, local_grid=None
    )
    k_star = y / alpha

    def fd(f):
        return (f(h) - f(-h)) / (2 * h)

    np.testing.assert_allclose(
        dx, alpha * fd(lambda e: soft_code_np(x + e, alpha, sigma, bits, signed, w)), atol=1e-6
    )
    ref_da = k_star.sum() + alpha * fd(
        lambda e: soft_code_np(x, alpha + e, sigma, bits, signed, w).sum()
    )
    np.testing.assert_allclose(da, ref_da, rtol=1e-6)
    ref_ds = alpha * fd(lambda e: soft_code_np(x, alpha, sigma + e, bits, signed, w).sum())
    np.testing.assert_allclose(ds, ref_ds, rtol=1e-6, atol=1e-8)
    levels = bit_levels(np.arange(lo, hi + 1), bits, signed).numpy() - 1
    for j in range(1, bits):  # level 1 carries no gradient that matters: w_1 = 1 by design

        def shifted(e, j=j):
            lw2 = lw.copy()
            lw2[j] += e
            return soft_code_np(x, alpha, sigma, bits, signed, lw2[levels]).sum()

        np.testing.assert_allclose(dw[j], alpha * fd(shifted), rtol=1e-5, atol=1e-8)


def learned_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            QuantConv2D(
                4,
                3,
                input_quantizer=CPQQuantizer(bits=3, signed=False, alpha=None, dropbits=None),
                kernel_quantizer=CPQQuantizer(bits=4, alpha=None, learn_bits=True, seed=1),
                use_bias=False,
            ),
            keras.layers.Flatten(),
            QuantDense(
                3, kernel_quantizer=CPQQuantizer(bits=2, dropbits="B", learn_bits=True, seed=2)
            ),
        ]
    )


def test_xla_training_with_learned_widths_stays_finite():
    """jit_compile=True with learned widths and DropBits: the loss, every weight and every
    gradient stay finite (gate samples of exactly 0 drop levels from the forward)."""
    model = learned_model()
    for q in (model.layers[0].kernel_quantizer, model.layers[2].kernel_quantizer):
        gates = q.bit_gates.numpy()
        gates[-1] = -2.3  # a top gate that samples 0 in about two steps of three
        q.bit_gates.assign(gates)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (96, 6, 6, 2)).astype(np.float32)
    y = rng.normal(0, 1, (96, 3)).astype(np.float32)
    model.compile(keras.optimizers.Adam(0.01), "mse", jit_compile=True)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(w.numpy()).all() for w in model.weights)


@pytest.mark.parametrize("jit", [False, True])
def test_closed_levels_far_inputs_give_finite_gradients(jit):
    """Why the direct form went NaN under XLA with learned widths: with levels closed by a gate
    (weight 0), inputs tens of sigma beyond the active grid leave it no mass, and the direct
    form divided by the floored normaliser (gradients ~1e36 for the gates, inf or NaN for
    the input under XLA). The closed form gives such elements zero gradients."""
    x = tf.constant(np.random.default_rng(0).normal(0, 3, 2000).astype(np.float32))
    lw = tf.constant(np.float32([1, 0.5, 0.0, 0.0]))

    @tf.function(jit_compile=jit)
    def gradients(x, lw):
        with tf.GradientTape() as tape:
            tape.watch([x, lw])
            y = tf.reduce_sum(cpq_quantize(x, 0.1, 0.05, 4, level_weights=lw))
        return tape.gradient(y, [x, lw])

    gx, gw = gradients(x, lw)
    assert np.isfinite(gx.numpy()).all() and np.isfinite(gw.numpy()).all()
    assert np.abs(gw.numpy()).max() < 1e7
