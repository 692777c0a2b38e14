"""The quantizer test set: numpy forward, surrogate gradient, round trip, alias, grid,
properties, run over every registered quantizer (a registered class without a case fails)."""

import numpy as np
import pytest
from helpers import assert_roundtrip, grad_of, np_sign
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfquant import quantizers
from tfquant._keras import tf
from tfquant.methods.binary_relax import RelaxedQuantizer
from tfquant.quantizers.cpq import code_range, cpq_probabilities

RNG = np.random.default_rng(0)
X = RNG.normal(0, 1.0, size=(3, 3, 8, 6)).astype(np.float32)
X[0, 0, 0, 0] = 0.0  # sign(0) = +1


# ----------------------------------------------------------------- numpy references
def np_channel_view(x, per_channel=True):
    return x.reshape(-1, x.shape[-1]) if per_channel else x.reshape(-1, 1)


def np_scaled_sign(x, per_channel=True):
    alpha = np.abs(np_channel_view(x, per_channel)).mean(axis=0)
    return (np_sign(x) * (alpha if per_channel else alpha[0])).astype(np.float32)


def np_ternary(x, method, per_channel=True, threshold=0.5):
    mat = np_channel_view(x, per_channel)
    out = np.zeros_like(mat)
    for c in range(mat.shape[1]):
        w = mat[:, c]
        a = np.abs(w)
        if method == "fixed":
            out[:, c] = np.sign(w) * (a > threshold)
            continue
        if method == "twn":
            keep = a > 0.7 * a.mean()
        else:  # brute force over every support size: the least-squares optimum
            best = None
            for k in range(1, len(a) + 1):
                support = np.argsort(-a, kind="stable")[:k]
                alpha = a[support].mean()
                t = np.zeros_like(w)
                t[support] = np.sign(w[support])
                err = np.sum((w - alpha * t) ** 2)
                if best is None or err < best[0] - 1e-9:
                    best = (err, np.isin(np.arange(len(a)), support))
            keep = best[1]
        alpha = a[keep].mean() if keep.any() else 0.0
        out[:, c] = alpha * np.sign(w) * keep
    return out.reshape(x.shape)


def np_uniform(x, bits, mode):
    n = 2**bits - 1
    if mode == "activation":
        return np.floor(np.clip(x, 0, 1) * n + 0.5) / n
    t = np.tanh(x)
    t = t / (2 * np.abs(t).max()) + 0.5
    return 2 * np.floor(t * n + 0.5) / n - 1


def np_sparse(x, threshold, step, bits=2):
    n = 2**bits - 1
    return np.where(x > threshold, step * np.clip(np.ceil(x / step - 0.5), 1, n), 0.0)


def np_cpq(x, alpha=1.0, bits=2, signed=True):
    """alpha clip(round(x / alpha)), ties to the lower code."""
    lo, hi = code_range(bits, signed)
    return alpha * np.clip(np.ceil(x / alpha - 0.5), lo, hi)


def cpq_surrogate(quantizer):
    """d/dx of alpha sum_k k pi_k(x), RQ's expected code under logistic noise (central
    differences in float64 of the public cpq_probabilities), for a CPQ quantizer."""
    alpha, sigma, bits, signed = (
        quantizer.alpha_value,
        quantizer.sigma_value,
        quantizer.bits,
        quantizer.signed,
    )
    lo, hi = code_range(bits, signed)
    codes = np.arange(lo, hi + 1, dtype=np.float64)

    def soft(v):
        v = tf.constant(v, tf.float64)
        p = cpq_probabilities(v, alpha, sigma, bits=bits, signed=signed).numpy()
        return alpha * (p * codes).sum(-1)

    return lambda x: derivative_of(soft, x)


def derivative_of(soft, x):
    x, h = x.astype(np.float64), 1e-5
    return (soft(x + h) - soft(x - h)) / (2 * h)


CPQ = quantizers.CPQQuantizer()
CPQ_UNSIGNED = quantizers.CPQQuantizer(bits=3, signed=False, alpha=0.25)

