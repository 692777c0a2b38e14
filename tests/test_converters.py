"""tfquant.converters: real conversions through LCE, checked by the report's op table and by
LCE's interpreter against Keras; the rewrites past LCE's limits; errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import binary_cnn, randomize_batchnorm

import tfquant
from tfquant._keras import keras
from tfquant.converters import (
    ConversionError,
    LayerNotBinaryError,
    bench,
    convert,
    convert_with_report,
    load_model,
)
from tfquant.converters.flatbuffer import io_details, op_counts, run, size_breakdown
from tfquant.converters.rewrite import int8_weight_scales, plan_layers, rewrite_model
from tfquant.layers import QuantConv2D, QuantDense, QuantDepthwiseConv2D
from tfquant.quantizers import SteTernary, UniformQuantizer

BINARY = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign")


def _act2():
    return UniformQuantizer(2, "activation")


def binary_dense_model() -> keras.Model:
    """Binary convs, then a binary QuantDense head (LCE issue 53)."""
    base = binary_cnn()
    x = keras.layers.GlobalAveragePooling2D()(base.outputs[0])
    x = QuantDense(16, **BINARY)(x)
    return keras.Model(base.inputs[0], x)


def _set_bn(model: keras.Model, seed: int = 0) -> None:
    # BatchNorm outputs around [0, 1], where the 2-bit activation quantizer has its levels.
    rng = np.random.default_rng(seed)
    for bn in [m for m in model.layers if isinstance(m, keras.layers.BatchNormalization)]:
        n = bn.gamma.shape[0]
        bn.set_weights(
            [
                rng.uniform(0.05, 0.2, n),
                rng.uniform(0.3, 0.7, n),
                rng.normal(0, 0.5, n),
                rng.uniform(1, 4, n),
            ]
        )


def ternary_2bit_model() -> keras.Model:
    """Ternary conv + BN, 2-bit (DoReFa) conv + BN, 2-bit activations, float head."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 16))
    x = QuantConv2D(32, 3, padding="same", input_quantizer=_act2(), kernel_quantizer=SteTernary())(
        inp
    )
    x = keras.layers.BatchNormalization()(x)
    x = QuantConv2D(
        32,
        3,
        padding="same",
        input_quantizer=_act2(),
        kernel_quantizer=UniformQuantizer(2, "weight"),
    )(x)
    x = keras.layers.BatchNormalization()(x)
    x = _act2()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(10)(x))
    _set_bn(model)
    return model


def mixed_model() -> keras.Model:
    """Float first conv, binary convs with same-one padding, a ternary conv, binary Dense."""
    keras.utils.set_random_seed(0)
    common = dict(padding="same", pad_values=1.0, use_bias=False)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = QuantConv2D(32, 3, **common, **BINARY)(x)
    x = keras.layers.BatchNormalization()(x)
    x = QuantConv2D(32, 3, **common, **BINARY)(x)
    x = keras.layers.BatchNormalization()(x)
    x = QuantConv2D(32, 3, padding="same", input_quantizer=_act2(), kernel_quantizer=SteTernary())(
        x
    )
    x = keras.layers.BatchNormalization()(x)
    x = _act2()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = QuantDense(10, **BINARY)(x)
    model = keras.Model(inp, x)
    randomize_batchnorm(model)
    _set_bn(model)  # overrides: every BatchNorm to the [0, 1] regime
    return model


def _x(shape, seed=1, low=None):
    rng = np.random.default_rng(seed)
    if low is not None:
        return rng.uniform(low, 1.0, size=shape).astype(np.float32)
    return rng.normal(size=shape).astype(np.float32)


def _by_name(report):
    return {r.name: r for r in report.layers}


# ---------------------------------------------------------------------------------------------
# LCE's own patterns


@pytest.mark.parametrize("kernel_quantizer", ["ste_sign", "scaled_sign"])
def test_binary_cnn_becomes_bconv_with_parity(kernel_quantizer):
    model = binary_cnn(kernel_quantizer)
    x = _x((4, 16, 16, 32))
    flatbuffer, report = convert_with_report(model, parity_inputs=x)
    assert report.ops.get("LceBconv2d") == 2 and "CONV_2D" not in report.ops, report.ops
    assert [r.became for r in report.layers] == ["binary", "binary"]
    assert all(r.reason is None for r in report.layers)
    assert report.parity["max_abs_diff"] < 1e-4 * max(1.0, report.parity["output_scale"])
    assert report.parity["inputs"] == "given" and report.parity["samples"] == 4
    # bit-packed filters: O * kh * kw * ceil(C / 32) int32 words
    assert report.sizes["binary_weights"] == 4 * (32 * 9 * 1 + 64 * 9 * 1)
    assert report.sizes["float_weights"] < 2048
    assert report.seconds["convert"] < 10


