"""CPQ with DropBits and learned bit-widths: the golden tests 1-7 worked out from the paper's definitions (docs/methods.md#cpq-and-dropbits), a numpy
reference of the categorical, validation, serialization, save/load and a short fit."""

import doctest

import numpy as np
import pytest
from helpers import assert_roundtrip

import tfquant
from tfquant import quantizers
from tfquant._keras import keras, tf
from tfquant.layers import QuantConv2D, QuantDense
from tfquant.quantizers import cpq
from tfquant.quantizers.cpq import (
    CPQQuantizer,
    bit_levels,
    code_range,
    cpq_probabilities,
    cpq_quantize,
    hard_concrete_gate,
    hard_concrete_nonzero,
    hard_concrete_sample,
)


# ----------------------------------------------------------------- numpy reference
def np_sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def np_pi(x, alpha, sigma, bits, signed=True, fuzz=0.0):
    """RQ's truncated categorical, float64, last axis over the codes."""
    lo, hi = code_range(bits, signed)
    k = np.arange(lo, hi + 1, dtype=np.float64)
    edges = np.concatenate([alpha * (k - 0.5), [alpha * (hi + 0.5)]])
    c = np_sigmoid((edges[None, :] - np.asarray(x, np.float64).reshape(-1, 1)) / sigma)
    return (c[:, 1:] - c[:, :-1] + fuzz) / (c[:, -1:] - c[:, :1] + len(k) * fuzz), k


def np_soft(x, alpha, sigma, bits, signed=True):
    """sum_k k pi_k(x): the STE differentiates alpha times this."""
    pi, k = np_pi(x, alpha, sigma, bits, signed)
    return (pi * k).sum(axis=1)


def np_clipped_round(x, alpha, bits, signed=True):
    """alpha clip(round(x / alpha)), halves to the lower code."""
    lo, hi = code_range(bits, signed)
    return alpha * np.clip(np.ceil(x / alpha - 0.5), lo, hi)


def plain(**kwargs):
    """A CPQ quantizer without DropBits (so training=True is the plain quantizer too)."""
    return CPQQuantizer(dropbits=None, **kwargs)


def grad_wrt(fn, *args):
    args = [tf.constant(a, tf.float32) for a in args]
    with tf.GradientTape() as tape:
        tape.watch(args)
        y = fn(*args)
    return y.numpy(), [g.numpy() for g in tape.gradient(y, args)]


# ----------------------------------------------------------------- 10.1 the categorical
def test_pi_golden_values():
    pi = cpq_probabilities([0.3], 1.0, 0.25, bits=2, fuzz=0.0).numpy()[0]
    np.testing.assert_allclose(pi, [0.000738, 0.038736, 0.656174, 0.304351], atol=1e-6)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("alpha, sigma", [(1.0, 0.25), (0.1, 0.05), (3.0, 2.0)])
def test_pi_matches_numpy_and_is_a_distribution(bits, signed, alpha, sigma):
    x = np.random.default_rng(bits).uniform(-3 * alpha * 2**bits, 3 * alpha * 2**bits, 200)
    pi = cpq_probabilities(x.astype(np.float64), alpha, sigma, bits, signed, fuzz=1e-8).numpy()
    ref, _ = np_pi(x, alpha, sigma, bits, signed, fuzz=1e-8)
    np.testing.assert_allclose(pi, ref, atol=1e-9)
    assert (pi >= 0).all()
    np.testing.assert_allclose(pi.sum(axis=-1), 1.0, atol=1e-9)


def test_pi_is_uniform_for_large_sigma():
    x = np.array([-1.3, 0.2, 0.9])  # float64: float32 sigmoid differences cancel
    pi = cpq_probabilities(x, 1.0, 1e6, bits=2, fuzz=0.0).numpy()
    np.testing.assert_allclose(pi, 0.25, atol=1e-6)