# Each case: (alias, quantizer, numpy forward, numpy surrogate derivative or None for "use tf")
CASES = {
    "ste_sign": (quantizers.SteSign(), np_sign, lambda x: np.abs(x) <= 1.0),
    "ste_sign_noclip": (quantizers.SteSign(clip_value=None), np_sign, lambda x: np.ones_like(x)),
    "approx_sign": (
        quantizers.ApproxSign(),
        np_sign,
        lambda x: np.where(np.abs(x) <= 1, 2 - 2 * np.abs(x), 0.0),
    ),
    "scaled_sign": (quantizers.ScaledSign(), np_scaled_sign, lambda x: np.ones_like(x)),
    "scaled_sign_tensor": (
        quantizers.ScaledSign(per_channel=False),
        lambda x: np_scaled_sign(x, per_channel=False),
        lambda x: np.ones_like(x),
    ),
    "ternary_twn": (
        quantizers.SteTernary(),
        lambda x: np_ternary(x, "twn"),
        lambda x: np.abs(x) <= 1.0,
    ),
    "ternary_optimal": (
        quantizers.SteTernary(method="optimal"),
        lambda x: np_ternary(x, "optimal"),
        lambda x: np.abs(x) <= 1.0,
    ),
    "ternary_optimal_tensor": (
        quantizers.SteTernary(method="optimal", per_channel=False),
        lambda x: np_ternary(x, "optimal", per_channel=False),
        lambda x: np.abs(x) <= 1.0,
    ),
    "ternary_fixed": (
        quantizers.SteTernary(method="fixed", clip_value=None),
        lambda x: np_ternary(x, "fixed"),
        lambda x: np.ones_like(x),
    ),
    "uniform_act_2": (
        quantizers.UniformQuantizer(2),
        lambda x: np_uniform(x, 2, "activation"),
        lambda x: (x >= 0) & (x <= 1),
    ),
    "uniform_act_4": (
        quantizers.UniformQuantizer(4),
        lambda x: np_uniform(x, 4, "activation"),
        lambda x: (x >= 0) & (x <= 1),
    ),
    "uniform_weight_2": (
        quantizers.UniformQuantizer(2, mode="weight"),
        lambda x: np_uniform(x, 2, "weight"),
        None,
    ),
    "sparse": (
        quantizers.SparseQuantizer(threshold=0.32, step=0.6487),
        lambda x: np_sparse(x, 0.32, 0.6487),
        lambda x: (x > 0) & (x < 3 * 0.6487),
    ),
    "sparse_3bit_fixed_point": (
        quantizers.SparseQuantizer(bits=3, threshold=0.25, step=0.5),
        lambda x: np_sparse(x, 0.25, 0.5, bits=3),
        lambda x: (x > 0) & (x < 7 * 0.5),
    ),
    "cpq": (CPQ, np_cpq, cpq_surrogate(CPQ)),
    "cpq_unsigned_3bit": (
        CPQ_UNSIGNED,
        lambda x: np_cpq(x, 0.25, 3, signed=False),
        cpq_surrogate(CPQ_UNSIGNED),
    ),
    "relaxed": (
        RelaxedQuantizer("ste_sign", lambda_init=3.0),
        lambda x: (x + 3.0 * np_sign(x)) / 4.0,
        lambda x: np.ones_like(x),  # the relaxation passes the gradient straight through
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_matches_numpy(case):
    quantizer, forward, _ = CASES[case]
    np.testing.assert_allclose(quantizer(X).numpy(), forward(X), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_is_the_surrogate(case):
    quantizer, _, derivative = CASES[case]
    _, grad, r = grad_of(quantizer, X)
    if derivative is None:
        # DoReFa weights: the smooth part tanh(w) / max|tanh(w)| is differentiated exactly and
        # the rounding passes the gradient straight through.
        _, expected, _ = grad_of(lambda x: tf.tanh(x) / tf.reduce_max(tf.abs(tf.tanh(x))), X)
    else:
        expected = r * derivative(X)
    # CPQ's reference is a float64 central difference: float32 gradients agree to ~1e-5
    atol = 3e-5 if case.startswith("cpq") else 1e-6
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("case", sorted(CASES))
def test_serialization_roundtrip(case):
    # From a copy not yet called: a wrapper's wrapped quantizer, once called, serializes its
    # build shape too, which a re-created one has not (until called).
    assert_roundtrip(quantizers.get(quantizers.serialize(CASES[case][0])), X)


@pytest.mark.parametrize(
    "alias, cls",
    [
        ("ste_sign", quantizers.SteSign),
        ("approx_sign", quantizers.ApproxSign),
        ("scaled_sign", quantizers.ScaledSign),
        ("ste_ternary", quantizers.SteTernary),
        ("uniform_quantizer", quantizers.UniformQuantizer),
        ("SteSign", quantizers.SteSign),
        ("sparse_quantizer", quantizers.SparseQuantizer),
        ("cpq", quantizers.CPQQuantizer),
        ("relaxed", RelaxedQuantizer),
    ],
)
def test_alias(alias, cls):
    assert type(quantizers.get(alias)) is cls


def test_every_registered_quantizer_is_in_the_test_set():
    """The conformance set covers the registry: a quantizer registered without a case here
    (forward, gradient, round trip, grid) fails."""
    covered = {type(case[0]) for case in CASES.values()}
    missing = sorted(name for name, cls in quantizers.registered().items() if cls not in covered)
    assert not missing, f"registered quantizers without a conformance case: {missing}"
    for alias, cls in quantizers.ALIASES.items():
        assert type(quantizers.get(alias)) is cls, alias
        assert quantizers.get(cls.__name__).__class__ is cls


@pytest.mark.parametrize("case", sorted(CASES))
def test_levels_are_the_grid_values(case):
    quantizer = CASES[case][0]
    grid = quantizer.grid
    assert isinstance(grid, quantizers.Grid)
    assert quantizer.levels == grid.values
    assert quantizer.scaled == (grid.scaled or grid.learned)
    assert len(grid.values) == grid.size and grid.signed == (min(grid.values) < 0)


def test_grid_contract_examples():
    assert quantizers.SteSign().grid.codes == (-1, 1) and not quantizers.SteSign().grid.zero_code
    assert quantizers.UniformQuantizer(2, mode="weight").grid.codes == (-3, -1, 1, 3)
    assert quantizers.UniformQuantizer(16).grid is None  # no int8 grid above 8 bits
    cpq = quantizers.CPQQuantizer(bits=3, alpha=0.25)
    assert (cpq.grid.step, cpq.grid.k_min, cpq.grid.k_max, cpq.grid.ties) == (0.25, -4, 3, "down")
    assert cpq.grid.learned and cpq.levels == tuple(0.25 * k for k in range(-4, 4))
    assert quantizers.SparseQuantizer(threshold=0.3, step=0.6).grid.threshold == 0.3


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"step": 0.0, "k_min": 0, "k_max": 1}, "Received: step=0.0"),
        ({"step": 1.0, "k_min": 2, "k_max": 1}, "Received: k_min=2, k_max=1"),
        ({"step": 1.0, "k_min": -1, "k_max": 1, "stride": 3}, "stride=3"),
        ({"step": 1.0, "k_min": 0, "k_max": 1, "ties": "random"}, "Received: ties='random'"),
    ],
)
def test_bad_grid(kwargs, expected):
    with pytest.raises(ValueError, match=expected):
        quantizers.Grid(**kwargs)