# ---------------------------------------------------------------------------------------------
# LCE issue 53: binary Dense


def test_binary_dense_becomes_bconv_and_matches_keras():
    model = binary_dense_model()
    x = _x((8, 16, 16, 32))
    flatbuffer, report = convert_with_report(model, parity_inputs=x)
    assert report.ops.get("LceBconv2d") == 3, report.ops
    assert "FULLY_CONNECTED" not in report.ops and "LceDequantize" not in report.ops
    dense = _by_name(report)[model.layers[-1].name]
    assert dense.became == "binary" and dense.rewrite == "dense_as_bconv"
    assert report.parity["max_abs_diff"] <= 1e-5 * max(1.0, report.parity["output_scale"])
    assert report.parity["argmax_agreement"] == 1.0


def test_binary_dense_without_rewrite_fails_naming_the_layer_unless_allowed():
    model = binary_dense_model()
    name = model.layers[-1].name
    with pytest.raises(LayerNotBinaryError, match=name):
        convert(model, rewrite=False)
    flatbuffer, report = convert_with_report(model, rewrite=False, allow_float=True, verify=False)
    assert "FULLY_CONNECTED" in report.ops
    dense = _by_name(report)[name]
    assert dense.became == "float" and dense.reason
    assert any("allow_float" in n for n in report.notes)


def test_user_model_is_not_modified():
    model = binary_dense_model()
    before = [w.copy() for w in model.get_weights()]
    names = [layer.name for layer in model.layers]
    convert(model)
    assert [layer.name for layer in model.layers] == names
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# LCE issue 806: ternary and k-bit as exact int8


def test_int8_weight_scales_make_levels_exact_codes():
    rng = np.random.default_rng(0)
    ternary = SteTernary()(rng.normal(size=(3, 3, 8, 4)).astype(np.float32)).numpy()
    scales, exact = int8_weight_scales(ternary, SteTernary())
    assert exact
    assert set(np.unique(np.round(ternary / scales))) <= {-127.0, 0.0, 127.0}
    q = UniformQuantizer(2, "weight")
    two_bit = q(rng.normal(size=(3, 3, 8, 4)).astype(np.float32)).numpy()
    scales, exact = int8_weight_scales(two_bit, q)
    assert exact
    assert set(np.unique(np.round(two_bit / scales))) <= {-126.0, -42.0, 42.0, 126.0}
    for bits in range(3, 9):
        q = UniformQuantizer(bits, "weight")
        w = q(rng.normal(size=(256, 4)).astype(np.float32)).numpy()
        # 8-bit DoReFa weights have 256 levels without a zero: symmetric int8 has 255 codes
        assert int8_weight_scales(w, q)[1] == (bits <= 7), bits


def test_ternary_and_2bit_become_exact_int8():
    model = ternary_2bit_model()
    x = _x((16, 8, 8, 16), low=0.0)
    flatbuffer, report = convert_with_report(model, calibration_data=x, parity_inputs=x)
    assert report.ops.get("CONV_2D") == 2, report.ops
    quantized = [r for r in report.layers]
    assert [r.became for r in quantized] == ["int8", "int8"]
    assert all(r.exact for r in quantized), report.notes
    assert all(r.rewrite == "int8+batchnorm" for r in quantized)
    p = report.parity
    assert p["max_abs_diff"] <= 1e-4 * p["output_scale"], p
    assert p["argmax_agreement"] == 1.0
    # int8 weights: about a quarter of float32
    _, float_report = convert_with_report(model, int8="none", verify=False)
    assert [r.became for r in float_report.layers] == ["float", "float"]
    assert all("int8" in r.reason for r in float_report.layers)
    ratio = report.sizes["int8_weights"] / float_report.sizes["float_weights"]
    assert 0.2 < ratio < 0.3, ratio
    assert report.sizes["total"] < 0.45 * float_report.sizes["total"]


