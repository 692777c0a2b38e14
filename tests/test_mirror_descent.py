"""tfquant.MirrorDescent: golden values against a numpy reference of each variant, the
schedule, checkpoints, tf.distribute, finalize + LCE, bad input, and a real training run."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import conv_bn_dense

import tfquant
from tfquant import layers, quantizers
from tfquant.callbacks import BetaAnnealing, BetaLogger
from tfquant.optimizers import mirror_maps as mm

B1, B2, EPS = 0.9, 0.999, 1e-8


# ---- numpy reference (the paper's formulas, float64) ---------------------------------------


@dataclasses.dataclass
class Variant:
    name: str
    mirror_map: str
    stable: bool
    levels: tuple

    def quantizer(self):
        if self.levels == (-1.0, 0.0, 1.0):
            return quantizers.SteTernary(method="fixed")
        return "ste_sign"


VARIANTS = [
    Variant("MD-tanh-S", "tanh", True, (-1.0, 1.0)),
    Variant("MD-tanh", "tanh", False, (-1.0, 1.0)),
    Variant("MD-softmax-S", "softmax", True, (-1.0, 1.0)),
    Variant("MD-softmax", "softmax", False, (-1.0, 1.0)),
    Variant("MD-softmax-S-ternary", "softmax", True, (-1.0, 0.0, 1.0)),
    Variant("MD-softmax-ternary", "softmax", False, (-1.0, 0.0, 1.0)),
    Variant("MD-ternary-S", "ternary", True, (-1.0, 0.0, 1.0)),
]

SCHEDULE = dict(beta=1.5, beta_growth=1.6, beta_every=2, beta_max=5.0)


def ref_beta(step):
    k = step // SCHEDULE["beta_every"]
    return min(SCHEDULE["beta"] * SCHEDULE["beta_growth"] ** k, SCHEDULE["beta_max"])


def np_softmax(z):
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def np_project(variant, u, beta):
    if variant.mirror_map == "tanh":
        return np.tanh(beta * u)
    if variant.mirror_map == "ternary":
        return 0.5 * (np.tanh(beta * (u + 0.5)) + np.tanh(beta * (u - 0.5)))
    return np_softmax(beta * u) @ np.asarray(variant.levels)


class Adam:
    def __init__(self, shape):
        self.m, self.v, self.t = np.zeros(shape), np.zeros(shape), 0

    def direction(self, g):
        self.t += 1
        self.m = B1 * self.m + (1 - B1) * g
        self.v = B2 * self.v + (1 - B2) * g * g
        m_hat, v_hat = self.m / (1 - B1**self.t), self.v / (1 - B2**self.t)
        return m_hat / (np.sqrt(v_hat) + EPS)


def reference(variant, state0, w0, b0, x, t, steps, lr):
    """The paper's updates of a linear model y = x W + b under mean squared error."""
    q = np.asarray(variant.levels)
    w, b, state = w0.astype(np.float64), b0.astype(np.float64), state0.astype(np.float64)
    adam_w = Adam(state.shape if variant.mirror_map == "softmax" else w.shape)
    adam_b = Adam(b.shape)
    for s in range(steps):
        err = 2.0 * (x @ w + b - t) / t.size
        g_w, g_b = x.T @ err, err.sum(0)
        b = b - lr * adam_b.direction(g_b)
        if variant.mirror_map == "softmax":
            g_w = g_w[..., None] * q
        d = adam_w.direction(g_w)
        if variant.stable:
            state = state - lr * d
            w = np_project(variant, state, ref_beta(s + 1))
        elif variant.mirror_map == "tanh":  # the authors' form of tanh(atanh(x) - lr beta d)
            e = (1 + w) / (1 - w) * np.exp(-2 * lr * ref_beta(s) * d)
            w = (e - 1) / (e + 1)
        else:  # exponentiated gradient, max subtracted
            z = -lr * ref_beta(s) * d
            state = state * np.exp(z - z.max(-1, keepdims=True))
            state = state / state.sum(-1, keepdims=True)
            w = state @ q
    return dict(w=w, b=b, state=state, m=adam_w.m, v=adam_w.v)


def linear_model(quantizer, units=3, inputs=4, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((inputs,)), layers.QuantDense(units, kernel_quantizer=quantizer)]
    )


