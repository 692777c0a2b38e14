"""The layer test set: against the float Keras layer on quantized inputs and weights,
save/load round trips, one training step, metadata under tf.distribute, bad input."""

import numpy as np
import pytest
from helpers import np_sign

from tfquant import layers
from tfquant._keras import keras, tf

QUANTIZERS = ["ste_sign", "scaled_sign", "ste_ternary"]


def _float_twin(layer, input_shape):
    """The float Keras layer with the same config, kernel set to Q(kernel)."""
    config = layer.get_config()
    for key in ("input_quantizer", "kernel_quantizer", "pad_values"):
        config.pop(key, None)
    if layer.pad_values == 1.0 and config.get("padding") == "same":
        config["padding"] = "valid"
    keras_class = next(c for c in type(layer).__mro__ if c.__module__.startswith("keras."))
    twin = keras_class.from_config(config)
    twin.build(input_shape)
    weights = layer.get_weights()[:-1]  # drop the gate (last weight)
    weights[0] = layer.kernel_quantizer(weights[0]).numpy()
    twin.set_weights(weights)
    return twin


CONV_CASES = [
    dict(padding="valid"),
    dict(padding="same"),
    dict(padding="same", strides=2),
    dict(padding="same", dilation_rate=2),
    dict(padding="same", pad_values=1.0),
    dict(padding="same", pad_values=1.0, strides=2),
    dict(padding="same", pad_values=1.0, dilation_rate=2),
]


def _pad_like_same(x, layer):
    pads = [(0, 0)]
    for axis, (k, s, d) in enumerate(zip(layer.kernel_size, layer.strides, layer.dilation_rate), 1):
        pads.append(layers.same_padding(x.shape[axis], k, s, d))
    return np.pad(x, pads + [(0, 0)], constant_values=layer.pad_values)


@pytest.mark.parametrize("kq", QUANTIZERS)
@pytest.mark.parametrize(
    "case", CONV_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items())
)
def test_conv_equals_float_conv_on_quantized_operands(kq, case):
    x = np.random.normal(size=(2, 9, 9, 8)).astype(np.float32)
    layer = layers.QuantConv2D(6, 3, input_quantizer="ste_sign", kernel_quantizer=kq, **case)
    y = layer(x).numpy()
    xq = np_sign(x)
    if layer.pad_values == 1.0:
        xq = _pad_like_same(xq, layer)
    twin = _float_twin(layer, xq.shape)
    np.testing.assert_allclose(y, twin(xq).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kq", QUANTIZERS)
@pytest.mark.parametrize("case", CONV_CASES[:2] + CONV_CASES[4:6], ids=str)
def test_depthwise_equals_float_depthwise(kq, case):
    x = np.random.normal(size=(2, 9, 9, 4)).astype(np.float32)
    layer = layers.QuantDepthwiseConv2D(
        3, depth_multiplier=2, input_quantizer="ste_sign", kernel_quantizer=kq, **case
    )
    y = layer(x).numpy()
    xq = np_sign(x)
    if layer.pad_values == 1.0:
        xq = _pad_like_same(xq, layer)
    twin = _float_twin(layer, xq.shape)
    np.testing.assert_allclose(y, twin(xq).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kq", QUANTIZERS)
@pytest.mark.parametrize("shape", [(4, 20), (2, 3, 20)])
def test_dense_equals_float_dense(kq, shape):
    x = np.random.normal(size=shape).astype(np.float32)
    layer = layers.QuantDense(7, input_quantizer="ste_sign", kernel_quantizer=kq, activation="relu")
    y = layer(x).numpy()
    twin = _float_twin(layer, shape)
    np.testing.assert_allclose(y, twin(np_sign(x)).numpy(), rtol=1e-5, atol=1e-5)


def test_gate_zero_forwards_the_latent_kernel():
    x = np.random.normal(size=(3, 5)).astype(np.float32)
    layer = layers.QuantDense(4, kernel_quantizer="ste_sign", use_bias=False)
    layer.build(x.shape)
    layer.kernel_gate.assign(0.0)
    np.testing.assert_allclose(layer(x).numpy(), x @ layer.kernel.numpy(), rtol=1e-5, atol=1e-6)
    layer.kernel_gate.assign(0.25)
    w = layer.kernel.numpy()
    expected = x @ (0.25 * np_sign(w) + 0.75 * w)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-6)


def _model(kq="ste_sign"):
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            layers.QuantConv2D(8, 3, padding="same", kernel_quantizer=kq, use_bias=False),
            keras.layers.BatchNormalization(),
            layers.QuantDepthwiseConv2D(
                3, padding="same", pad_values=1.0, input_quantizer="ste_sign", kernel_quantizer=kq
            ),
            # Binary products sum to odd integers, where approx_sign's gradient 2 - 2|x| is 0.
            keras.layers.BatchNormalization(),
            layers.QuantConv2D(
                16,
                3,
                padding="same",
                pad_values=1.0,
                input_quantizer="approx_sign",
                kernel_quantizer=kq,
                strides=2,
            ),
            keras.layers.GlobalAveragePooling2D(),
            layers.QuantDense(5, input_quantizer="ste_sign", kernel_quantizer=kq),
        ]
    )


