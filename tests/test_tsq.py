"""TSQ building blocks: golden values of the quantizer and the step-2 solver, validation,
serialization."""

import itertools
import math

import numpy as np
import pytest
from helpers import assert_roundtrip

from tfquant import quantizers
from tfquant._keras import keras, tf
from tfquant.layers import QuantConv2D
from tfquant.methods import tsq

D = 0.6487
# the sparse quantizer: x, Q(x) in units of the step, STE mask
TABLE = [
    (-1.0, 0, 0),
    (0.0, 0, 0),
    (0.2, 0, 1),
    (0.32, 0, 1),
    (0.33, 1, 1),
    (0.97305, 1, 1),
    (0.9731, 2, 1),
    (1.62175, 2, 1),
    (1.6218, 3, 1),
    (1.9461, 3, 1),
    (1.95, 3, 0),
    (2.5, 3, 0),
]


# ----------------------------------------------------------------- 9.1 forward and STE
def forward_and_mask(q, values, dtype):
    x = tf.constant(values, dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = q(x)
    return y.numpy(), tape.gradient(y, x).numpy()


def test_forward_table_and_ste_mask():
    # The table was computed in float64, where 3 * 0.6487 = 1.9461000000000002 > 1.9461.
    q = quantizers.SparseQuantizer(threshold=0.32, step=D, dtype="float64")
    y, mask = forward_and_mask(q, [row[0] for row in TABLE], tf.float64)
    np.testing.assert_array_equal(y, [row[1] * D for row in TABLE])
    np.testing.assert_array_equal(mask, [row[2] for row in TABLE])


def test_forward_table_float32_pins_the_gate_edge():
    # In float32, 1.9461 == 3 * float32(0.6487) exactly (as in the authors' float Caffe
    # layer), so the open gate (0, 3d) closes there; every other row is as in float64.
    q = quantizers.SparseQuantizer(threshold=0.32, step=D)
    y, mask = forward_and_mask(q, [row[0] for row in TABLE], tf.float32)
    np.testing.assert_array_equal(y, np.float32([row[1] * D for row in TABLE]))
    expected = [0 if x == 1.9461 else m for x, _, m in TABLE]
    np.testing.assert_array_equal(mask, expected)


def test_alias_levels_and_precision():
    q = quantizers.get("sparse_quantizer")
    assert type(q) is quantizers.SparseQuantizer
    assert (q.bits, q.threshold, q.precision, q.scaled) == (2, 0.32, 2, False)
    assert q.step == pytest.approx(quantizers.optimal_step(0.32, 2))
    np.testing.assert_allclose(q.levels, [0.0, q.step, 2 * q.step, 3 * q.step])
    x = np.random.default_rng(0).normal(0, 2, 1000).astype(np.float32)
    out = q(x).numpy()
    assert np.all(np.min(np.abs(out[:, None] - np.float32(q.levels)), axis=1) < 1e-6)


# ----------------------------------------------------------------- 9.2 step rule
def test_optimal_step_reproduces_authors_constants():
    assert quantizers.optimal_step(0.0) == pytest.approx(0.5388, abs=1e-3)
    assert quantizers.optimal_step(0.32) == pytest.approx(0.6488, abs=1e-3)
    table = {0.1: 0.5712, 0.2: 0.6054, 0.3: 0.6414, 0.4: 0.6790, 0.5: 0.7180, 0.6: 0.7578}
    for eps, step in table.items():
        assert quantizers.optimal_step(eps) == pytest.approx(step, abs=1e-3)


def test_optimal_step_grows_with_threshold():
    # Over the range of eps the rule is meant for. (Past eps ~ 0.85 the rule's minimiser
    # moves to steps with
    # 1.5 d close to eps, level d nearly unused, and d* falls; a property of the rule.)
    steps = [quantizers.optimal_step(eps) for eps in np.linspace(0.0, 0.8, 17)]
    assert np.all(np.diff(steps) > 0)


# ----------------------------------------------------------------- 9.3 fixed point
def test_fixed_point_is_round_to_nearest():
    eps = 0.32
    for _ in range(200):
        new = quantizers.optimal_step(eps) / 2
        if abs(new - eps) < 1e-12:
            break
        eps = new
    step = quantizers.optimal_step(eps)
    assert eps == pytest.approx(0.3254, abs=1e-3)
    assert step == pytest.approx(0.6508, abs=1e-3)
    q = quantizers.SparseQuantizer(threshold=eps)
    x = np.random.default_rng(1).normal(0, 1.5, 10000).astype(np.float32)
    reference = np.clip(np.round(x / np.float32(step)), 0, 3) * np.float32(step)
    np.testing.assert_allclose(q(x).numpy(), reference, atol=1e-6)


# ----------------------------------------------------------------- 9.4 OTWA
def brute_force_error(w):
    best = math.inf
    for code in itertools.product((-1.0, 0.0, 1.0), repeat=len(w)):
        t = np.array(code)
        if not t.any():
            best = min(best, float(w @ w))
            continue
        alpha = max(w @ t / (t @ t), 0.0)
        best = min(best, float(np.sum((w - alpha * t) ** 2)))
    return best


def test_otwa_example():
    what, alpha = tsq.optimal_ternary(np.array([0.9, -0.5, 0.1, 0.05]))
    np.testing.assert_array_equal(what, [1, -1, 0, 0])
    np.testing.assert_allclose(alpha, [0.7])


def test_otwa_matches_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(60):
        w = rng.normal(size=3 + trial % 6)  # N = 3..8
        what, alpha = tsq.optimal_ternary(w)
        error = float(np.sum((w - alpha * what) ** 2))
        assert error == pytest.approx(brute_force_error(w), abs=1e-12)


def test_otwa_per_channel_alphas():
    rng = np.random.default_rng(2)
    base = rng.normal(size=8)
    rows = np.stack([base, 10 * base])
    what, alpha = tsq.optimal_ternary(rows, axis=-1)
    assert alpha.shape == (2, 1)
    np.testing.assert_allclose(alpha[1], 10 * alpha[0])
    for c in range(2):
        w1, a1 = tsq.optimal_ternary(rows[c])
        np.testing.assert_array_equal(what[c], w1)
        np.testing.assert_allclose(alpha[c], a1)
    what_t, alpha_t = tsq.optimal_ternary(rows.T, axis=0)  # (N, C) kernel layout
    np.testing.assert_array_equal(what_t, what.T)
    np.testing.assert_allclose(alpha_t, alpha.T)


def test_otwa_tie_pins_caffe_largest_r():
    w = np.array([2.0, 0.75, -0.625, 0.625])
    what, alpha = tsq.optimal_ternary(w)
    np.testing.assert_array_equal(what, [1, 1, -1, 1])
    np.testing.assert_array_equal(alpha, [1.0])
    first, alpha_first = tsq.optimal_ternary(w, tie="smallest")
    np.testing.assert_array_equal(first, [1, 0, 0, 0])
    np.testing.assert_array_equal(alpha_first, [2.0])
    for t, a in ((what, alpha), (first, alpha_first)):
        assert np.sum((w - a * t) ** 2) == 1.34375


def test_ste_ternary_optimal_breaks_ties_like_caffe():
    # The Keras quantizer TSQ's step 2 starts from gives the same code as the NumPy solver
    # on the exact tie (values exact in float32), per tensor and per output channel.
    w = np.array([2.0, 0.75, -0.625, 0.625], "float32")
    q = quantizers.SteTernary(method="optimal", per_channel=False)
    np.testing.assert_array_equal(q(w).numpy(), [1.0, 1.0, -1.0, 1.0])
    kernel = np.stack([w, 3 * w], axis=-1)  # (N, C): two channels, both tied
    per_channel = quantizers.SteTernary(method="optimal", per_channel=True)(kernel).numpy()
    what, alpha = tsq.optimal_ternary(kernel, axis=0)
    np.testing.assert_allclose(per_channel, alpha * what, rtol=1e-6)


# ----------------------------------------------------------------- 9.5 coordinate update
CODE = np.array([1.0, 0.0, -1.0, 1.0, 0.0, -1.0])


def planted(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 6))
    return X, 0.7 * X @ CODE + 0.01 * rng.normal(size=200)


