"""BinaryRelax: the relaxed quantizer (numpy forward, straight-through gradient, round trip),
the lambda schedule and phase switch, checkpoint/resume, LCE conversion, bad input."""

import doctest
import math

import keras
import larq_compute_engine as lce
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_roundtrip, binary_cnn, grad_of, np_sign
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tfquant
from tfquant import quantizers
from tfquant.converters import convert
from tfquant.converters.flatbuffer import op_counts
from tfquant.methods import binary_relax
from tfquant.methods.binary_relax import (
    BinaryRelaxSchedule,
    RelaxedQuantizer,
    relaxation_weight,
    relaxed_quantizers,
)

RNG = np.random.default_rng(0)
X = RNG.normal(0, 1.0, size=(3, 3, 8, 6)).astype(np.float32)
X[0, 0, 0, 0] = 0.0


# ----------------------------------------------------------------- numpy references
def np_channels(x, per_channel):
    return x.reshape(-1, x.shape[-1]) if per_channel else x.reshape(-1, 1)


def np_scaled_sign(x, per_channel=True):
    alpha = np.abs(np_channels(x, per_channel)).mean(axis=0)
    return np_sign(x) * (alpha if per_channel else alpha[0])


def np_ternary_twn(x):
    mat = np_channels(x, True)
    keep = np.abs(mat) > 0.7 * np.abs(mat).mean(axis=0)
    alpha = (np.abs(mat) * keep).sum(axis=0) / np.maximum(keep.sum(axis=0), 1)
    return (alpha * np.sign(mat) * keep).reshape(x.shape)


def np_uniform_weight(x, bits):
    n = 2**bits - 1
    t = np.tanh(x)
    t = t / (2 * np.abs(t).max()) + 0.5
    return 2 * np.floor(t * n + 0.5) / n - 1


def np_relax(x, q, lam):
    """BinaryRelax's proximal step u = (x + lam q) / (1 + lam); u = q at lam = inf."""
    return q if math.isinf(lam) else (x + lam * q) / (1 + lam)


WRAPPED = {
    "scaled_sign": (lambda: quantizers.ScaledSign(), np_scaled_sign),
    "scaled_sign_tensor": (
        lambda: quantizers.ScaledSign(per_channel=False),
        lambda x: np_scaled_sign(x, per_channel=False),
    ),
    "ste_sign": (lambda: quantizers.SteSign(), np_sign),
    "ternary_twn": (lambda: quantizers.SteTernary(), np_ternary_twn),
    "uniform_weight_2": (
        lambda: quantizers.UniformQuantizer(2, mode="weight"),
        lambda x: np_uniform_weight(x, 2),
    ),
}
LAMBDAS = [0.0, 1.0, 3.7, 1e6, math.inf]


def relaxed(case, lam):
    return RelaxedQuantizer(WRAPPED[case][0](), lambda_init=lam)


# ----------------------------------------------------------------- the quantizer test set
@pytest.mark.parametrize("lam", LAMBDAS)
@pytest.mark.parametrize("case", sorted(WRAPPED))
def test_forward_matches_numpy(case, lam):
    expected = np_relax(X, WRAPPED[case][1](X), lam)
    np.testing.assert_allclose(relaxed(case, lam)(X).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("lam", LAMBDAS)
@pytest.mark.parametrize("case", sorted(WRAPPED))
def test_gradient_is_straight_through(case, lam):
    # The paper applies the gradient at u to x unchanged, whatever Q's own surrogate is.
    u, grad, r = grad_of(relaxed(case, lam), X)
    np.testing.assert_array_equal(grad, r)
    assert np.all(np.isfinite(u))


@pytest.mark.parametrize("case", sorted(WRAPPED))
def test_infinite_lambda_is_the_wrapped_quantizer_exactly(case):
    x = X * 1e4  # large weights: (x + inf q) / (1 + inf) would be NaN
    q = relaxed(case, math.inf)
    np.testing.assert_array_equal(q(x).numpy(), q.quantizer(x).numpy())


@pytest.mark.parametrize("case", sorted(WRAPPED))
def test_serialization_roundtrip(case):
    q = relaxed(case, 2.5)
    assert_roundtrip(q, X)
    config = quantizers.serialize(q)["config"]
    assert config["lambda_init"] == 2.5
    assert config["quantizer"] == quantizers.serialize(q.quantizer)


def test_alias_and_nested_identifiers():
    assert type(quantizers.get("relaxed")) is RelaxedQuantizer
    assert type(quantizers.get("relaxed").quantizer) is quantizers.ScaledSign
    q = quantizers.get({"class_name": "RelaxedQuantizer", "config": {"quantizer": "ste_ternary"}})
    assert type(q.quantizer) is quantizers.SteTernary


def test_metadata_delegates_to_the_wrapped_quantizer():
    inner = quantizers.UniformQuantizer(2, mode="weight")
    q = RelaxedQuantizer(inner)
    assert (q.precision, q.levels, q.scaled) == (2, inner.levels, False)
    assert q.quantizer is inner
    assert RelaxedQuantizer("scaled_sign").scaled and RelaxedQuantizer("scaled_sign").precision == 1


arrays = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=6),
    elements=st.floats(-3, 3, width=32),
)


