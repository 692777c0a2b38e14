"""tfquant.callbacks.HardValidation: the logged numbers are those of the finalized network,
training is unchanged by it, and restore_best returns to the chosen epoch exactly."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfquant
from tfquant import layers
from tfquant.callbacks import BetaAnnealing, HardValidation

BATCH = 64


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    return (x[:1200], y[:1200]), (x[1200:], y[1200:])


def _model(optimizer=None, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            layers.QuantDense(64, kernel_quantizer="ste_sign", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            layers.QuantDense(10, kernel_quantizer="ste_sign", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.Softmax(),
        ]
    )
    model.compile(
        optimizer if optimizer is not None else tfquant.MirrorDescent(),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _fit(model, train, epochs, callbacks):
    return model.fit(
        *train, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks
    )


def _finalized_scores(model, train, validation, bn_steps=20):
    tfquant.finalize(model, train[0], batch_size=128, steps=bn_steps)
    return model.evaluate(*validation, batch_size=128, verbose=0, return_dict=True)


def test_logs_the_finalized_network_and_leaves_training_unchanged(digits):
    train, validation = digits
    plain = _model()
    _fit(plain, train, 2, [BetaAnnealing()])
    watched = _model()
    history = _fit(watched, train, 2, [BetaAnnealing(), HardValidation(validation, train[0])])
    for a, b in zip(plain.get_weights(), watched.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(plain.optimizer.variables, watched.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert len(history.history["hard_val_accuracy"]) == 2
    scores = _finalized_scores(watched, train, validation)
    assert history.history["hard_val_accuracy"][-1] == pytest.approx(scores["accuracy"])
    assert history.history["hard_val_loss"][-1] == pytest.approx(scores["loss"], rel=1e-5)
    assert scores["accuracy"] > 0.5  # the finalized network learned (chance is 0.1)


def test_restore_best_returns_model_and_optimizer_to_the_best_epoch(digits):
    train, validation = digits
    steps = -(-len(train[0]) // BATCH)
    # mode="max" on the loss picks the worst epoch, the first: a restore far from the end.
    hard = HardValidation(validation, train[0], monitor="hard_val_loss", mode="max",
                          restore_best=True)  # fmt: skip
    history = _fit(_model(), train, 3, [BetaAnnealing(), hard])
    losses = history.history["hard_val_loss"]
    assert hard.best_epoch == int(np.argmax(losses)) == 0
    assert hard.best == pytest.approx(max(losses))
    model = hard.model
    assert int(model.optimizer.iterations.numpy()) == steps * (hard.best_epoch + 1)
    scores = _finalized_scores(model, train, validation)
    assert scores["loss"] == pytest.approx(losses[hard.best_epoch], rel=1e-5)
    assert scores["accuracy"] == pytest.approx(history.history["hard_val_accuracy"][0])


def test_works_with_ste_adam_and_datasets(digits):
    train, validation = digits
    dataset = tf.data.Dataset.from_tensor_slices(validation).batch(100)
    bn = tf.data.Dataset.from_tensor_slices(train[0]).batch(128)
    hard = HardValidation(dataset, bn, bn_steps=None, restore_best=True)
    model = _model(keras.optimizers.Adam(1e-2))
    history = _fit(model, train, 2, [hard])
    assert hard.best == max(history.history["hard_val_accuracy"])
    tfquant.finalize(model, bn)
    accuracy = model.evaluate(dataset, verbose=0, return_dict=True)["accuracy"]
    assert accuracy == pytest.approx(hard.best)


@pytest.mark.parametrize(
    "args, kwargs, expected",
    [
        ((np.zeros((4, 64)),), {}, "Expected validation_data as"),
        (((np.zeros((4, 64)), np.zeros(4)),), {"mode": "maximum"}, "Expected mode in"),
        (((np.zeros((4, 64)), np.zeros(4)),), {"bn_steps": 0}, "Expected bn_steps"),
    ],
)
def test_bad_arguments(args, kwargs, expected):
    with pytest.raises(ValueError, match=expected):
        HardValidation(*args, **kwargs)


def test_unknown_monitor_names_the_available_keys(digits):
    train, validation = digits
    hard = HardValidation(validation, train[0], monitor="val_accuracy")
    with pytest.raises(ValueError, match=r"hard_val_accuracy.*Received: monitor='val_accuracy'"):
        _fit(_model(), train, 1, [hard])


def test_tf_keras_model_is_refused_naming_both_packages(digits):
    tf_keras = pytest.importorskip("tf_keras")
    train, validation = digits
    legacy = tf_keras.Sequential([tf_keras.Input((64,)), tf_keras.layers.Dense(10)])
    hard = HardValidation(validation, train[0])
    hard.set_model(legacy)
    with pytest.raises(TypeError, match="Expected a Keras 3 model.*tf_keras"):
        hard.on_train_begin()


def test_restore_best_refuses_ema(digits):
    train, validation = digits
    model = _model(tfquant.MirrorDescent(use_ema=True))
    with pytest.raises(ValueError, match="use_ema"):
        _fit(model, train, 1, [HardValidation(validation, train[0], restore_best=True)])