def train_steps(model, opt, x, t, steps):
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - t))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_golden_values_against_numpy_reference(variant):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype(np.float32)
    t = rng.normal(size=(8, 3)).astype(np.float32)
    model = linear_model(variant.quantizer())
    kernel, bias = model.layers[0].kernel, model.layers[0].bias
    bias.assign(rng.normal(size=3).astype(np.float32) * 0.1)
    w0, b0 = kernel.numpy(), bias.numpy()
    opt = tfquant.MirrorDescent(
        learning_rate=0.05, mirror_map=variant.mirror_map, stable=variant.stable, **SCHEDULE
    )
    opt.build(model.trainable_variables)
    assert float(model.layers[0].kernel_gate.numpy()) == 0.0  # the primal forward
    idx = opt._get_variable_index(kernel)
    levels, state = opt._state_of(kernel)
    assert levels == variant.levels
    if state is None:  # MD-tanh: the kernel is the primal
        state0 = w0
    else:  # the dual / simplex starts where its projection is the kernel's initial value
        state0 = state.numpy()
        primal0 = (
            np_project(variant, state0, SCHEDULE["beta"])
            if variant.stable
            else state0 @ np.asarray(levels)
        )
        np.testing.assert_allclose(primal0, w0, atol=1e-6)
    steps = 6
    train_steps(model, opt, x, t, steps)
    ref = reference(variant, state0, w0, b0, x, t, steps, lr=0.05)
    np.testing.assert_allclose(kernel.numpy(), ref["w"], atol=1e-6)
    np.testing.assert_allclose(bias.numpy(), ref["b"], atol=1e-6)
    np.testing.assert_allclose(opt._momentums[idx].numpy(), ref["m"], atol=1e-6)
    np.testing.assert_allclose(opt._velocities[idx].numpy(), ref["v"], atol=1e-6)
    if state is not None:
        np.testing.assert_allclose(state.numpy(), ref["state"], atol=1e-6)
    assert opt.beta == pytest.approx(ref_beta(steps))