@settings(max_examples=30, deadline=None)
@given(x=arrays, lam=st.floats(0, 1e4))
def test_relaxed_weights_lie_between_x_and_q(x, lam):
    q = quantizers.ScaledSign()(x).numpy()
    u = binary_relax.relax(tf.constant(x), q, lam).numpy()
    assert np.all(u >= np.minimum(x, q) - 1e-5) and np.all(u <= np.maximum(x, q) + 1e-5)
    np.testing.assert_allclose(np.abs(u - q), np.abs(x - q) / (1 + lam), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------- in a model
def dense_model(kernel_quantizer="scaled_sign"):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8,)),
            tfquant.layers.QuantDense(6, kernel_quantizer=kernel_quantizer, use_bias=False),
            tfquant.layers.QuantDense(4, kernel_quantizer=kernel_quantizer, use_bias=False),
        ]
    )


DATA = (
    np.random.default_rng(1).normal(size=(32, 8)).astype(np.float32),
    np.random.default_rng(2).normal(size=(32, 4)).astype(np.float32),
)  # batch 8: 4 steps per epoch


class Recorder(keras.callbacks.Callback):
    """lambda of the first relaxed quantizer per batch, learning rate per epoch."""

    def __init__(self):
        super().__init__()
        self.lambdas, self.rates = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    def on_train_batch_begin(self, batch, logs=None):
        self.lambdas.append(float(relaxed_quantizers(self.model)[0].relax_lambda.numpy()))


def fit(model, callbacks, epochs, optimizer=None, initial_epoch=0):
    if optimizer is not None:
        model.compile(optimizer, "mse")
    recorder = Recorder()
    history = model.fit(
        *DATA,
        batch_size=8,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=[*callbacks, recorder],
        verbose=0,
        shuffle=False,
    )
    return recorder, history


def test_lambda_is_a_non_trainable_weight_of_the_layer():
    model = dense_model()
    binary_relax.apply(model)
    for layer in model.layers:
        lam = layer.kernel_quantizer.relax_lambda
        assert any(w is lam for w in layer.non_trainable_weights)
        assert not any(w is lam for w in model.trainable_weights)
    assert len(relaxed_quantizers(model)) == 2
    # The optimizers' metadata on the kernel points at the relaxed quantizer.
    info = tfquant.layers.quantization_of(model.layers[0].kernel)
    assert isinstance(info.quantizer, RelaxedQuantizer) and info.gate is model.layers[0].kernel_gate


def test_apply_relaxes_forward_and_keeps_already_relaxed_layers():
    model = dense_model()
    model.predict(DATA[0], verbose=0)  # traced with the old quantizers
    kernel = model.layers[0].kernel.numpy()
    binary_relax.apply(model, lambda_init=3.0)
    first = model.layers[0].kernel_quantizer
    expected = np_relax(kernel, np_scaled_sign(kernel), 3.0)
    np.testing.assert_allclose(model.layers[0].quantize_kernel(kernel).numpy(), expected, atol=1e-6)
    out = model.predict(DATA[0], verbose=0)
    np.testing.assert_allclose(out, model(DATA[0]).numpy(), atol=1e-5)
    binary_relax.apply(model)
    assert model.layers[0].kernel_quantizer is first


def test_relaxation_weight_values():
    assert [relaxation_weight(e) for e in range(3)] == [1.0, 1.04, 1.04**2]
    assert relaxation_weight(5, lambda_init=0.5, growth=2.0) == 16.0
    assert relaxation_weight(1, growth=2.0, step=3, steps_per_epoch=4) == 2.0**7
    assert relaxation_weight(4, phase_two_epoch=4) == math.inf
    assert relaxation_weight(10**6, growth=2.0) == math.inf  # overflow is infinity


