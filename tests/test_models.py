"""tfquant.models.summary and finalize."""

import keras
import numpy as np
import pytest
from helpers import binary_cnn

import tfquant
from tfquant import layers


def _mixed_model():
    return keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            keras.layers.Conv2D(32, 3, use_bias=False),  # float first layer: 8x8x32 out
            keras.layers.BatchNormalization(),
            layers.QuantConv2D(
                32,
                3,
                padding="same",
                pad_values=1.0,
                input_quantizer="ste_sign",
                kernel_quantizer="ste_sign",
                use_bias=False,
            ),
            layers.QuantConv2D(
                16,
                1,
                input_quantizer={"class_name": "UniformQuantizer", "config": {"bits": 4}},
                kernel_quantizer="ste_ternary",
                use_bias=False,
            ),
            keras.layers.Flatten(),
            layers.QuantDense(10, input_quantizer="ste_sign", kernel_quantizer="ste_sign"),
        ]
    )


def test_summary_counts_bits_memory_and_macs():
    model = _mixed_model()
    result = tfquant.summary(model, print_fn=None)
    rows = {r.name: r for r in result.layers}
    conv, bn, bconv, tconv, _, dense = model.layers
    assert rows[conv.name].params == {32: 3 * 3 * 3 * 32}
    assert rows[conv.name].macs == {"float": 8 * 8 * 32 * 27}
    assert rows[bn.name].params == {32: 4 * 32}
    assert rows[bconv.name].params == {1: 3 * 3 * 32 * 32}  # the gate is not a parameter
    assert rows[bconv.name].macs == {"binary": 8 * 8 * 32 * 9 * 32}
    assert (rows[tconv.name].input_bits, rows[tconv.name].weight_bits) == (4, 2)
    assert rows[tconv.name].macs == {"low-bit": 8 * 8 * 16 * 32}
    assert rows[dense.name].params == {1: 8 * 8 * 16 * 10, 32: 10}
    assert rows[dense.name].memory_bytes == (8 * 8 * 16 * 10 + 32 * 10) / 8
    bits = 32 * (27 * 32 + 128 + 10) + 9 * 32 * 32 + 2 * 32 * 16 + 8 * 8 * 16 * 10
    assert result.memory_bytes == bits / 8
    assert result.total_params == 27 * 32 + 128 + 9 * 32 * 32 + 32 * 16 + 8 * 8 * 16 * 10 + 10
    assert result.float32_bytes == 4 * result.total_params
    assert result.compression == pytest.approx(result.float32_bytes / result.memory_bytes)
    assert result.macs["binary"] == 8 * 8 * 32 * 9 * 32 + 8 * 8 * 16 * 10  # conv + dense
    assert result.macs["float"] == 8 * 8 * 32 * 27


def test_summary_prints_a_table():
    lines = []
    tfquant.summary(_mixed_model(), print_fn=lines.append)
    text = lines[0]
    assert "QuantConv2D" in text and "compression" in text and "MACs" in text


def test_finalize_makes_kernels_exactly_quantized_and_keeps_outputs():
    model = _mixed_model()
    x = np.random.normal(size=(4, 10, 10, 3)).astype(np.float32)
    before = model(x).numpy()
    tfquant.finalize(model)
    np.testing.assert_allclose(model(x).numpy(), before, rtol=1e-5, atol=1e-5)
    assert set(np.unique(model.layers[2].kernel.numpy())) == {-1.0, 1.0}
    tern = model.layers[3].kernel.numpy()
    for c in range(tern.shape[-1]):
        assert len(np.unique(np.abs(tern[..., c]))) <= 2  # {0, alpha_c}
    assert model.layers[2].kernel_gate.numpy() == 0.0


def test_finalize_reestimates_batchnorm_as_the_exact_average():
    model = binary_cnn("ste_sign", input_shape=(8, 8, 32))
    x = np.random.normal(size=(96, 8, 8, 32)).astype(np.float32)
    tfquant.finalize(model, x, batch_size=32)
    bn = model.layers[1]
    conv_out = keras.Model(model.inputs, model.layers[0].output)
    batches = [conv_out(x[i : i + 32]).numpy() for i in range(0, 96, 32)]
    expected_mean = np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0)
    np.testing.assert_allclose(bn.moving_mean.numpy(), expected_mean, rtol=1e-4, atol=1e-4)
    assert bn.momentum == 0.99  # restored


def test_finalize_rejects_empty_data():
    with pytest.raises(ValueError, match="at least one batch"):
        tfquant.finalize(binary_cnn(input_shape=(4, 4, 32)), [])


def test_finalize_takes_mirror_descent_softmax_argmax():
    # Over three levels, rounding the simplex mean is not the paper's argmax: finalize asks
    # the optimizer (hard_quantize) first.
    model = keras.Sequential(
        [
            keras.Input((6,)),
            layers.QuantDense(4, kernel_quantizer=tfquant.quantizers.SteTernary(method="fixed")),
        ]
    )
    optimizer = tfquant.MirrorDescent(mirror_map="softmax", learning_rate=0.05)
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(64, 6)), rng.normal(size=(64, 4)), epochs=3, verbose=0)
    kernel = model.layers[0].kernel
    dual = optimizer.dual(kernel).numpy()
    expected = np.array([-1.0, 0.0, 1.0])[np.argmax(dual, axis=-1)]
    tfquant.finalize(model)
    np.testing.assert_array_equal(kernel.numpy(), expected)


def test_float_twin_is_the_same_network_in_float():
    from helpers import conv_bn_dense

    from tfquant.models import float_twin

    model = conv_bn_dense((6, 6, 2), 4, 3)
    model.layers[1].moving_mean.assign(np.arange(4, dtype="float32") / 10)  # not the init
    twin = float_twin(model)
    assert [type(a).__name__ for a in twin.layers] == [type(a).__name__ for a in model.layers]
    for layer in tfquant.models.quantized_layers(twin):
        assert layer.input_quantizer is None and layer.kernel_quantizer is None
    # A plain Keras network with the twin's weights computes the same thing: the twin has no
    # quantizer anywhere, and its weights are the model's (latent kernels, BN statistics).
    reference = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    named = {w.path.split("/", 1)[1]: w for w in model.weights if "gate" not in w.path}
    reference.set_weights(twin.get_weights())
    for w in twin.weights:
        np.testing.assert_array_equal(w.numpy(), named[w.path.split("/", 1)[1]].numpy())
    x = np.random.default_rng(0).normal(size=(5, 6, 6, 2)).astype("float32")
    np.testing.assert_allclose(
        twin.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-5
    )
    assert not np.allclose(twin.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-3)


def test_float_twin_refuses_a_subclassed_model():
    from tfquant.models import float_twin

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.QuantDense(2, kernel_quantizer="ste_sign")

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="Expected a Functional or Sequential model .* Net"):
        float_twin(net)