def test_mixed_model_converts_in_one_go():
    model = mixed_model()
    x = _x((8, 16, 16, 3))
    flatbuffer, report = convert_with_report(model, calibration_data=x, parity_inputs=x)
    became = {r.name: r.became for r in report.layers}
    assert sorted(became.values()) == ["binary", "binary", "binary", "int8"], report.layers
    assert report.ops.get("LceBconv2d") == 3 and "FULLY_CONNECTED" not in report.ops
    assert report.ops.get("CONV_2D") == 2  # the float first conv and the int8 ternary one
    p = report.parity
    assert p["max_abs_diff"] <= 1e-4 * p["output_scale"], p


def test_ternary_with_sign_inputs_feeding_a_binary_conv_is_exact():
    # binary activations, ternary weights; the next layer reads only the sign of the int8
    # output, which the rewrite keeps exact (half-step shift around the requantization)
    keras.utils.set_random_seed(0)
    common = dict(padding="same", pad_values=1.0, input_quantizer="ste_sign")
    inp = keras.Input((8, 8, 32))
    x = QuantConv2D(32, 3, kernel_quantizer=SteTernary(), **common)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = QuantConv2D(32, 3, kernel_quantizer="ste_sign", **common)(x)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inp, x)
    randomize_batchnorm(model)
    x = _x((8, 8, 8, 32))
    _, report = convert_with_report(model, calibration_data=x, parity_inputs=x)
    assert [r.became for r in report.layers] == ["int8", "binary"]
    assert report.layers[0].exact
    p = report.parity
    assert p["max_abs_diff"] <= 1e-4 * p["output_scale"], p


# ---------------------------------------------------------------------------------------------
# Layers declared binary that cannot become LceBconv2d


def test_float_kernel_with_gate_zero_fails_with_reason():
    model = binary_cnn()
    layer = model.layers[0]
    layer.kernel_gate.assign(0.0)  # the latent float kernel is forwarded as it is
    with pytest.raises(LayerNotBinaryError, match=f"{layer.name}.*not \\+-alpha"):
        convert(model)
    _, report = convert_with_report(model, allow_float=True, verify=False)
    row = _by_name(report)[layer.name]
    assert row.became == "float" and "tfquant.finalize" in row.reason
    tfquant.finalize(binary_cnn())  # finalize makes the kernel binary again


def test_binary_depthwise_is_named_with_reason():
    inp = keras.Input((8, 8, 32))
    x = QuantDepthwiseConv2D(3, padding="same", **BINARY)(inp)
    model = keras.Model(inp, x)
    with pytest.raises(LayerNotBinaryError, match="no binary depthwise"):
        convert(model)


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_inputs_raise_conversion_error(tmp_path):
    with pytest.raises(ConversionError, match="not found"):
        convert(tmp_path / "missing.keras")
    bad = tmp_path / "bad.keras"
    bad.write_text("not a model")
    with pytest.raises(ConversionError, match="not a zip archive"):
        convert(bad)
    with pytest.raises(ConversionError, match="target"):
        convert(binary_cnn(), target="x86")
    with pytest.raises(ConversionError, match="Expected a Keras model"):
        convert(42)
    with pytest.raises(ConversionError, match="inference_input_type=int8"):
        convert(binary_cnn(), inference_input_type="int8")


def test_unsupported_layer_is_a_conversion_error():
    from tfquant._keras import tf

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Lambda(lambda x: tf.math.digamma(x))(inp))
    with pytest.raises(ConversionError, match="Digamma"):
        convert(model)


# ---------------------------------------------------------------------------------------------
# Formats and the benchmark helpers


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_saved_files_convert_like_the_model(tmp_path, suffix):
    model = binary_dense_model()
    path = str(tmp_path / f"model{suffix}")
    model.save(path)
    flatbuffer, report = convert_with_report(path)
    assert op_counts(flatbuffer) == op_counts(convert(model))
    assert [r.became for r in report.layers] == ["binary"] * 3
    assert report.parity["max_abs_diff"] <= 1e-5 * max(1.0, report.parity["output_scale"])