def test_get_passes_instances_and_none():
    q = quantizers.SteSign()
    assert quantizers.get(q) is q
    assert quantizers.get(None) is None


def test_sign_forward_is_a_form_lce_recognises():
    # LCE recognises sign(sign(x) + 0.1) as LceQuantize; a plain tf.sign stays float.
    graph = (
        tf.function(quantizers.ste_sign)
        .get_concrete_function(tf.TensorSpec((4,), tf.float32))
        .graph
    )
    ops = [op.type for op in graph.get_operations()]
    assert ops.count("Sign") == 2 and "AddV2" in ops


def test_optimal_ternary_beats_twn():
    for seed in range(5):
        w = np.random.default_rng(seed).laplace(size=(64, 4)).astype(np.float32)
        err_opt = np.sum((quantizers.SteTernary(method="optimal")(w).numpy() - w) ** 2)
        err_twn = np.sum((quantizers.SteTernary(method="twn")(w).numpy() - w) ** 2)
        assert err_opt <= err_twn + 1e-5


# ----------------------------------------------------------------- properties
arrays = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=6),
    elements=st.floats(-3, 3, width=32),
)

IDEMPOTENT = [
    "ste_sign",
    "approx_sign",
    "scaled_sign",
    "ternary_twn",
    "ternary_optimal",
    "ternary_fixed",
    "uniform_act_2",
    "uniform_act_4",
]  # not DoReFa weights: max-normalisation maps a constant tensor to +-1


@pytest.mark.parametrize("case", IDEMPOTENT)
@settings(max_examples=40, deadline=None)
@given(x=arrays)
def test_idempotent_on_its_levels(case, x):
    quantizer = CASES[case][0]
    once = quantizer(x).numpy()
    np.testing.assert_allclose(quantizer(once).numpy(), once, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
@settings(max_examples=40, deadline=None)
@given(x=arrays)
def test_output_in_declared_levels(case, x):
    """What the quantizer outputs at deployment (``exact``) lies on its declared grid."""
    quantizer = CASES[case][0]
    y = quantizer.exact(x).numpy()
    levels = np.asarray(quantizer.grid.values, np.float32)
    if quantizer.grid.scaled:  # values times a per-channel (last axis) or per-tensor scale
        mat = (
            y.reshape(-1, y.shape[-1])
            if getattr(quantizer, "per_channel", False)
            else y.reshape(-1, 1)
        )
        scale = np.abs(mat).max(axis=0, keepdims=True)
        y = (mat / np.where(scale > 0, scale, 1.0))[:, scale[0] > 0]  # an all-zero channel is 0
    distance = np.abs(y.reshape(-1, 1) - levels[None, :]).min(axis=1, initial=np.inf)
    assert np.all(distance < 1e-5)


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: quantizers.get("not_a_quantizer"), "Unknown quantizer 'not_a_quantizer'"),
        (lambda: quantizers.get(3.5), "Received: 3.5"),
        (lambda: quantizers.UniformQuantizer(bits=0), "Received: bits=0"),
        (lambda: quantizers.UniformQuantizer(bits=2.5), "Received: bits=2.5"),
        (lambda: quantizers.UniformQuantizer(mode="both"), "Received: mode='both'"),
        (lambda: quantizers.SteSign(clip_value=-1), "Received: clip_value=-1"),
        (lambda: quantizers.SteTernary(method="ttq"), "Received: method='ttq'"),
    ],
)
def test_bad_input_says_expected_and_received(make, expected):
    with pytest.raises(ValueError, match="Expected|Unknown") as info:
        make()
    assert expected in str(info.value)