def test_solver_recovers_planted_code():
    X, y = planted()
    solution = tsq.solve_layer(X, y, activation="linear", iterations=20)
    np.testing.assert_array_equal(solution.what, CODE)
    assert abs(solution.alpha - 0.7) < 1e-2


def test_coordinate_update_never_increases_objective():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 7))
    z = X @ rng.normal(size=7) + 0.3 * rng.normal(size=50)
    what = rng.integers(-1, 2, 7).astype(float)
    alpha = 0.8

    def objective(t):
        return float(np.sum((z - alpha * X @ t) ** 2))

    before = objective(what)
    for _ in range(3):
        for j in range(7):
            what = tsq.coordinate_update(X, z, what, alpha, order=[j])
            after = objective(what)
            assert after <= before + 1e-9
            before = after


def test_solver_never_worse_than_otwa_of_least_squares():
    rng = np.random.default_rng(4)
    for trial in range(20):
        n_in = 2 + trial % 7  # N = 2..8
        X = rng.normal(size=(40, n_in))
        y = X @ rng.normal(size=n_in) + 0.5 * rng.normal(size=40)
        w_ls = np.linalg.lstsq(X, y, rcond=None)[0]
        t, a = tsq.optimal_ternary(w_ls)
        baseline = float(np.sum((y - a[0] * X @ t) ** 2))
        solution = tsq.solve_layer(X, y, activation="linear", iterations=10)
        assert solution.objective <= baseline + 1e-9


