"""The smoke subset, run on every supported TensorFlow (CI's second configuration runs this
file alone on TensorFlow 2.16.2): every quantizer and layer converts through LCE, one
training step of every method, and a `.keras` save and load."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import conv_bn_dense, randomize_batchnorm

import tfquant
from tfquant import converters, layers, quantizers
from tfquant.methods import binary_relax

WEIGHT_QUANTIZERS = [
    "ste_sign",
    "approx_sign",
    "scaled_sign",
    "ste_ternary",
    quantizers.SteTernary(method="optimal"),
    quantizers.SteTernary(method="fixed"),
    quantizers.UniformQuantizer(bits=2, mode="weight"),
    quantizers.UniformQuantizer(bits=4, mode="weight"),
]


def _model(kernel_quantizer, input_quantizer="ste_sign"):
    common = dict(input_quantizer=input_quantizer, kernel_quantizer=kernel_quantizer)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 32)),
            layers.QuantConv2D(32, 3, padding="same", pad_values=1.0, use_bias=False, **common),
            keras.layers.BatchNormalization(),
            layers.QuantDepthwiseConv2D(3, padding="same", **common),
            keras.layers.GlobalAveragePooling2D(),
            layers.QuantDense(10, **common),
        ]
    )
    # Trained-looking BatchNorm: with the initial one (mean 0, offset 0) the sign after a
    # scaled binary conv sits on exact ties, where Keras' float sum of +-alpha terms and
    # LCE's exact integer count may round to different signs.
    randomize_batchnorm(model)
    return model


@pytest.mark.parametrize("kernel_quantizer", WEIGHT_QUANTIZERS, ids=str)
def test_every_weight_quantizer_and_layer_converts(kernel_quantizer):
    model = _model(kernel_quantizer)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 32)).astype(np.float32)
    flatbuffer, report = converters.convert_with_report(
        model, parity_inputs=x, calibration_data=x, allow_float=True
    )
    assert {r.name for r in report.layers} == {
        layer.name for layer in model.layers if "quant" in layer.name
    }
    parity = report.parity
    if kernel_quantizer in ("ste_sign", "approx_sign", "scaled_sign"):
        assert parity["relative_max_diff"] < 1e-5, parity
        ops = converters.flatbuffer.op_counts(flatbuffer)
        assert ops.get("LceBconv2d") == 2, ops  # the conv and the dense (1x1 rewrite)
    else:
        # Ternary and k-bit layers become int8 kernels; their int8 outputs are rounded to
        # calibrated ranges (exactness is tested in test_converters.py), and a sign after
        # them can flip where the rounding crosses 0.
        became = {r.name: r.became for r in report.layers}
        assert became["quant_conv2d"] == "int8" and became["quant_dense"] == "int8", became
        assert parity["mean_abs_diff"] <= 0.05 * parity["output_scale"], parity


@pytest.mark.parametrize(
    "input_quantizer",
    ["ste_sign", "approx_sign", quantizers.UniformQuantizer(bits=2), None],
    ids=str,
)
def test_every_input_quantizer_converts(input_quantizer):
    model = _model("ste_ternary", input_quantizer)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 32)).astype(np.float32)
    _, report = converters.convert_with_report(
        model, parity_inputs=x, calibration_data=x, allow_float=True
    )
    # Ternary kernels on a quantized input become int8 kernels, on a float input float ones;
    # a depthwise layer stays float (tfquant's int8 export does not cover depthwise convs).
    kind = "float" if input_quantizer is None else "int8"
    became = [r.became for r in report.layers]
    assert became == [kind, "float", kind], became
    parity = report.parity
    assert parity["mean_abs_diff"] <= 0.05 * parity["output_scale"], parity


def _train_step_model(kernel_quantizer="ste_sign"):
    return conv_bn_dense((6, 6, 1), 8, 3, kernel_quantizer)


METHODS = ["ste_adam", "md_tanh_s", "md_tanh", "md_softmax_s", "md_softmax", "md_ternary", "br"]


def _compile(method):
    if method == "ste_adam":
        model = _train_step_model()
        return model, keras.optimizers.Adam(1e-2), []
    if method == "br":
        model = _train_step_model("scaled_sign")
        return model, keras.optimizers.Adam(1e-2), binary_relax.apply(model, epochs=1)
    mirror_map = method.split("_")[1]  # md_tanh_s -> tanh
    kq = quantizers.SteTernary(method="fixed") if mirror_map == "ternary" else "ste_sign"
    stable = method.endswith("_s") or mirror_map == "ternary"  # ternary has the stable form only
    optimizer = tfquant.MirrorDescent(mirror_map=mirror_map, stable=stable)
    return _train_step_model(kq), optimizer, []


@pytest.mark.parametrize("method", METHODS)
def test_one_training_step_of_every_method_then_keras_save_and_load(method, tmp_path):
    model, optimizer, callbacks = _compile(method)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 6, 6, 1)).astype(np.float32), rng.integers(0, 3, 16)
    before = [v.numpy().copy() for v in model.trainable_variables]
    history = model.fit(x, y, batch_size=16, epochs=1, callbacks=callbacks, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(
        not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables)
    ), method
    tfquant.finalize(model, x)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe_mode stays on
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert type(loaded.optimizer) is type(model.optimizer)


def test_versions_are_the_supported_stack():
    major, minor = (int(p) for p in tf.__version__.split(".")[:2])
    assert (2, 16) <= (major, minor) <= (2, 21), tf.__version__
    assert keras.__version__.startswith("3."), keras.__version__
    assert np.__version__.startswith("1."), np.__version__