# ----------------------------------------------------------------- 10.2 forward
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("alpha", [0.1, 1.0, 3.0])
@pytest.mark.parametrize("sigma", [0.05, 0.3])
def test_forward_is_clipped_rounding_and_the_mode_of_pi(bits, signed, alpha, sigma):
    lo, hi = code_range(bits, signed)
    rng = np.random.default_rng(bits + 10 * signed)
    x = rng.uniform((lo - 3) * alpha, (hi + 3) * alpha, 2000).astype(np.float32)
    frac = np.abs(x / alpha - np.floor(x / alpha) - 0.5)
    x = x[frac > 1e-3]  # away from exact ties
    q = plain(bits=bits, signed=signed, alpha=alpha, sigma=sigma)
    y = q(x).numpy()
    np.testing.assert_allclose(y, np_clipped_round(x, alpha, bits, signed), rtol=1e-6)
    # the mode of pi, where pi does not underflow (float64 reference)
    near = (x > (lo - 0.5) * alpha - 5 * sigma) & (x < (hi + 0.5) * alpha + 5 * sigma)
    pi, k = np_pi(x[near], alpha, sigma, bits, signed)
    np.testing.assert_allclose(y[near], alpha * k[pi.argmax(axis=1)], rtol=1e-6)


def test_forward_ties_go_to_the_lower_code():
    q = plain(bits=2, alpha=1.0, sigma=0.25)
    x = np.array([0.5, -0.5, -1.5, 1.5, 0.3, 0.7, -2.4, 1.6, -7.0, 9.0], np.float32)
    assert q(x).numpy().tolist() == [0.0, -1.0, -2.0, 1.0, 0.0, 1.0, -2.0, 1.0, -2.0, 1.0]
    q = plain(bits=3, signed=False, alpha=0.5, sigma=0.1)
    assert q(np.float32([0.25, 0.75, 3.75])).numpy().tolist() == [0.0, 0.5, 3.5]


# ----------------------------------------------------------------- 10.3-10.4 backward
def test_ste_slope_profile_golden():
    """Golden test 3: the STE slope profile. The estimator is read as the gradient of
    ``stop_gradient(y_hard - pi) + pi`` (§3), with the truncated categorical and fuzz; the
    golden values were made with fuzz 0, the default.
    The slope is not symmetric about 0.5 (0.70653 vs 0.70104) because of the truncation."""
    x = np.float32([0.0, 0.25, 0.5, 0.75, 1.0])
    q = plain(bits=2, alpha=1.0, sigma=0.1)
    _, (slope,) = grad_wrt(q, x)
    np.testing.assert_allclose(slope, [0.13296, 0.70653, 2.50034, 0.70104, 0.06648], atol=1e-4)