def test_solver_relu_multi_channel_exact_layer():
    rng = np.random.default_rng(5)
    X = np.abs(rng.normal(size=(300, 8)))
    what = rng.integers(-1, 2, (8, 3)).astype(float)
    alpha = np.array([0.5, 1.0, 2.0])
    Y = np.maximum(alpha * (X @ what), 0.0)
    solution = tsq.solve_layer(X, Y, weights=alpha * what, iterations=5)
    np.testing.assert_array_equal(solution.what, what)
    np.testing.assert_allclose(solution.alpha, alpha, rtol=1e-9)
    np.testing.assert_allclose(solution.objective, 0.0, atol=1e-18)


# ----------------------------------------------------------------- 9.6 z step
@pytest.mark.parametrize(
    "y, v, lam, expected",
    [
        (1.0, -0.5, 0.1, 0.86364),
        (1.0, -0.5, 10.0, -0.5),
        (0.0, 0.8, 1.0, 0.4),
        (2.0, 1.0, 0.5, 1.66667),
        (0.0, -1.0, 1.0, -1.0),
    ],
)
def test_z_step_relu(y, v, lam, expected):
    z = float(tsq.z_step(y, v, lam))
    assert z == pytest.approx(expected, abs=1e-5)
    grid = np.linspace(-3.0, 3.0, 600001)
    cost = (y - np.maximum(grid, 0.0)) ** 2 + lam * (grid - v) ** 2
    assert z == pytest.approx(grid[np.argmin(cost)], abs=1e-4)


def test_z_step_sparse_matches_grid():
    bins = tsq.sparse_bins(0.32, D)
    q = quantizers.SparseQuantizer(threshold=0.32, step=D, dtype="float64")
    grid = np.linspace(-1.0, 3.0, 40001)
    f_grid = q(grid).numpy()
    rng = np.random.default_rng(6)
    for y, v, lam in zip(rng.uniform(0, 2, 20), rng.normal(0, 1, 20), rng.uniform(0.1, 5, 20)):
        z = float(tsq.z_step(y, v, lam, bins))
        cost_z = (y - float(q(np.array([z])).numpy()[0])) ** 2 + lam * (z - v) ** 2
        best = np.min((y - f_grid) ** 2 + lam * (grid - v) ** 2)
        assert cost_z <= best + 1e-3


# ----------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: quantizers.SparseQuantizer(bits=0), "Received: bits=0"),
        (lambda: quantizers.SparseQuantizer(bits=9), "Received: bits=9"),
        (lambda: quantizers.SparseQuantizer(bits=2.0), "Received: bits=2.0"),
        (lambda: quantizers.SparseQuantizer(threshold=-0.1), "Received: threshold=-0.1"),
        (lambda: quantizers.SparseQuantizer(threshold=math.inf), "Received: threshold=inf"),
        (lambda: quantizers.SparseQuantizer(step=0.0), "Received: step=0.0"),
        (lambda: quantizers.SparseQuantizer(step=math.nan), "Received: step=nan"),
        (lambda: quantizers.optimal_step(9.0), "Received: threshold=9.0"),
        (lambda: tsq.optimal_ternary(np.ones(3), tie="first"), "Received: tie='first'"),
        (lambda: tsq.z_step(1.0, 0.0, 0.0), "Received: lam=0.0"),
        (lambda: tsq.z_step(1.0, 0.0, 1.0, "tanh"), "Received: activation='tanh'"),
        (lambda: tsq.solve_layer(np.ones((4, 2)), np.ones(3)), "Received: X.shape=(4, 2)"),
        (lambda: tsq.solve_layer(np.ones((4, 2)), np.ones(4), iterations=0), "iterations=0"),
    ],
)
def test_bad_input_says_expected_and_received(make, expected):
    with pytest.raises(ValueError, match="Expected") as info:
        make()
    assert expected in str(info.value)


# ----------------------------------------------------------------- serialization
@pytest.mark.parametrize("kwargs", [{}, {"bits": 3, "threshold": 0.0}, {"step": D}])
def test_serialization_roundtrip(kwargs):
    x = np.random.default_rng(7).normal(size=(4, 5)).astype(np.float32)
    assert_roundtrip(quantizers.SparseQuantizer(**kwargs), x)


def test_keras_file_roundtrip(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            QuantConv2D(4, 3, input_quantizer=quantizers.SparseQuantizer(), use_bias=False),
        ]
    )
    path = tmp_path / "sparse.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(8).normal(size=(2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    q = loaded.layers[0].input_quantizer
    assert type(q) is quantizers.SparseQuantizer
    assert q.get_config() == model.layers[0].input_quantizer.get_config()
