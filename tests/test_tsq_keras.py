"""TSQ step 2 on Keras models (tfquant.methods.tsq.learn_transformations): the
exact recovery, the never-worse guarantee, im2col sampling, input validation."""

import numpy as np
import pytest

from tfquant import quantizers
from tfquant._keras import keras
from tfquant.layers import QuantConv2D, QuantDense
from tfquant.methods import tsq
from tfquant.methods.tsq import step2

FAST = dict(samples=600, iterations=10, batch_size=16, progress=False)


def _codes():
    return quantizers.SparseQuantizer(threshold=0.32, step=0.6487)


def _planted(shape, rng):
    """A kernel exactly alpha_c * ternary_c per output channel (last axis)."""
    t = rng.integers(-1, 2, size=shape).astype(np.float64)
    t.reshape(-1, shape[-1])[0] = 1.0  # no all-zero channel
    alpha = rng.uniform(0.2, 1.0, size=shape[-1])
    return (alpha * t).astype("float32"), alpha, t


def _model(kind, bn, rng, bias=False):
    if kind == "dense":
        inp = keras.Input((12,))
        layer = QuantDense(
            5, use_bias=bias, input_quantizer=_codes(), kernel_quantizer="ste_ternary", name="q"
        )
    else:
        inp = keras.Input((6, 6, 3))
        layer = QuantConv2D(
            4,
            3,
            padding="same",
            pad_values=1.0,
            use_bias=bias,
            input_quantizer=_codes(),
            kernel_quantizer="ste_ternary",
            name="q",
        )
    h = layer(inp)
    if bn:
        norm = keras.layers.BatchNormalization(name="bn")
        h = norm(h)
    out = keras.layers.Activation(_codes())(h)
    model = keras.Model(inp, out)
    if bn:
        c = layer.kernel.shape[-1]
        gamma = rng.uniform(0.5, 2.0, c) * rng.choice([-1.0, 1.0], c)
        norm.set_weights(
            [gamma, rng.normal(size=c), rng.normal(scale=0.3, size=c), rng.uniform(0.2, 3.0, c)]
        )
    return model, layer


def _inputs(kind, rng, n=64):
    shape = (n, 12) if kind == "dense" else (n, 6, 6, 3)
    return rng.normal(loc=0.8, size=shape).astype("float32")


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_planted_ternary_kernel_is_recovered_exactly(kind, bn):
    rng = np.random.default_rng(0)
    model, layer = _model(kind, bn, rng, bias=True)
    kernel, alpha, codes = _planted(tuple(layer.kernel.shape), rng)
    layer.kernel.assign(kernel)
    layer.bias.assign(rng.normal(scale=0.1, size=layer.bias.shape).astype("float32"))
    x = _inputs(kind, rng)
    before = model.predict(x, verbose=0)
    (record,) = tsq.learn_transformations(model, x, **FAST)
    after = model.predict(x, verbose=0)
    assert record.name == "q" and record.folded == bn
    assert record.rows == (64 if kind == "dense" else FAST["samples"])
    np.testing.assert_allclose(record.alpha, alpha, rtol=1e-6)
    written = layer.kernel.numpy()
    np.testing.assert_array_equal(np.sign(written), codes)
    np.testing.assert_allclose(written, kernel, rtol=1e-6, atol=1e-7)
    assert record.error_before < 1e-6 and record.error_after < 1e-6
    assert float(layer.kernel_gate.numpy()) == 0.0
    np.testing.assert_allclose(after, before, atol=1e-5)


@pytest.mark.parametrize("bn", [False, True])
def test_random_kernel_never_worse_and_ternary_per_channel(bn):
    rng = np.random.default_rng(1)
    inp = keras.Input((6, 6, 3))
    h = QuantConv2D(
        4,
        3,
        padding="same",
        pad_values=1.0,
        use_bias=not bn,
        input_quantizer=_codes(),
        kernel_quantizer="ste_ternary",
        name="c1",
    )(inp)
    if bn:
        h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.Activation(_codes())(h)
    h = QuantConv2D(
        3, 3, strides=2, input_quantizer=_codes(), kernel_quantizer="ste_ternary", name="c2"
    )(h)
    h = keras.layers.Flatten()(h)
    out = QuantDense(5, input_quantizer="ste_sign", kernel_quantizer="ste_ternary", name="d")(h)
    model = keras.Model(inp, out)
    x = _inputs("conv", rng)
    records = tsq.learn_transformations(model, x, activation={"d": "linear"}, **FAST)
    assert [r.name for r in records] == ["c1", "c2", "d"]
    assert records[0].folded == bn and not records[1].folded
    for record in records:
        assert record.error_after <= record.error_before + 1e-12
        kernel = model.get_layer(record.name).kernel.numpy()
        k = kernel.reshape(-1, kernel.shape[-1])
        assert record.alpha.shape == (k.shape[1],)
        for c in range(k.shape[1]):
            a = record.alpha[c]
            assert len(np.unique(k[:, c])) <= 3
            np.testing.assert_allclose(np.abs(k[:, c])[k[:, c] != 0], a, rtol=1e-6)