def test_gradients_match_numpy_finite_differences():
    """dx: alpha d/dx sum_k k pi_k; dsigma: alpha d/dsigma sum_k k pi_k; dalpha:
    k* + alpha d/dalpha sum_k k pi_k (the direct term of g_k = alpha k)."""
    alpha, sigma, bits, h = 0.7, 0.3, 3, 1e-6
    x = np.random.default_rng(0).uniform(-4, 4, 64)
    y, (dx, da, ds) = grad_wrt(
        lambda x, a, s: cpq_quantize(x, a, s, bits), x.astype(np.float32), alpha, sigma
    )
    k_star = np_clipped_round(x, alpha, bits) / alpha

    def fd(f):
        return (f(h) - f(-h)) / (2 * h)

    ref_dx = alpha * fd(lambda e: np_soft(x + e, alpha, sigma, bits))
    ref_da = k_star + alpha * fd(lambda e: np_soft(x, alpha + e, sigma, bits))
    ref_ds = alpha * fd(lambda e: np_soft(x, alpha, sigma + e, bits))
    np.testing.assert_allclose(dx, ref_dx, atol=2e-4)
    np.testing.assert_allclose(da, ref_da.sum(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(ds, ref_ds.sum(), rtol=1e-4, atol=1e-3)


def test_alpha_gradient_tends_to_the_chosen_code():
    x = np.float32([-2.3, -1.02, 0.01, 0.97, 3.0])  # far from boundaries
    for value in x:
        _, (_, da, _) = grad_wrt(lambda x, a, s: cpq_quantize(x, a, s, 2), [value], 1.0, 1e-3)
        assert da == pytest.approx(np.clip(np.round(value), -2, 1), abs=1e-5)


def test_class_gradients_reach_alpha_and_sigma_through_the_log_parametrisation():
    q = plain(bits=2, alpha=0.5, sigma=0.2)
    x = tf.constant(np.random.default_rng(1).normal(0, 0.6, 50).astype(np.float32))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(q(x))
    g_log_a, g_log_s = tape.gradient(y, [q.log_alpha, q.log_sigma])
    _, (_, da, ds) = grad_wrt(lambda x, a, s: tf.reduce_sum(cpq_quantize(x, a, s, 2)), x, 0.5, 0.2)
    np.testing.assert_allclose(g_log_a.numpy(), 0.5 * da, rtol=1e-5)
    np.testing.assert_allclose(g_log_s.numpy(), 0.2 * ds, rtol=1e-5)
    assert q.trainable_weights == [q.log_alpha, q.log_sigma]


def test_local_grid_matches_the_full_grid():
    x = np.random.default_rng(2).uniform(-40, 40, 300).astype(np.float32)
    full = lambda x, a, s: cpq_quantize(x, a, s, 6, local_grid=None)  # noqa: E731
    local = lambda x, a, s: cpq_quantize(x, a, s, 6, local_grid=4)  # noqa: E731
    y_full, g_full = grad_wrt(full, x, 1.0, 0.3)
    y_local, g_local = grad_wrt(local, x, 1.0, 0.3)
    np.testing.assert_array_equal(y_local, y_full)
    np.testing.assert_allclose(g_local[0], g_full[0], rtol=1e-3, atol=1e-3)
    # alpha, sigma: float32 sums over 300 elements of terms up to ~30 that cancel
    np.testing.assert_allclose(g_local[1:], g_full[1:], atol=0.1)


# ----------------------------------------------------------------- 10.5 clustering
def cluster_distance(sigma, steps=300, lr=0.05, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    w0 = rng.uniform(-2, 2, 1000).astype(np.float32)
    target = np.clip(np.round(w0), -2, 1).astype(np.float32)
    noise_t = rng.normal(0, noise, (steps, 1000)).astype(np.float32)
    w = tf.Variable(w0)

    @tf.function
    def step(eps):
        with tf.GradientTape() as tape:
            loss = 0.5 * tf.reduce_sum((cpq_quantize(w, 1.0, sigma, 2) - (target + eps)) ** 2)
        w.assign_sub(lr * tape.gradient(loss, w))

    for eps in noise_t:
        step(eps)
    v = w.numpy()
    inside = (v > -2.5) & (v < 1.5)  # inside the grid's range
    return np.abs(v - np.round(v))[inside].mean()


def test_clustering_toy():
    """Golden test 5 (the clustering toy), with its unstated target read as: t = the grid point each weight starts
    nearest to, plus fresh N(0, 1) noise every step (SGD noise), alpha = 1 fixed. With a
    fixed continuous target the STE would instead oscillate around a decision boundary. The
    weights random-walk with a step proportional to the slope, which is small at grid
    points for sigma = 0.1, so they gather there; for sigma = 1 the slope is flat."""
    sharp, flat = cluster_distance(0.1), cluster_distance(1.0)
    assert sharp < 0.15  # uniform baseline 0.25
    assert flat > 0.2
    assert flat - sharp > 0.1


# ----------------------------------------------------------------- 10.6 DropBits
def test_bit_levels_schemes():
    codes = np.arange(-4, 4)
    assert bit_levels(codes, 3).numpy().tolist() == [3, 3, 2, 1, 1, 2, 3, 3]
    assert bit_levels(codes, 3, scheme="B").numpy().tolist() == [1, 3, 2, 3, 1, 3, 2, 3]
    assert bit_levels(np.arange(8), 3, signed=False).numpy().tolist() == [1, 1, 2, 2, 3, 3, 3, 3]
    assert bit_levels(np.arange(8), 3, False, "B").numpy().tolist() == [1, 3, 2, 3, 1, 3, 2, 3]
    # keeping levels 1..j leaves a j-bit grid
    for scheme, step in (("A", lambda j: 1), ("B", lambda j: 2 ** (4 - j))):
        codes = np.arange(-8, 8)
        levels = bit_levels(codes, 4, scheme=scheme).numpy()
        for j in range(1, 5):
            lo, hi = code_range(j)
            kept = codes[levels <= j]
            np.testing.assert_array_equal(kept, step(j) * np.arange(lo, hi + 1))


def test_all_masks_one_equals_plain_cpq():
    x = np.random.default_rng(3).normal(0, 1.5, 200).astype(np.float32)
    ones = np.ones(3, np.float32)
    for scheme in ("A", "B"):
        y, g = grad_wrt(lambda x, a, s: cpq_quantize(x, a, s, 3), x, 0.5, 0.2)
        y1, g1 = grad_wrt(
            lambda x, a, s, sc=scheme: cpq_quantize(x, a, s, 3, level_weights=ones, scheme=sc),
            x,
            0.5,
            0.2,
        )
        np.testing.assert_array_equal(y1, y)
        for a, b in zip(g1, g):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("signed", [True, False])
def test_dropped_outer_level_leaves_a_smaller_grid(signed):
    x = np.random.default_rng(4).uniform(-10, 10, 500).astype(np.float32)
    w = np.float32([1, 1, 0])
    y_a = cpq_quantize(x, 1.0, 0.2, 3, signed, level_weights=w, scheme="A").numpy()
    np.testing.assert_array_equal(y_a, np_clipped_round(x, 1.0, 2, signed))
    y_b = cpq_quantize(x, 1.0, 0.2, 3, signed, level_weights=w, scheme="B").numpy()
    np.testing.assert_array_equal(y_b, np_clipped_round(x, 2.0, 2, signed))
    # per-element masks: each element on its own surviving grid
    w = np.float32([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    y = cpq_quantize(np.float32([3.2, 3.2, 3.2]), 1.0, 0.2, 3, signed, level_weights=w)
    assert y.numpy().tolist() == ([3.0, 1.0, 0.0] if signed else [3.0, 3.0, 1.0])


def test_dropbits_only_in_training_and_eval_is_deterministic():
    x = np.random.default_rng(5).normal(0, 2, 2000).astype(np.float32)
    q = CPQQuantizer(bits=3, alpha=0.5, dropbits="A", drop_rate=0.5)
    ref = np_clipped_round(x, 0.5, 3)
    np.testing.assert_array_equal(q(x).numpy(), ref)
    np.testing.assert_array_equal(q(x, training=False).numpy(), q(x, training=False).numpy())
    trained = q(x, training=True).numpy()
    assert (trained != ref).any()
    assert (np.abs(trained) <= np.abs(ref) + 1e-6).all()  # scheme A only shrinks the range


@pytest.mark.parametrize("scheme", ["A", "B"])
def test_keep_frequency_per_code(scheme):
    """The empirical keep frequency of code k matches q^(level(k) - 1) within 3 sigma over
    10^5 draws, q = 1 - drop_rate."""
    bits, rate, n = 4, 0.2, 100_000
    q = CPQQuantizer(bits=bits, dropbits=scheme, drop_rate=rate, seed=7)
    weights = q._level_weights(tf.zeros((n,)), training=True).numpy()  # (n, bits)
    codes = np.arange(-8, 8)
    levels = bit_levels(codes, bits, scheme=scheme).numpy()
    kept = weights[:, levels - 1] > 0  # (n, codes)
    expected = (1 - rate) ** (levels - 1)
    tol = 3 * np.sqrt(expected * (1 - expected) / n) + 1e-12
    assert (np.abs(kept.mean(axis=0) - expected) <= tol).all()
    # nested: a level survives only if every lower one does
    assert (np.diff((weights > 0).astype(int), axis=1) <= 0).all()


# ----------------------------------------------------------------- 10.7 hard concrete
def test_hard_concrete_nonzero_probability_against_monte_carlo():
    u = np.random.default_rng(8).uniform(1e-6, 1 - 1e-6, 100_000)
    for log_a in (-1.0, 0.0, 2.0):
        z = hard_concrete_sample(np.full_like(u, log_a), u).numpy()
        p = float(hard_concrete_nonzero(log_a))
        assert abs((z > 0).mean() - p) < 3 * np.sqrt(p * (1 - p) / len(u))
        assert ((z >= 0) & (z <= 1)).all()


def test_hard_concrete_limits_and_test_gate():
    u = np.random.default_rng(9).uniform(1e-6, 1 - 1e-6, 1000)
    assert (hard_concrete_sample(np.full_like(u, 30.0), u).numpy() == 1).all()
    assert (hard_concrete_sample(np.full_like(u, -30.0), u).numpy() == 0).all()
    log_a = np.linspace(-5, 5, 41)
    ref = np.clip(1 / (1 + np.exp(-log_a)) * 1.2 - 0.1, 0, 1)
    np.testing.assert_allclose(hard_concrete_gate(log_a).numpy(), ref, atol=1e-6)
    assert float(hard_concrete_nonzero(0.0)) == pytest.approx(
        1 / (1 + np.exp(2 / 3 * np.log(0.1 / 1.1)))
    )


def test_learned_bits_and_finalize():
    q = CPQQuantizer(bits=4, alpha=0.25, learn_bits=True)
    assert q.learned_bits() == 4 and q.precision == 4 and q.bit_gates.trainable
    q.bit_gates.assign([3.0, -3.0, 3.0])  # level 3 closed: level 4 goes with it
    assert q.learned_bits() == 2
    assert q.finalize() == 2
    assert not q.learn_bits and not q.bit_gates.trainable
    assert q.precision == 2 and q.grid.codes == (-2, -1, 0, 1) and q.grid.step == 0.25
    assert q.levels == (-0.5, -0.25, 0.0, 0.25)  # values: codes times alpha
    x = np.random.default_rng(10).normal(0, 1, 300).astype(np.float32)
    np.testing.assert_array_equal(q(x).numpy(), np_clipped_round(x, 0.25, 2))
    # scheme B keeps the range and coarsens the step
    q = CPQQuantizer(bits=3, alpha=0.25, dropbits="B", learn_bits=True)
    q.bit_gates.assign([3.0, -3.0])
    assert q.finalize() == 2 and q.levels == (-1.0, -0.5, 0.0, 0.5)  # codes -2..1 of step 2 alpha
    np.testing.assert_array_equal(q(x).numpy(), np_clipped_round(x, 0.5, 2))
    # the round trip keeps a finalized quantizer
    clone = quantizers.get(quantizers.serialize(q))
    clone.set_weights(q.get_weights())
    assert clone.precision == 2 and not clone.learn_bits


def test_bit_regulariser_is_added_in_training():
    q = CPQQuantizer(bits=3, learn_bits=True, bit_penalty=0.01, gate_init=1.0)
    x = np.zeros((5, 4), np.float32)
    q(x)
    assert q.losses == []
    q(x, training=True)
    expected = 0.01 * 2 * float(hard_concrete_nonzero(1.0))
    assert [float(v) for v in q.losses] == pytest.approx([expected])
    q = CPQQuantizer(bits=3, learn_bits=True, bit_penalty=0.01, bit_cost="elements")
    q(x, training=True)
    assert float(q.losses[0]) == pytest.approx(20 * 0.01 * 2 * float(hard_concrete_nonzero(3.0)))


# ----------------------------------------------------------------- validation, API
@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"bits": 0}, "Expected bits an integer in [1, 8]. Received: bits=0"),
        ({"bits": 9}, "Expected bits an integer in [1, 8]. Received: bits=9"),
        ({"bits": 2.0}, "Received: bits=2.0"),
        ({"alpha": 0.0}, "Expected alpha a finite number > 0. Received: alpha=0.0"),
        ({"alpha": -1}, "Received: alpha=-1"),
        ({"sigma": 0.0}, "Expected sigma a finite number > 0. Received: sigma=0.0"),
        ({"drop_rate": 1.0}, "Expected drop_rate in [0, 1). Received: drop_rate=1.0"),
        ({"drop_rate": -0.1}, "Received: drop_rate=-0.1"),
        ({"dropbits": "C"}, "Expected dropbits in ('A', 'B') or None. Received: dropbits='C'"),
        ({"dropbits": None, "learn_bits": True}, "Received: dropbits=None, learn_bits=True"),
        ({"bit_penalty": -1.0}, "Expected bit_penalty >= 0. Received: bit_penalty=-1.0"),
        ({"bit_cost": "flops"}, "Expected bit_cost in ('bits', 'elements')"),
        ({"fuzz": -1e-3}, "Expected fuzz >= 0"),
        ({"local_grid": 0}, "Expected local_grid an integer >= 1 or None"),
    ],
)
def test_bad_input_says_expected_and_received(kwargs, expected):
    with pytest.raises(ValueError) as info:
        CPQQuantizer(**kwargs)
    assert expected in str(info.value)


def test_alias_defaults_and_docstrings():
    q = quantizers.get("cpq")
    assert type(q) is CPQQuantizer and quantizers.get("CPQQuantizer").bits == 2
    assert q.sigma == pytest.approx(1 / 3) and q.dropbits == "A" and q.scaled
    assert quantizers.cpq_quantize is cpq_quantize
    result = doctest.testmod(cpq, optionflags=doctest.ELLIPSIS, extraglobs={"tfquant": tfquant})
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"bits": 5, "signed": False, "alpha": 0.1, "dropbits": "B", "learn_bits": True}],
)
def test_serialization_roundtrip(kwargs):
    q = CPQQuantizer(**kwargs)
    assert_roundtrip(q, np.random.default_rng(11).normal(0, 2, (4, 5)).astype(np.float32))