def test_schedule_per_epoch_after_n_epochs():
    model = dense_model()
    callbacks = binary_relax.apply(model, lambda_init=0.5, growth=1.5)
    recorder, history = fit(model, callbacks, epochs=4, optimizer="adam")
    expected = [0.5 * 1.5**e for e in range(4)]
    np.testing.assert_allclose(recorder.lambdas, np.repeat(expected, 4), rtol=1e-6)
    np.testing.assert_allclose(history.history["relax_lambda"], expected, rtol=1e-6)
    for q in relaxed_quantizers(model):  # every layer follows the schedule
        np.testing.assert_allclose(q.relax_lambda.numpy(), expected[-1], rtol=1e-6)


def test_schedule_per_step():
    model = dense_model()
    callbacks = binary_relax.apply(model, growth=1.1, update="step")
    recorder, _ = fit(model, callbacks, epochs=3, optimizer="sgd")
    np.testing.assert_allclose(recorder.lambdas, 1.1 ** np.arange(12), rtol=1e-5)


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        lambda: keras.optimizers.Adam(0.1),
        lambda: keras.optimizers.RMSprop(0.1),
    ],
    ids=["sgd", "adam", "rmsprop"],
)
def test_phase_switch(optimizer):
    model = dense_model()
    callbacks = binary_relax.apply(
        model, growth=2.0, phase_two_epoch=2, lr_multiplier=0.1, epochs=4
    )
    recorder, _ = fit(model, callbacks, epochs=4, optimizer=optimizer())
    np.testing.assert_allclose(recorder.lambdas, np.repeat([1.0, 2.0, np.inf, np.inf], 4))
    np.testing.assert_allclose(recorder.rates, [0.1, 0.1, 0.01, 0.01], rtol=1e-6)
    # Phase two forwards Q(x) exactly, and finalize stores it.
    layer = model.layers[0]
    kernel = layer.kernel.numpy()
    q = np_scaled_sign(kernel)
    np.testing.assert_allclose(layer.quantize_kernel(layer.kernel).numpy(), q, atol=1e-6)
    before = model(DATA[0]).numpy()
    tfquant.finalize(model)
    np.testing.assert_allclose(layer.kernel.numpy(), q, atol=1e-6)
    np.testing.assert_allclose(model(DATA[0]).numpy(), before, atol=1e-5)


def test_schedule_drives_mirror_descent_with_the_quantized_forward():
    # MirrorDescent reads levels through the relaxed quantizer (delegated to SteSign); with
    # forward="quantized" it keeps the gate, so the layers forward the relaxed weights.
    model = dense_model("ste_sign")
    callbacks = binary_relax.apply(model, growth=2.0, phase_two_epoch=2, lr_multiplier=0.5)
    optimizer = tfquant.MirrorDescent(learning_rate=0.1, forward="quantized")
    recorder, history = fit(model, callbacks, epochs=3, optimizer=optimizer)
    np.testing.assert_allclose(recorder.lambdas, np.repeat([1.0, 2.0, np.inf], 4))
    assert recorder.rates == pytest.approx([0.1, 0.1, 0.05])
    assert np.all(np.isfinite(history.history["loss"]))
    assert float(model.layers[0].kernel_gate.numpy()) == 1.0


def test_resume_from_a_saved_model_continues_the_schedule(tmp_path):
    settings_ = dict(growth=2.0, phase_two_epoch=3, lr_multiplier=0.5, epochs=6)
    model = dense_model()
    callbacks = binary_relax.apply(model, **settings_)
    fit(model, callbacks, epochs=2, optimizer=keras.optimizers.Adam(0.01))
    path = str(tmp_path / "m.keras")
    model.save(path)

    loaded = keras.models.load_model(path)
    assert float(relaxed_quantizers(loaded)[0].relax_lambda.numpy()) == 2.0  # from the weights
    recorder, _ = fit(loaded, [BinaryRelaxSchedule(**settings_)], epochs=5, initial_epoch=2)
    np.testing.assert_allclose(recorder.lambdas, np.repeat([4.0, np.inf, np.inf], 4))
    np.testing.assert_allclose(recorder.rates, [0.01, 0.005, 0.005], rtol=1e-6)

    # Resumed past the switch, from a checkpoint taken after it: multiplied once, not twice.
    loaded.save(path)
    again = keras.models.load_model(path)
    recorder, _ = fit(again, [BinaryRelaxSchedule(**settings_)], epochs=6, initial_epoch=5)
    assert recorder.rates == [pytest.approx(0.005)] and recorder.lambdas == [np.inf] * 4