def test_saved_model_directory_converts_as_it_is(tmp_path):
    # Keras 3's model.export writes no Keras layers: no rewrite, no attribution, parity
    # against the SavedModel's own serving signature, and the report says so.
    model = binary_dense_model()
    path = tmp_path / "exported"
    model.export(str(path), verbose=False)
    x = _x((3, 16, 16, 32))
    flatbuffer, report = convert_with_report(path, parity_inputs=x)
    as_is = convert(model, rewrite=False, allow_float=True)
    assert op_counts(flatbuffer) == op_counts(as_is)
    assert report.ops.get("LceBconv2d") == 2 and "FULLY_CONNECTED" in report.ops
    assert report.layers == [] and report.sizes["ideal_bitpacked"] is None
    assert any("SavedModel directory" in n and "not checked" in n for n in report.notes)
    assert report.parity["reference"] == "SavedModel serving signature"
    assert report.parity["max_abs_diff"] <= 1e-5 * max(1.0, report.parity["output_scale"])
    assert "parity vs SavedModel serving signature" in report.text()
    expected = model(x).numpy()
    np.testing.assert_allclose(run(flatbuffer, x)[0], expected, atol=1e-5 * np.abs(expected).max())
    with pytest.raises(ConversionError, match="SavedModel.*no Keras layers"):
        load_model(path)
    with pytest.raises(ConversionError, match="layer names"):
        convert(path, int8=["quant_dense"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match="without saved_model.pb"):
        convert(tmp_path / "empty")


def test_legacy_keras_model_gets_an_error_naming_both_packages():
    legacy = type("Sequential", (), {"__module__": "tf_keras.src.engine.sequential"})()
    with pytest.raises(ConversionError, match="Keras 3.*tf_keras") as info:
        convert(legacy)
    assert isinstance(info.value, TypeError)


def test_rewritten_model_serializes_and_keeps_the_batch_dynamic(tmp_path):
    model = mixed_model()
    plans = plan_layers(model)
    x = _x((8, 16, 16, 3))
    deploy, _ = rewrite_model(model, plans, calibration_data=x)
    kinds = {type(layer).__name__ for layer in deploy.layers}
    assert {"BinaryDenseAsConv", "Int8Layer", "FoldedBatchNorm"} <= kinds
    deploy.save(tmp_path / "deploy.keras")
    again = keras.models.load_model(tmp_path / "deploy.keras")
    np.testing.assert_array_equal(again(x).numpy(), deploy(x).numpy())
    flatbuffer = convert(model, calibration_data=x)
    # The exported signature has a None batch; LCE's converter writes batch 1 (no
    # shape_signature), and LCE's interpreter runs a batch sample by sample.
    (inp,), (out,) = io_details(flatbuffer)
    assert inp["shape"] == [1, 16, 16, 3] and out["shape"] == [1, 10]
    for batch in (1, 5):
        xb = _x((batch, 16, 16, 3), seed=batch)
        expected = model(xb).numpy()
        np.testing.assert_allclose(
            run(flatbuffer, xb)[0], expected, atol=1e-4 * np.abs(expected).max()
        )


def test_parity_matches_inputs_and_outputs_by_signature_name(tmp_path):
    # The flatbuffer's tensor order need not be the model's (measured: outputs reversed
    # here); parity feeds and reads by the serving signature's names.
    b, a = keras.Input((6,), name="zeta"), keras.Input((4,), name="alpha")
    y = keras.layers.Concatenate()([keras.layers.Dense(3)(b), keras.layers.Dense(2)(a)])
    model = keras.Model([b, a], [y, keras.layers.Dense(5)(a)])
    _, report = convert_with_report(model)
    assert report.parity["max_abs_diff"] < 1e-5, report.parity
    model.export(str(tmp_path / "two"), verbose=False)
    _, report = convert_with_report(tmp_path / "two")
    assert report.parity["max_abs_diff"] < 1e-5, report.parity


def test_export_directory_is_removed_on_success_and_failure(tmp_path, monkeypatch):
    import tempfile

    from tfquant.converters import lce

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    convert(binary_cnn())
    assert os.listdir(tmp_path) == []

    def fail(*args, **kwargs):
        raise ConversionError("Larq Compute Engine could not convert the model: test")

    monkeypatch.setattr(lce, "_run_lce", fail)
    with pytest.raises(ConversionError, match="test"):
        convert(binary_cnn())
    assert os.listdir(tmp_path) == []


def test_size_breakdown_and_latency_helpers():
    flatbuffer = convert(binary_cnn())
    sizes = size_breakdown(flatbuffer)
    assert sizes["total"] == len(flatbuffer)
    assert (
        sum(sizes[k] for k in ("binary_weights", "int8_weights", "float_weights", "other"))
        == (sizes["total"])
    )
    (row,) = bench.local_latency(flatbuffer, threads=[1], runs=2, warmup=1)
    assert row["runtime"] == "lce" and row["median_ms"] > 0
    # Device benchmarks (ssh, adb, their output format): tests/test_device_bench.py.