def small_model(learn_bits=False):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            QuantConv2D(
                4,
                3,
                kernel_quantizer=CPQQuantizer(bits=3, alpha=0.1, learn_bits=learn_bits),
                use_bias=False,
            ),
            keras.layers.Flatten(),
            QuantDense(
                3,
                input_quantizer=CPQQuantizer(bits=4, signed=False, alpha=0.1, dropbits=None),
                kernel_quantizer=CPQQuantizer(bits=2, alpha=0.05, dropbits="B"),
            ),
        ]
    )


def test_fit_learns_alpha_sigma_and_gates(tmp_path):
    model = small_model(learn_bits=True)
    rng = np.random.default_rng(12)
    x = rng.normal(0, 1, (64, 6, 6, 2)).astype(np.float32)
    y = rng.normal(0, 1, (64, 3)).astype(np.float32)
    quants = [model.layers[0].kernel_quantizer, model.layers[2].kernel_quantizer]
    before = [(q.alpha_value, q.sigma_value) for q in quants]
    gates = quants[0].bit_gates.numpy().copy()
    # conv: kernel + (log alpha, log sigma, gates); dense: kernel, bias + 2 quantizers x 2
    assert len(model.trainable_weights) == 1 + 3 + 2 + 2 + 2
    model.compile(keras.optimizers.Adam(0.01), "mse")
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    for q, (a, s) in zip(quants, before):
        assert q.alpha_value != a and q.sigma_value != s
    assert (quants[0].bit_gates.numpy() < gates).all()  # the regulariser lowers log a

    # .keras save and load: equal outputs
    path = tmp_path / "cpq.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    q = loaded.layers[0].kernel_quantizer
    assert q.alpha_value == quants[0].alpha_value and q.learn_bits


def test_finalized_model_saves_and_loads(tmp_path):
    model = small_model(learn_bits=True)
    q = model.layers[0].kernel_quantizer
    q.bit_gates.assign([3.0, -3.0])
    q.finalize()
    x = np.random.default_rng(13).normal(0, 1, (8, 6, 6, 2)).astype(np.float32)
    tfquant.finalize(model)
    path = tmp_path / "cpq.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    assert loaded.layers[0].kernel_precision == 2
    kernel = loaded.layers[0].kernel.numpy() / q.alpha_value
    np.testing.assert_allclose(kernel, np.round(kernel), atol=1e-4)
    assert set(np.round(kernel).ravel()) <= {-2.0, -1.0, 0.0, 1.0}
