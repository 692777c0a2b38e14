"""CPQ layers through the int8 export: int8 CONV_2D ops whose weights are the CPQ codes
(times a per-channel integer multiple), unsigned CPQ activations passed between layers as
their codes, the learned bit-width, and the ties CPQ rounds down."""

import numpy as np
import pytest
from tensorflow.lite.python import schema_py_generated as schema

import tfquant
from tfquant import quantizers
from tfquant._keras import keras
from tfquant.converters import convert_with_report
from tfquant.converters.flatbuffer import _op_name, load_model_t
from tfquant.converters.flatbuffer import run as run_tflite
from tfquant.layers import QuantConv2D
from tfquant.models import reestimate_batchnorm

SHAPE = (10, 10, 3)


def _inputs(n, seed=1):
    return np.random.default_rng(seed).normal(size=(n, *SHAPE)).astype("float32")


def _cpq_net(bits, head="dense", seed=0, kernel_quantizer=None, batchnorm=True, alpha_w=None):
    """float stem (Conv2D, BN, ReLU) -> 3 x [QuantConv2D with CPQ kernel (signed) and input
    (unsigned) quantizers, BN] -> GAP + Dense head, or a CPQ quantizer as the output."""
    keras.utils.set_random_seed(seed)
    n = 2**bits - 1
    alpha_x = 3.0 / n  # post-BN activations: the grid covers [0, 3]

    def act():
        return quantizers.CPQQuantizer(bits=bits, signed=False, alpha=alpha_x, dropbits=None)

    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    convs = []
    for i in range(3):
        kq = kernel_quantizer() if kernel_quantizer else None
        conv = QuantConv2D(
            16,
            3,
            padding="same",
            use_bias=False,
            kernel_quantizer=kq or quantizers.CPQQuantizer(bits=bits, signed=True, alpha=0.1),
            input_quantizer=act(),
            name=f"cpq{i}",
        )
        convs.append(conv)
        x = conv(x)
        if batchnorm:
            x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
    if head == "dense":
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        outputs = keras.layers.Dense(10, name="head")(x)
    else:
        outputs = act()(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    for conv in convs:
        q = conv.kernel_quantizer
        if alpha_w is None:
            # the tensor's scale: codes spread over the grid (not all zero)
            w = conv.kernel.numpy()
            a = 2 * np.abs(w).mean() / np.sqrt(max(2 ** (q.bits - 1) - 1, 1))
        else:
            a = alpha_w
        q.log_alpha.assign(np.log(a))
    for bn in [m for m in model.layers if isinstance(m, keras.layers.BatchNormalization)]:
        c = bn.gamma.shape[0]
        sign = np.where(rng.uniform(size=c) < 0.2, -1.0, 1.0)  # some channels flip sign
        bn.gamma.assign((sign * rng.uniform(0.7, 1.5, c)).astype("float32"))
        bn.beta.assign(rng.normal(0.3, 0.3, c).astype("float32"))
    if batchnorm:
        reestimate_batchnorm(model, _inputs(256, seed=7))
    return model, convs


def _task(n, seed=1):
    """Random inputs labelled by a fixed linear function of their channel means."""
    x = _inputs(n, seed)
    rng = np.random.default_rng(42)
    return x, (x.mean(axis=(1, 2)) @ rng.normal(size=(3, 10))).argmax(axis=1)


def _train(model, epochs=3):
    """A few epochs on the task: logits with margins, so argmax agreement is meaningful."""
    x, y = _task(512, seed=3)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model


def _int8_convs(flatbuffer):
    """(int8 weights as (kh, kw, cin, cout), per-channel scales) of each CONV_2D with int8
    weights, in execution order; and the number of float CONV_2D ops."""
    model = load_model_t(flatbuffer)
    sub = model.subgraphs[0]
    out, n_float = [], 0
    for op in sub.operators:
        if _op_name(model, op.opcodeIndex) != "CONV_2D":
            continue
        w = sub.tensors[op.inputs[1]]
        if w.type != schema.TensorType.INT8:
            n_float += 1
            continue
        values = np.frombuffer(bytes(bytearray(model.buffers[w.buffer].data)), np.int8)
        values = values.reshape([int(d) for d in w.shape]).transpose(1, 2, 3, 0)
        out.append((values.astype(np.int64), np.asarray(w.quantization.scale, np.float64)))
    return out, n_float


def _codes(conv):
    """The CPQ codes of the layer's kernel, in numpy: after finalize the kernel is alpha k;
    before, k = clip(ceil(w / alpha - 1/2)) on the learned-bits range."""
    q = conv.kernel_quantizer
    alpha = np.float32(q.alpha_value)
    grid = q.grid  # values u k, u = alpha step (step 2 where DropBits "B" dropped a bit)
    step = round(grid.step / q.alpha_value)
    w = conv.kernel.numpy().astype(np.float32)
    if float(conv.kernel_gate.numpy()) == 0.0:  # finalized: the kernel is the value
        return np.round(w / alpha).astype(np.int64)
    k = np.clip(np.ceil(w / alpha / np.float32(step) - np.float32(0.5)), grid.k_min, grid.k_max)
    return (step * k).astype(np.int64)


def _bn_factor(bn):
    gamma, _, _, var = bn.get_weights()
    return gamma / np.sqrt(var + bn.epsilon)


def _check_weights(model, convs, flatbuffer, batchnorm=True):
    int8, n_float = _int8_convs(flatbuffer)
    assert n_float == 1  # the stem only
    assert len(int8) == len(convs)
    for i, (conv, (q8, scales)) in enumerate(zip(convs, int8)):
        q = conv.kernel_quantizer
        step = round(q.grid.step / q.alpha_value)  # 2 where DropBits "B" dropped the lowest bit
        codes = _codes(conv) // step  # the grid's codes, step alpha * step
        assert len(np.unique(codes)) >= 3, "codes all (nearly) the same: a trivial kernel"
        f = _bn_factor(model.get_layer(f"bn{i}")) if batchnorm else np.ones(codes.shape[-1])
        # int8 weight = sign(f_o) m_o k with m_o = floor(127 / max_o |k|) (finer int32 bias)
        top = np.abs(codes).reshape(-1, codes.shape[-1]).max(axis=0)
        m = np.floor(127 / np.maximum(top, 1))
        np.testing.assert_array_equal(q8, (np.sign(f) * m * codes).astype(np.int64))
        alpha = conv.kernel_quantizer.alpha_value * step
        np.testing.assert_allclose(scales, alpha * np.abs(f) / m, rtol=1e-5)


def _check_conversion(model, convs, bits, x):
    flatbuffer, report = convert_with_report(model, calibration_data=x[:64], parity_inputs=x)
    assert [(r.name, r.became, r.ops) for r in report.layers] == [
        (f"cpq{i}", "int8", ["CONV_2D(int8)"]) for i in range(3)
    ], report.text()
    assert [(r.weight_bits, r.input_bits) for r in report.layers] == [(bits, bits)] * 3
    assert f"cpq0 {bits}/{bits}" in report.text()
    # cpq0 -> cpq1 -> cpq2 pass codes; cpq2's output feeds float pooling (calibrated range)
    assert [r.exact for r in report.layers] == [True, True, False], report.notes
    assert "cpq2: output requantized to a calibrated int8 range" in " ".join(report.notes)
    _check_weights(model, convs, flatbuffer)
    keras_out = model.predict(x, verbose=0)
    tflite_out = run_tflite(flatbuffer, x)[0]
    scale = np.abs(keras_out).max()
    assert np.abs(tflite_out - keras_out).max() < 0.05 * scale
    return np.mean(keras_out.argmax(1) == tflite_out.argmax(1))


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_cpq_layers_export_as_int8_with_code_weights(bits):
    """Trained a few epochs; converted as trained (latent kernels, gate 1), then again after
    tfquant.finalize (kernel = alpha k, gate 0): both give the same int8 codes."""
    model, convs = _cpq_net(bits)
    _train(model)
    x, _ = _task(400)
    # Not bit-exact end to end: TFLite rounds the folded bias to int32 (scale s_in s_w), which
    # moves a few pre-activations across a rounding boundary (~0.1-0.3% of the codes per
    # layer, up to one level), and cpq2's output is requantized to a calibrated range.
    assert _check_conversion(model, convs, bits, x) >= 0.995
    before = [_codes(c) for c in convs]
    tfquant.finalize(model, x[:256])
    assert all(float(c.kernel_gate.numpy()) == 0.0 for c in convs)
    for c, codes in zip(convs, before):
        np.testing.assert_array_equal(_codes(c), codes)
    assert _check_conversion(model, convs, bits, x) >= 0.995


@pytest.mark.parametrize("bits", [2, 4])
def test_cpq_codes_travel_between_int8_layers(bits):
    """Ending in a CPQ quantizer (2^b - 1 divides 255): every layer is on the exact path."""
    model, convs = _cpq_net(bits, head="cpq")
    x = _inputs(64)
    flatbuffer, report = convert_with_report(model, calibration_data=x, parity_inputs=x)
    assert [(r.became, r.exact) for r in report.layers] == [("int8", True)] * 3, report.notes
    # MINIMUM: cpq0's input quantizer (float ops on the stem's output), the codes clipped
    # at n u on cpq0 -> cpq1 and cpq1 -> cpq2, the output quantizer
    assert report.ops.get("MINIMUM") == 4, report.ops
    _check_weights(model, convs, flatbuffer)
    keras_out = model.predict(x, verbose=0)
    tflite_out = run_tflite(flatbuffer, x)[0]
    u = convs[0].input_quantizer.alpha_value
    codes = keras_out / u
    assert np.allclose(codes, np.round(codes), atol=1e-4)
    assert len(np.unique(np.round(codes))) >= 3
    diff = np.abs(tflite_out - keras_out) / u
    # Not bit-exact: TFLite rounds each folded bias to int32 (scale s_in s_w, half a unit off
    # at most), which moves pre-activations near a rounding boundary across it; measured
    # 0-0.5% of the output codes at 2 and 4 bits, by one level, at most two after 3 layers
    assert diff.max() <= 2 + 1e-4
    assert np.mean(diff > 1e-4) < 0.03


@pytest.mark.parametrize("scheme", ["A", "B"])
def test_learned_bits_export_on_the_narrower_grid(scheme):
    def kq():
        q = quantizers.CPQQuantizer(
            bits=4, signed=True, alpha=0.1, dropbits=scheme, learn_bits=True
        )
        q.bit_gates.assign(np.array([10.0, 10.0, -10.0], np.float32))  # top level closed
        assert q.learned_bits() == 3
        q.finalize()
        return q

    model, convs = _cpq_net(4, kernel_quantizer=kq)
    x = _inputs(64)
    flatbuffer, report = convert_with_report(model, calibration_data=x, parity_inputs=x)
    assert [r.became for r in report.layers] == ["int8"] * 3
    assert [(r.weight_bits, r.input_bits) for r in report.layers] == [(3, 4)] * 3
    assert report.layers[0].exact
    _check_weights(model, convs, flatbuffer)
    for conv in convs:
        codes = _codes(conv)
        if scheme == "A":  # range dropped: 3-bit codes
            assert codes.min() >= -4 and codes.max() <= 3
        else:  # resolution dropped: even codes of the 4-bit range
            assert np.all(codes % 2 == 0) and codes.min() >= -8 and codes.max() <= 6
        assert len(np.unique(codes)) >= 3


def test_ties_on_a_lattice_are_reported():
    """No bias and no BatchNorm with power-of-two steps: pre-activations hit the points
    halfway between levels, which CPQ rounds down and int8 requantization up."""
    model, convs = _cpq_net(2, head="cpq", batchnorm=False, alpha_w=0.25)
    for conv in convs:
        conv.input_quantizer.log_alpha.assign(0.0)  # alpha = 1
    model.layers[-1].log_alpha.assign(0.0)
    x = _inputs(32)
    _, report = convert_with_report(model, calibration_data=x, parity_inputs=x)
    assert [r.became for r in report.layers] == ["int8"] * 3
    assert not any(r.exact for r in report.layers)
    assert "quantizer rounds such ties to the lower level" in " ".join(report.notes)