def _numpy_conv(x, kernel, stride, dilation, padding, pad_value):
    """Direct NHWC convolution (cross-correlation) with TF's SAME amounts."""
    kh, kw = kernel.shape[:2]
    pads = []
    for axis, k in ((1, kh), (2, kw)):
        eff = (k - 1) * dilation + 1
        size = x.shape[axis]
        if padding == "same":
            out = -(-size // stride)
            total = max((out - 1) * stride + eff - size, 0)
            pads.append((total // 2, total - total // 2))
        else:
            pads.append((0, 0))
    xp = np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)], constant_values=pad_value)
    oh = (xp.shape[1] - (kh - 1) * dilation - 1) // stride + 1
    ow = (xp.shape[2] - (kw - 1) * dilation - 1) // stride + 1
    y = np.zeros((x.shape[0], oh, ow, kernel.shape[-1]))
    for i in range(oh):
        for j in range(ow):
            patch = xp[
                :,
                i * stride : i * stride + (kh - 1) * dilation + 1 : dilation,
                j * stride : j * stride + (kw - 1) * dilation + 1 : dilation,
            ]
            y[:, i, j] = np.einsum("bhwc,hwcf->bf", patch, kernel)
    return y


@pytest.mark.parametrize(
    "padding, pad_values, stride, dilation",
    [("same", 1.0, 2, 1), ("same", 0.0, 1, 2), ("valid", 0.0, 2, 1), ("same", 1.0, 1, 1)],
)
def test_im2col_rows_match_reference_convolution(padding, pad_values, stride, dilation):
    rng = np.random.default_rng(2)
    layer = QuantConv2D(
        3,
        (3, 2),
        strides=stride,
        dilation_rate=dilation,
        padding=padding,
        pad_values=pad_values,
        use_bias=False,
        input_quantizer="ste_sign",
    )
    x = rng.normal(size=(2, 7, 6, 4)).astype("float32")
    conv = layer(x).numpy()
    codes = np.sign(x) + (x == 0)
    rows = tsq.im2col_rows(layer, codes).numpy()
    kmat = layer.kernel.numpy().reshape(-1, 3)
    assert rows.shape[:3] == conv.shape[:3]
    np.testing.assert_allclose(rows @ kmat, conv, atol=1e-5)
    ref = _numpy_conv(codes, layer.kernel.numpy(), stride, dilation, padding, pad_values)
    np.testing.assert_allclose(rows @ kmat, ref, atol=1e-5)
    # the sampled rows are rows of this matrix: pick some and check them one by one
    flat, out = rows.reshape(-1, rows.shape[-1]), ref.reshape(-1, 3)
    pick = rng.choice(len(flat), 10, replace=False)
    np.testing.assert_allclose(flat[pick] @ kmat, out[pick], atol=1e-5)


def test_sampled_rows_are_conv_rows():
    rng = np.random.default_rng(3)
    model, layer = _model("conv", False, rng)
    x = _inputs("conv", rng, n=16)
    bn = None
    X, Y = step2._sample_layer(model, model, layer, x, bn, 200, 8, np.random.default_rng(0), None)
    assert X.shape == (200, 27) and Y.shape == (200, 4)
    kmat = layer.kernel.numpy().reshape(-1, 4).astype(np.float64)
    q = layer.kernel_quantizer(layer.kernel).numpy().reshape(-1, 4)
    np.testing.assert_allclose(X @ q, Y, atol=1e-5)
    assert not np.allclose(X @ kmat, Y, atol=1e-3)  # the model forwards Q(kernel)


def _plain_model():
    inp = keras.Input((4,))
    return keras.Model(inp, keras.layers.Dense(2)(inp))


def test_bad_inputs_raise():
    x = np.ones((8, 4), "float32")
    with pytest.raises(ValueError, match="Expected a model with at least one .* Received"):
        tsq.learn_transformations(_plain_model(), x, **FAST)
    inp = keras.Input((4,))
    out = QuantDense(2, kernel_quantizer="ste_ternary", name="f")(inp)
    model = keras.Model(inp, out)
    with pytest.raises(ValueError, match="input_quantizer.*Received: layer 'f'"):
        tsq.learn_transformations(model, x, **FAST)
    (record,) = tsq.learn_transformations(model, x, allow_float_inputs=True, **FAST)
    assert record.error_after <= record.error_before + 1e-12
    with pytest.raises(ValueError, match="Expected layers=.*Received: 'nope'"):
        tsq.learn_transformations(model, x, layers=["nope"], **FAST)
    with pytest.raises(ValueError, match="Expected samples.*Received: samples=0"):
        tsq.learn_transformations(model, x, samples=0, allow_float_inputs=True)
    with pytest.raises(ValueError, match="Expected activation.*Received"):
        tsq.learn_transformations(model, x, activation="tanh", allow_float_inputs=True)
    with pytest.raises(ValueError, match="Expected non-empty inputs x. Received"):
        tsq.learn_transformations(model, x[:0], allow_float_inputs=True)
    inp = keras.Input((5, 5, 4))
    out = QuantConv2D(4, 3, groups=2, input_quantizer="ste_sign", name="g")(inp)
    with pytest.raises(ValueError, match="groups=1.*Received: layer 'g' with groups=2"):
        tsq.learn_transformations(keras.Model(inp, out), np.ones((2, 5, 5, 4)), layers=["g"])


def test_layers_argument_selects_any_quantized_layer():
    rng = np.random.default_rng(4)
    inp = keras.Input((12,))
    h = QuantDense(6, input_quantizer=_codes(), kernel_quantizer="ste_sign", name="a")(inp)
    out = QuantDense(3, input_quantizer=_codes(), kernel_quantizer="ste_ternary", name="b")(h)
    model = keras.Model(inp, out)
    x = _inputs("dense", rng)
    records = tsq.learn_transformations(model, x, layers=["b", model.get_layer("a")], **FAST)
    assert [r.name for r in records] == ["a", "b"]
    assert [r.name for r in tsq.learn_transformations(model, x, **FAST)] == ["b"]