def test_tf_checkpoint_and_weights_file_restore_lambda(tmp_path):
    model = dense_model()
    binary_relax.apply(model)
    relaxed_quantizers(model)[1].relax_lambda.assign(7.0)
    ckpt = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    model.save_weights(str(tmp_path / "m.weights.h5"))
    for restore in [
        lambda m: tf.train.Checkpoint(model=m).read(ckpt).assert_consumed(),
        lambda m: m.load_weights(str(tmp_path / "m.weights.h5")),
    ]:
        other = dense_model()
        binary_relax.apply(other)
        restore(other)
        assert [float(q.relax_lambda.numpy()) for q in relaxed_quantizers(other)] == [1.0, 7.0]


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_model_save_load_keeps_lambda(tmp_path, fmt):
    model = dense_model({"class_name": "RelaxedQuantizer", "config": {"quantizer": "ste_ternary"}})
    for q, lam in zip(relaxed_quantizers(model), (5.0, math.inf)):
        q.relax_lambda.assign(lam)
    path = str(tmp_path / f"m.{fmt}")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [float(q.relax_lambda.numpy()) for q in relaxed_quantizers(loaded)] == [5.0, math.inf]
    assert type(relaxed_quantizers(loaded)[0].quantizer) is quantizers.SteTernary
    np.testing.assert_allclose(loaded(DATA[0]).numpy(), model(DATA[0]).numpy(), atol=1e-6)


def bn_model():
    """dense_model with a synchronized BatchNorm between the layers: under MirroredStrategy
    its moving statistics come from the global batch, as on one device."""
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8,)),
            tfquant.layers.QuantDense(6, kernel_quantizer="scaled_sign", use_bias=False),
            keras.layers.BatchNormalization(synchronized=True),
            tfquant.layers.QuantDense(4, kernel_quantizer="scaled_sign", use_bias=False),
        ]
    )


@pytest.mark.parametrize(
    "optimizer",
    [lambda: keras.optimizers.SGD(0.1, momentum=0.9), lambda: keras.optimizers.Adam(0.01)],
    ids=["sgd", "adam"],
)
def test_under_mirrored_strategy_matches_one_device(mirrored, optimizer):
    settings_ = dict(growth=2.0, phase_two_epoch=2, lr_multiplier=0.5)
    single = bn_model()
    single.compile(optimizer(), "mse")
    fit(single, binary_relax.apply(single, **settings_), epochs=3)
    with mirrored.scope():
        model = bn_model()
        model.compile(optimizer(), "mse")
    callbacks = binary_relax.apply(model, **settings_)
    recorder, _ = fit(model, callbacks, epochs=3)
    np.testing.assert_allclose(recorder.lambdas, np.repeat([1.0, 2.0, np.inf], 4))
    lam = relaxed_quantizers(model)[0].relax_lambda
    assert all(float(v.numpy()) == math.inf for v in lam.value.values)  # every replica's copy
    rate = recorder.rates[0]
    assert recorder.rates == pytest.approx([rate, rate, rate * 0.5])
    # Same trainable weights, BatchNorm statistics and optimizer state as on one device
    # (12 steps of 2 replicas with 4 examples each against one of 8).
    for a, b in zip(model.weights, single.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)
    for a, b in zip(model.optimizer.variables, single.optimizer.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)


def test_binary_relax_trained_binary_cnn_converts_to_lce_bconv2d():
    model = binary_cnn("scaled_sign")
    callbacks = binary_relax.apply(model, growth=4.0, phase_two_epoch=1, lr_multiplier=0.1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 16, 16, 32)).astype(np.float32)
    y = rng.normal(size=(16, 16, 16, 64)).astype(np.float32)
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    model.fit(x, y, batch_size=8, epochs=2, callbacks=callbacks, verbose=0)
    tfquant.finalize(model)
    flatbuffer = convert(model)
    ops = op_counts(flatbuffer)
    assert ops.get("LceBconv2d") == 2 and "CONV_2D" not in ops, ops
    out = lce.testing.Interpreter(flatbuffer).predict(x[:4])
    np.testing.assert_allclose(out, model(x[:4]).numpy(), atol=1e-3)