def _plain(config):
    """A layer config with its quantizers reduced to (class, config)."""
    out = dict(config)
    for key in ("input_quantizer", "kernel_quantizer"):
        if out.get(key):
            out[key] = (out[key]["class_name"], out[key]["config"])
    return out


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize(
    "kq",
    [
        "ste_sign",
        "scaled_sign",
        "ste_ternary",
        {"class_name": "UniformQuantizer", "config": {"bits": 3, "mode": "weight"}},
    ],
)
def test_save_load_roundtrip(tmp_path, fmt, kq):
    model = _model(kq)
    x = np.random.normal(size=(2, 8, 8, 3)).astype(np.float32)
    path = str(tmp_path / f"model.{fmt}")
    model.layers[0].kernel_gate.assign(0.0)  # a finalized layer: the gate must survive too
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)
    conv = loaded.layers[0]
    assert isinstance(conv, layers.QuantConv2D)
    assert float(conv.kernel_gate.numpy()) == 0.0
    assert _plain(conv.get_config()) == _plain(model.layers[0].get_config())
    assert layers.quantization_of(conv.kernel).quantizer is conv.kernel_quantizer


def test_one_training_step_changes_latent_weights():
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [w.numpy().copy() for w in model.trainable_weights]
    x = np.random.normal(size=(16, 8, 8, 3)).astype(np.float32)
    model.fit(x, np.random.normal(size=(16, 5)), epochs=1, verbose=0)
    for b, w in zip(before, model.trainable_weights):
        assert not np.allclose(b, w.numpy()), w.name
    kernel = model.layers[0].kernel.numpy()
    assert len(np.unique(kernel)) > 2  # latent weights stay real-valued


def test_metadata_on_trainable_variables():
    model = _model()
    marked = {v.path: layers.quantization_of(v) for v in model.trainable_variables}
    kernels = [n for n, info in marked.items() if info is not None]
    assert sorted(kernels) == sorted(
        [
            "sequential/quant_conv2d/kernel",
            "sequential/quant_depthwise_conv2d/kernel",
            "sequential/quant_conv2d_1/kernel",
            "sequential/quant_dense/kernel",
        ]
    )
    info = marked["sequential/quant_dense/kernel"]
    assert info.quantizer.levels == (-1.0, 1.0) and info.quantizer.precision == 1
    assert info.layer_name == "quant_dense"


def test_metadata_under_mirrored_strategy(mirrored):
    strategy = mirrored
    with strategy.scope():
        model = _model()
    kernel = model.layers[0].kernel
    assert isinstance(kernel.value, tf.distribute.DistributedValues)
    assert layers.quantization_of(kernel) is not None
    for component in kernel.value.values:  # what an optimizer's update_step receives
        assert layers.quantization_of(component).quantizer.levels == (-1.0, 1.0)
    # And inside a real distributed update, per replica:
    seen = []

    class Probe(keras.optimizers.SGD):
        def update_step(self, gradient, variable, learning_rate):
            seen.append((variable.name, layers.quantization_of(variable) is not None))
            return super().update_step(gradient, variable, learning_rate)

    with strategy.scope():
        model.compile(optimizer=Probe(0.01), loss="mse")
    model.fit(np.ones((4, 8, 8, 3)), np.ones((4, 5)), batch_size=4, verbose=0)
    assert ("sequential/quant_conv2d/kernel:0", True) in seen
    assert all(not flag for name, flag in seen if "batch_normalization" in name)
    assert (
        "sequential/quant_conv2d/kernel/replica_1:0",
        True,
    ) in seen  # the second replica's component


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: layers.QuantConv2D(8, 3, pad_values=2.0), "Received: pad_values=2.0"),
        (lambda: layers.QuantConv2D(8, 3, pad_values="ones"), "Received: pad_values='ones'"),
        (lambda: layers.QuantDense(8, kernel_quantizer="sign_ste"), "Unknown quantizer 'sign_ste'"),
        (
            lambda: layers.QuantConv2D(8, 3, pad_values=1.0, data_format="channels_first"),
            "Received: data_format='channels_first'",
        ),
        (
            lambda: layers.QuantDepthwiseConv2D(
                3, kernel_quantizer={"class_name": "UniformQuantizer", "config": {"bits": 0}}
            ),
            "Received: bits=0",
        ),
    ],
)
def test_bad_input(make, expected):
    with pytest.raises(ValueError) as info:
        make()
    assert expected in str(info.value)