@pytest.mark.parametrize("stable", [True, False])
def test_two_level_softmax_equals_tanh(stable):
    """With levels (-1, 1), softmax(beta u) . q = tanh(beta (u_2 - u_1) / 2) and the two
    coordinates get opposite Adam directions: MD-softmax runs MD-tanh exactly."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 4)).astype(np.float32)
    t = rng.normal(size=(8, 3)).astype(np.float32)
    kernels = []
    for mirror_map in ["tanh", "softmax"]:
        model = linear_model("ste_sign")
        opt = tfquant.MirrorDescent(
            learning_rate=0.05, mirror_map=mirror_map, stable=stable, **SCHEDULE
        )
        opt.build(model.trainable_variables)
        train_steps(model, opt, x, t, 6)
        kernels.append(model.layers[0].kernel.numpy())
    np.testing.assert_allclose(kernels[1], kernels[0], atol=1e-5)


# ---- pure math -----------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.5, 1.0, 7.0])
def test_inverses_invert_the_projections(beta):
    w = np.linspace(-0.95, 0.95, 41)
    np.testing.assert_allclose(np.tanh(beta * mm.tanh_inverse(w, beta)), w, atol=1e-9)
    tern = Variant("t", "ternary", True, (-1.0, 0.0, 1.0))
    np.testing.assert_allclose(np_project(tern, mm.ternary_inverse(w, beta), beta), w, atol=1e-9)
    for levels in [(-1.0, 1.0), (-1.0, 0.0, 1.0)]:
        u = mm.softmax_inverse(w, beta, levels)
        np.testing.assert_allclose(np_softmax(beta * u) @ np.asarray(levels), w, atol=1e-9)


def test_projections_tend_to_the_hard_quantization():
    u = tf.constant([-1.3, -0.7, -0.2, 0.3, 0.8, 2.0])
    np.testing.assert_allclose(mm.tanh_projection(u, 1e4).numpy(), np.sign(u), atol=1e-6)
    np.testing.assert_allclose(
        mm.ternary_projection(u, 1e4).numpy(), [-1, -1, 0, 0, 1, 1], atol=1e-6
    )
    duals = tf.constant([[0.1, 0.5, -0.2], [2.0, 0.0, 1.0]])
    np.testing.assert_allclose(
        mm.softmax_projection(duals, 1e4, (-1.0, 0.0, 1.0)).numpy(), [0.0, -1.0], atol=1e-6
    )
    np.testing.assert_allclose(mm.argmax_levels(duals, (-1.0, 0.0, 1.0)).numpy(), [0.0, -1.0])
    # The paper's cap: no overflow even at beta = 1e35.
    np.testing.assert_allclose(
        mm.softmax_projection(duals * 1e4, 1e35, (-1.0, 0.0, 1.0)).numpy(), [0.0, -1.0]
    )
    np.testing.assert_allclose(mm.tanh_projection(u, 1e35).numpy(), np.sign(u))


def test_beta_schedules():
    steps = np.arange(0, 12)
    paper = mm.paper_beta(steps, 1.0, 2.0, 3, 10.0).numpy()
    np.testing.assert_allclose(paper, np.minimum(2.0 ** (steps // 3), 10.0), rtol=1e-6)
    assert float(mm.paper_beta(10**9, 1.0, 1.2, 1, 1e35)) == pytest.approx(1e35, rel=1e-5)
    ann = mm.annealed_beta(np.array([0, 5, 10, 20]), 1.0, 100.0, 10).numpy()
    np.testing.assert_allclose(ann, [1.0, 10.0, 100.0, 100.0], rtol=1e-5)
    opt = tfquant.MirrorDescent(beta=2.0, beta_max=200.0, beta_horizon=10)
    assert opt.beta == pytest.approx(2.0) and opt.beta_horizon == 10
    assert float(opt.beta_at(5)) == pytest.approx(20.0, rel=1e-5)
    opt.beta_horizon = None
    assert float(opt.beta_at(4)) == pytest.approx(2.0 * 1.02**2, rel=1e-5)


# ---- Keras integration ---------------------------------------------------------------------


def test_config_round_trip_and_serialization():
    opt = tfquant.MirrorDescent(
        learning_rate=0.01,
        mirror_map="softmax",
        stable=False,
        beta=2.0,
        beta_growth=1.1,
        beta_every=5,
        beta_max=50.0,
        beta_horizon=100,
        forward="quantized",
        epsilon=1e-7,
    )
    config = opt.get_config()
    for key in [
        "mirror_map",
        "stable",
        "beta",
        "beta_growth",
        "beta_every",
        "beta_max",
        "beta_horizon",
        "forward",
        "beta_1",
        "beta_2",
        "epsilon",
    ]:
        assert key in config
    clone = tfquant.MirrorDescent.from_config(config)
    assert clone.get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(restored, tfquant.MirrorDescent)
    assert restored.get_config() == config


def test_forward_option_sets_the_gate():
    for forward, gate in [("primal", 0.0), ("quantized", 1.0)]:
        model = linear_model("ste_sign")
        tfquant.MirrorDescent(forward=forward).build(model.trainable_variables)
        assert float(model.layers[0].kernel_gate.numpy()) == gate


def test_fit_forwards_the_primal_from_the_first_step():
    """build runs inside the first traced step but before it executes."""
    model = linear_model("ste_sign")
    x, t = np.ones((4, 4), np.float32), np.zeros((4, 3), np.float32)
    w0 = model.layers[0].kernel.numpy()
    model.compile(tfquant.MirrorDescent(learning_rate=0.1), "mse")
    loss = model.fit(x, t, batch_size=4, epochs=1, verbose=0).history["loss"][0]
    bias = 0.0  # the bias starts at zero
    assert loss == pytest.approx(float(np.mean((x @ w0 + bias) ** 2)), rel=1e-5)


def test_eager_training_matches_graph_training_after_an_explicit_build():
    """run_eagerly: build before the first forward (else step 1 forwards Q(w))."""
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    t = np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32)
    kernels = []
    for eager in [False, True]:
        model = linear_model("ste_sign")
        opt = tfquant.MirrorDescent(learning_rate=0.05)
        opt.build(model.trainable_variables)
        model.compile(opt, "mse", run_eagerly=eager)
        model.fit(x, t, batch_size=4, epochs=2, shuffle=False, verbose=0)
        kernels.append(model.layers[0].kernel.numpy())
    np.testing.assert_allclose(kernels[1], kernels[0], atol=1e-6)


def _data(n=16, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6, 6, 2)).astype(np.float32), rng.integers(0, 4, n)


def _conv_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign", use_bias=False),
            keras.layers.Flatten(),
            layers.QuantDense(4, kernel_quantizer="ste_sign"),
        ]
    )


def _compile(model, **kwargs):
    model.compile(
        tfquant.MirrorDescent(learning_rate=0.01, beta_growth=1.3, beta_every=1, **kwargs),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


@pytest.mark.parametrize("mirror_map", ["tanh", "softmax"])
def test_checkpoint_resume_continues_exactly(tmp_path, mirror_map):
    x, y = _data()
    fit = dict(batch_size=4, shuffle=False, verbose=0)
    model = _conv_model()
    _compile(model, mirror_map=mirror_map)
    model.fit(x, y, epochs=1, **fit)
    ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    path = ckpt.save(str(tmp_path / "ckpt"))
    model.fit(x, y, epochs=2, **fit)
    expected = [v.numpy() for v in model.optimizer.variables]

    resumed = _conv_model(seed=7)  # other initial weights: everything comes from the checkpoint
    _compile(resumed, mirror_map=mirror_map)
    tf.train.Checkpoint(model=resumed, optimizer=resumed.optimizer).restore(path)
    resumed.fit(x, y, epochs=2, **fit)
    got = [v.numpy() for v in resumed.optimizer.variables]
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(resumed.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mirror_map, stable", [("tanh", True), ("softmax", False)])
def test_keras_file_keeps_the_optimizer_and_resumed_fit_continues_exactly(
    tmp_path, mirror_map, stable
):
    """Keras 3 saves the optimizer's variables (duals, simplices, moments, iterations, the
    beta horizon) in the .keras file; load_model (safe mode) rebuilds MirrorDescent."""
    x, y = _data()
    fit = dict(batch_size=4, shuffle=False, verbose=0)
    model = _conv_model()
    _compile(model, mirror_map=mirror_map, stable=stable)
    model.fit(x, y, epochs=1, callbacks=[BetaAnnealing()], **fit)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, tfquant.MirrorDescent)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.optimizer.beta_horizon == model.optimizer.beta_horizon == 4
    assert loaded.optimizer.beta == pytest.approx(model.optimizer.beta)
    duals = 0
    for var, other in zip(model.trainable_variables, loaded.trainable_variables):
        dual = model.optimizer.dual(var)
        if dual is not None:
            duals += 1
            np.testing.assert_array_equal(loaded.optimizer.dual(other).numpy(), dual.numpy())
    assert duals == (2 if stable else 0)
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # shapes included
    for layer in (0, 2):  # the primal forward (gate 0) is saved with the layers
        assert float(loaded.layers[layer].kernel_gate.numpy()) == 0.0

    model.fit(x, y, epochs=2, **fit)
    loaded.fit(x, y, epochs=2, **fit)
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def _conv_bn_model(quantizer="ste_sign", seed=0):
    """_conv_model with a synchronized BatchNorm (its statistics from the global batch) and
    binary activations."""
    return conv_bn_dense((6, 6, 2), 4, 4, quantizer, seed)


@pytest.mark.parametrize(
    "mirror_map, stable", [("tanh", True), ("softmax", False), ("ternary", True)]
)
def test_mirrored_strategy_matches_single_device(mirror_map, stable, mirrored):
    """Two replicas of 4 examples against one device with batches of 8, eight steps:
    the same kernels, duals / simplices, moments, BatchNorm statistics and beta."""
    x, y = _data(n=32)
    fit = dict(batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[BetaAnnealing()])
    quantizer = "ste_sign"
    if mirror_map == "ternary":
        quantizer = {"class_name": "SteTernary", "config": {"method": "fixed"}}

    single = _conv_bn_model(quantizer)
    _compile(single, mirror_map=mirror_map, stable=stable)
    single.fit(x, y, **fit)

    with mirrored.scope():
        replicated = _conv_bn_model(quantizer)
        _compile(replicated, mirror_map=mirror_map, stable=stable)
    replicated.fit(x, y, **fit)
    opt = replicated.optimizer
    assert len(opt._mirror_vars) == 2
    for a, b in zip(replicated.weights, single.weights):  # BatchNorm statistics included
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)
    for a, b in zip(opt.variables, single.optimizer.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)
    for var in opt._mirror_vars:  # every replica holds the same kernel
        first, *others = (c.numpy() for c in var.value.values)
        for other in others:
            np.testing.assert_array_equal(other, first)
    assert opt.beta == pytest.approx(single.optimizer.beta)
    assert int(opt.iterations.numpy()) == 8


def test_finalize_gives_hard_quantization_and_converts_to_lce_bconv2d():
    from helpers import binary_cnn

    from tfquant.converters import convert
    from tfquant.converters.flatbuffer import op_counts

    model = binary_cnn("ste_sign", input_shape=(8, 8, 32))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 32)).astype(np.float32)
    target = rng.normal(size=(8, 8, 8, 64)).astype(np.float32)
    opt = tfquant.MirrorDescent(learning_rate=0.01)
    model.compile(opt, "mse")
    model.fit(x, target, batch_size=4, epochs=2, verbose=0)
    duals = [opt.dual(v).numpy() for v in opt._mirror_vars]
    tfquant.finalize(model, x)
    for var, dual in zip(opt._mirror_vars, duals):
        np.testing.assert_array_equal(var.numpy(), np.where(dual >= 0, 1.0, -1.0))
    ops = op_counts(convert(model))
    assert ops.get("LceBconv2d") == 2 and "CONV_2D" not in ops, ops


def test_hard_quantize_takes_the_argmax_of_the_simplex():
    model = linear_model(quantizers.SteTernary(method="fixed"), units=5, inputs=6)
    opt = tfquant.MirrorDescent(mirror_map="softmax", stable=False)
    opt.build(model.trainable_variables)
    kernel = model.layers[0].kernel
    simplex = opt._state_of(kernel)[1]
    simplex.assign(np_softmax(np.random.default_rng(0).normal(size=(6, 5, 3)) * 3))
    opt.hard_quantize()
    expected = np.asarray([-1.0, 0.0, 1.0])[simplex.numpy().argmax(-1)]
    np.testing.assert_array_equal(kernel.numpy(), expected)
    tfquant.finalize(model)
    np.testing.assert_array_equal(kernel.numpy(), expected)


def test_callbacks_anneal_over_fit_and_log_beta():
    x, y = _data(n=16)
    model = _conv_model()
    model.compile(tfquant.MirrorDescent(beta_max=100.0), "sparse_categorical_crossentropy")
    assert model.optimizer.beta_horizon is None
    history = model.fit(
        x, y, batch_size=4, epochs=3, verbose=0, callbacks=[BetaAnnealing(), BetaLogger()]
    )
    opt = model.optimizer
    assert opt.beta_horizon == 12  # set after the train step was traced: it is a variable
    assert opt.beta == pytest.approx(100.0, rel=1e-5)
    betas = history.history["beta"]
    np.testing.assert_allclose(betas, [100.0 ** (k / 3) for k in (1, 2, 3)], rtol=1e-5)
    assert history.history["quantization_gap"][-1] < history.history["quantization_gap"][0]


def test_beta_logger_writes_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    x, y = _data(n=16)
    model = _conv_model()
    model.compile(tfquant.MirrorDescent(), "sparse_categorical_crossentropy")
    logger = BetaLogger(log_dir=str(tmp_path), update_freq=2)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[logger])
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_beta_logger_without_tensorboard_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(tfquant.callbacks, "_has_tensorboard", lambda: False)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        BetaLogger(log_dir=str(tmp_path))
    BetaLogger()  # logs only: no TensorBoard needed


def test_weight_decay_skips_the_quantized_kernels():
    """Decoupled weight decay applies to the Adam variables (the bias), not to a primal. With
    zero gradients MD-tanh leaves the primal where it is; a decayed kernel would shrink."""
    model = linear_model("ste_sign")
    kernel, bias = model.layers[0].kernel, model.layers[0].bias
    bias.assign(np.ones(3, np.float32))
    w0 = kernel.numpy()
    opt = tfquant.MirrorDescent(learning_rate=0.1, stable=False, weight_decay=0.5)
    opt.build(model.trainable_variables)
    assert not opt._use_weight_decay(kernel) and opt._use_weight_decay(bias)
    zeros = [tf.zeros_like(v) for v in model.trainable_variables]
    for _ in range(3):
        opt.apply_gradients(zip(zeros, model.trainable_variables))
    np.testing.assert_allclose(kernel.numpy(), w0, atol=1e-6)
    np.testing.assert_allclose(bias.numpy(), np.full(3, (1 - 0.5 * 0.1) ** 3), rtol=1e-6)


def test_dual_and_hard_quantize_need_a_built_optimizer():
    model = linear_model("ste_sign")
    opt = tfquant.MirrorDescent()
    with pytest.raises(ValueError, match="Expected a built optimizer"):
        opt.dual(model.layers[0].kernel)
    with pytest.raises(ValueError, match="Expected a built optimizer"):
        opt.hard_quantize()
    opt.build(model.trainable_variables)
    assert opt.dual(model.layers[0].bias) is None  # an Adam variable
    dual = opt.dual(model.layers[0].kernel)
    np.testing.assert_allclose(opt.project(dual).numpy(), model.layers[0].kernel.numpy(), atol=1e-6)


# ---- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(beta=0.0), "Expected beta > 0. Received: beta=0.0"),
        (dict(beta=-1.0), "Received: beta=-1.0"),
        (dict(beta_growth=0.9), "Expected beta_growth >= 1. Received: beta_growth=0.9"),
        (dict(mirror_map="sigmoid"), "Received: mirror_map='sigmoid'"),
        (dict(beta_every=0), "Received: beta_every=0"),
        (dict(beta=10.0, beta_max=5.0), "Expected beta_max >= beta"),
        (dict(beta_horizon=0), "Received: beta_horizon=0"),
        (dict(forward="sign"), "Received: forward='sign'"),
        (dict(mirror_map="ternary", stable=False), "Received: stable=False"),
        (dict(beta_1=1.0), "Received: beta_1=1.0"),
    ],
)
def test_bad_arguments(kwargs, expected):
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        tfquant.MirrorDescent(**kwargs)


@pytest.mark.parametrize(
    "mirror_map, quantizer, received",
    [
        ("tanh", "scaled_sign", "ScaledSign with levels (-1.0, 1.0), scaled"),
        ("ternary", "ste_sign", "SteSign with levels (-1.0, 1.0)"),
        ("ternary", quantizers.SteTernary(), "SteTernary with levels (-1.0, 0.0, 1.0), scaled"),
        ("tanh", quantizers.SteTernary(method="fixed"), "SteTernary"),
        ("ternary", quantizers.SteTernary(method="fixed", threshold_value=0.3), "SteTernary"),
    ],
)
def test_quantizer_that_does_not_fit_the_mirror_map(mirror_map, quantizer, received):
    model = linear_model(quantizer)
    opt = tfquant.MirrorDescent(mirror_map=mirror_map)
    with pytest.raises(ValueError) as err:
        opt.build(model.trainable_variables)
    message = str(err.value)
    assert "quant_dense/kernel" in message and f"mirror_map={mirror_map!r}" in message
    assert f"Received: {received}" in message
    assert not opt.built and len(opt.variables) == 3  # iteration, learning rate, horizon


def test_tf_keras_variables_are_refused_naming_both_packages():
    tf_keras = pytest.importorskip("tf_keras")
    legacy = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])
    with pytest.raises(TypeError, match="Keras 3") as err:
        tfquant.MirrorDescent().build(legacy.trainable_variables)
    assert "tf-keras" in str(err.value) and "Received" in str(err.value)
    for callback in [BetaAnnealing(), BetaLogger()]:
        callback.set_model(legacy)
        with pytest.raises(TypeError, match="Expected a Keras 3 model"):
            callback.on_train_begin()


def test_model_without_quantized_variables_warns_adam():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.warns(UserWarning, match="behaves as Adam"):
        tfquant.MirrorDescent().build(model.trainable_variables)


# ---- a real run ------------------------------------------------------------------------------


def test_binary_mlp_on_digits_trains_far_above_chance():  # about 4 s
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            layers.QuantDense(128, kernel_quantizer="ste_sign", use_bias=False),
            keras.layers.BatchNormalization(center=False, scale=False),
            keras.layers.ReLU(),
            layers.QuantDense(10, kernel_quantizer="ste_sign", use_bias=False),
            keras.layers.BatchNormalization(center=False, scale=False),
        ]
    )
    model.compile(
        tfquant.MirrorDescent(),  # MD-tanh-S with the defaults
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_tr, y_tr, batch_size=32, epochs=10, verbose=0, callbacks=[BetaAnnealing()])
    tfquant.finalize(model, x_tr)
    for var in model.optimizer._mirror_vars:
        assert set(np.unique(var.numpy())) <= {-1.0, 1.0}
    accuracy = model.evaluate(x_te, y_te, verbose=0)[1]
    assert accuracy > 0.85  # chance is 0.1