def test_docstring_examples_run():
    result = doctest.testmod(binary_relax, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: RelaxedQuantizer(lambda_init=-1.0), "Received: lambda_init=-1.0"),
        (lambda: RelaxedQuantizer(lambda_init=math.nan), "Received: lambda_init=nan"),
        (lambda: RelaxedQuantizer(None), "Received: quantizer=None"),
        (lambda: RelaxedQuantizer("nope"), "Unknown quantizer 'nope'"),
        (lambda: BinaryRelaxSchedule(lambda_init=-0.5), "Received: lambda_init=-0.5"),
        (lambda: BinaryRelaxSchedule(growth=0.9), "Received: growth=0.9"),
        (lambda: BinaryRelaxSchedule(update="batch"), "Received: update='batch'"),
        (lambda: BinaryRelaxSchedule(phase_two_epoch=-1), "Received: phase_two_epoch=-1"),
        (
            lambda: BinaryRelaxSchedule(phase_two_epoch=1, lr_multiplier=0.0),
            "Received: lr_multiplier=0.0",
        ),
        (lambda: BinaryRelaxSchedule(lr_multiplier=0.1), "Received: lr_multiplier=0.1"),
        (
            lambda: BinaryRelaxSchedule(phase_two_epoch=10, epochs=10),
            "Received: phase_two_epoch=10, epochs=10",
        ),
        (lambda: binary_relax.apply(dense_model(), growth=0.5), "Received: growth=0.5"),
        (
            lambda: binary_relax.apply(keras.Sequential([keras.layers.Dense(2)])),
            "which is not built",
        ),
        (
            lambda: binary_relax.apply(
                keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
            ),
            "with none",
        ),
    ],
)
def test_bad_input_says_expected_and_received(make, expected):
    with pytest.raises(ValueError, match="Expected|Unknown") as info:
        make()
    assert expected in str(info.value)


def test_tf_keras_model_is_refused_naming_both_packages():
    tf_keras = pytest.importorskip("tf_keras")
    legacy = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])
    with pytest.raises(TypeError, match="Expected a Keras 3 model.*tf_keras"):
        binary_relax.apply(legacy)
    schedule = BinaryRelaxSchedule()
    schedule.set_model(legacy)
    with pytest.raises(TypeError, match="Expected a Keras 3 model"):
        schedule.on_train_begin()


def test_phase_two_beyond_training_fails_at_fit():
    model = dense_model()
    callbacks = binary_relax.apply(model, phase_two_epoch=3)
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="Received: phase_two_epoch=3, epochs=3"):
        model.fit(*DATA, epochs=3, callbacks=callbacks, verbose=0)


def test_schedule_on_a_model_without_relaxed_quantizers_fails_at_fit():
    model = dense_model()
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="Expected a model whose tfquant layers have Relaxed"):
        model.fit(*DATA, epochs=1, callbacks=[BinaryRelaxSchedule()], verbose=0)


def test_per_step_schedule_needs_a_known_epoch_length():
    model = dense_model()
    callbacks = binary_relax.apply(model, update="step")
    model.compile("sgd", "mse")

    def batches():
        while True:
            yield DATA[0][:8], DATA[1][:8]

    with pytest.raises(ValueError, match="Expected a known number of steps per epoch"):
        model.fit(batches(), epochs=1, callbacks=callbacks, verbose=0)


def test_lr_multiplier_with_a_schedule_fails_clearly():
    model = dense_model()
    callbacks = binary_relax.apply(model, phase_two_epoch=0, lr_multiplier=0.1)
    rate = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    model.compile(keras.optimizers.SGD(rate), "mse")
    with pytest.raises(ValueError, match="Expected an optimizer with a float learning rate"):
        model.fit(*DATA, epochs=1, callbacks=callbacks, verbose=0)


# ----------------------------------------------------------------- training (slow)
@pytest.mark.slow
def test_binary_relax_trains_fashion_mnist_to_a_useful_hard_accuracy():
    from tfquant import datasets

    (xtr, ytr), (xte, yte) = datasets.load("fashion_mnist")
    xtr, ytr, xte, yte = xtr[:6000], ytr[:6000], xte[:2000], yte[:2000]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(xtr.shape[1:]),
            tfquant.layers.QuantConv2D(32, 3, kernel_quantizer="scaled_sign", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            tfquant.layers.QuantDense(10, kernel_quantizer="scaled_sign", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.Softmax(),
        ]
    )
    callbacks = binary_relax.apply(model, growth=2.0, phase_two_epoch=4, lr_multiplier=0.1)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(xtr, ytr, batch_size=64, epochs=5, callbacks=callbacks, verbose=0)
    tfquant.finalize(model, xtr[:2000])
    accuracy = np.mean(np.argmax(model.predict(xte, verbose=0), -1) == yte)
    assert accuracy > 0.75, accuracy
