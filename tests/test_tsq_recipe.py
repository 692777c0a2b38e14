"""TSQ as a user runs it: the zoo's method forms, the three-stage recipe, and the int8
export whose sparse codes travel between layers as exact int8 codes."""

import numpy as np
import pytest

import tfquant
from tfquant import quantizers, train, zoo
from tfquant._keras import keras
from tfquant.converters import convert_with_report
from tfquant.converters.flatbuffer import run as run_tflite
from tfquant.layers import QuantConv2D
from tfquant.methods import tsq

# ---------------------------------------------------------------------------------------------
# The zoo builds a network for a method


def test_zoo_method_chooses_the_quantizers():
    eps, step = quantizers.sparse_fixed_point(2)
    model = zoo.build("binary_cnn", method="tsq", input_shape=(8, 8, 1))
    convs = [m for m in model.layers if isinstance(m, QuantConv2D)]
    assert len(convs) == 4
    for m in convs:
        assert isinstance(m.input_quantizer, quantizers.SparseQuantizer)
        assert (m.input_quantizer.threshold, m.input_quantizer.step) == (eps, step)
        assert isinstance(m.kernel_quantizer, quantizers.SteTernary)
        assert m.kernel_quantizer.method == "optimal" and m.pad_values == 0.0
    # the stem's input and the classifier's input stay float: a float Conv2D first, and a
    # ReLU (not a quantizer) before pooling and the classifier
    assert type(model.get_layer("stem_conv")) is keras.layers.Conv2D
    assert isinstance(model.get_layer("head_relu"), keras.layers.ReLU)

    binary = zoo.build("bireal_cnn", method="binary-relax", input_shape=(8, 8, 1))
    convs = [m for m in binary.layers if isinstance(m, QuantConv2D)]
    # BinaryRelax's relaxed quantizer, built with the layer, over the paper's scaled sign
    assert {type(m.kernel_quantizer).__name__ for m in convs} == {"RelaxedQuantizer"}
    assert {type(m.kernel_quantizer.quantizer).__name__ for m in convs} == {"ScaledSign"}
    assert len({id(m.kernel_quantizer) for m in convs}) == len(convs)  # one per layer
    assert all(m.pad_values == 1.0 for m in convs)  # LCE's fast path for sign inputs
    assert "head_relu" not in [m.name for m in binary.layers]


def test_zoo_float_twin_has_no_quantizer_and_relu_nonlinearity():
    model = zoo.build("bireal_cnn", method="float", input_shape=(8, 8, 1))
    convs = [m for m in model.layers if isinstance(m, QuantConv2D)]
    assert convs and all(m.input_quantizer is None and m.kernel_quantizer is None for m in convs)
    relus = [m for m in model.layers if isinstance(m, keras.layers.ReLU)]
    assert len(relus) == len(convs) + 1  # one before each conv, one before the head
    binary = zoo.build("bireal_cnn", method="ste", input_shape=(8, 8, 1))
    assert model.count_params() == binary.count_params() - len(convs)  # no kernel gates
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    assert model(x).shape == (2, 10)


def test_zoo_rejects_method_with_explicit_quantizers_and_unknown_methods():
    with pytest.raises(ValueError, match="either method= or kernel_quantizer="):
        zoo.build("binary_cnn", method="tsq", kernel_quantizer="ste_sign")
    with pytest.raises(ValueError, match="Unknown method 'ternary'"):
        zoo.build("binary_cnn", method="ternary")


def test_sparse_fixed_point():
    eps, step = quantizers.sparse_fixed_point(2)
    assert eps == pytest.approx(0.3254, abs=1e-4) and step == pytest.approx(0.6508, abs=1e-4)
    assert eps == pytest.approx(step / 2, rel=1e-12)
    assert step == pytest.approx(quantizers.optimal_step(eps, 2), rel=1e-9)
    # at the fixed point the sparse quantizer is round-to-nearest on {0, d, 2d, 3d}
    x = np.random.default_rng(0).normal(size=100_000).astype("float32")
    q = quantizers.SparseQuantizer(2, eps, step)(x).numpy()
    ref = np.clip(np.round(x.astype(np.float64) / step), 0, 3) * step
    assert np.mean(np.abs(q - ref) > 1e-6) == 0.0


# ---------------------------------------------------------------------------------------------
# Export: ternary kernels on sparse codes as int8, codes passed on exactly


def _tsq_chain(threshold, step, seed=0):
    """float stem -> three ternary convs on sparse codes (BN after each, max pool before the
    third) -> the sparse quantizer as the output: every value the network produces is a
    level, so an exact export reproduces it exactly."""
    keras.utils.set_random_seed(seed)

    def sq():
        return quantizers.SparseQuantizer(2, threshold, step)

    def conv(name):
        return QuantConv2D(
            32,
            3,
            padding="same",
            input_quantizer=sq(),
            kernel_quantizer=quantizers.SteTernary(method="optimal"),
            use_bias=False,
            name=name,
        )

    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = conv("t0")(x)
    x = keras.layers.BatchNormalization(name="bn0")(x)
    x = conv("t1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = conv("t2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    outputs = sq()(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    for bn in [m for m in model.layers if isinstance(m, keras.layers.BatchNormalization)]:
        c = bn.moving_mean.shape[0]
        bn.gamma.assign(rng.uniform(1.0, 2.0, c).astype("float32"))
        bn.beta.assign(rng.normal(0.3, 0.3, c).astype("float32"))
        bn.moving_mean.assign(rng.normal(0, 0.5, c).astype("float32"))
        bn.moving_variance.assign(rng.uniform(1, 4, c).astype("float32"))
    return tfquant.finalize(model)


def test_tsq_export_is_bit_exact_at_the_fixed_point():
    eps, step = quantizers.sparse_fixed_point(2)
    model = _tsq_chain(eps, step)
    x = np.random.default_rng(1).normal(size=(64, 10, 10, 3)).astype("float32")
    flatbuffer, report = convert_with_report(model, calibration_data=x, parity_inputs=x)
    assert [(r.name, r.became, r.exact) for r in report.layers] == [
        ("t0", "int8", True),
        ("t1", "int8", True),
        ("t2", "int8", True),
    ], report.notes
    assert all(r.ops == ["CONV_2D(int8)"] for r in report.layers)
    # only the first ternary layer's input is quantized by float ops (the stem is float);
    # t0 -> t1 and t1 -> pool -> t2 pass int8 codes, clipped by MINIMUM
    assert report.ops.get("GREATER") == 3 + 3, report.ops  # t0's input and the output layer
    assert report.ops.get("MINIMUM") == 2, report.ops
    keras_out = model.predict(x, verbose=0)
    tflite_out = run_tflite(flatbuffer, x)[0]
    codes = keras_out / step
    assert np.allclose(codes, np.round(codes), atol=1e-5)
    assert len(np.unique(np.round(codes))) == 4  # every level occurs
    assert np.abs(tflite_out - keras_out).max() < 1e-5


def test_tsq_export_at_threshold_032_names_the_band_that_rounds_the_other_way():
    step = quantizers.optimal_step(0.32)
    model = _tsq_chain(0.32, step)
    x = np.random.default_rng(1).normal(size=(64, 10, 10, 3)).astype("float32")
    flatbuffer, report = convert_with_report(model, calibration_data=x, parity_inputs=x)
    assert [r.became for r in report.layers] == ["int8"] * 3
    assert [r.exact for r in report.layers] == [False, False, False]
    note = " ".join(report.notes)
    assert "threshold 0.32 is not step/2 = 0.324" in note and "give 0 instead of d" in note
    # the band is narrow but real: a few outputs differ, by one level, after three layers
    diff = np.abs(run_tflite(flatbuffer, x)[0] - model.predict(x, verbose=0))
    assert diff.max() <= step + 1e-5
    assert 0 < np.mean(diff > 1e-5) < 0.1


def test_tsq_zoo_model_converts_to_int8_at_a_fraction_of_float_size():
    model = tfquant.finalize(zoo.build("binary_cnn", method="tsq", input_shape=(16, 16, 1)))
    float_model = zoo.build("binary_cnn", method="float", input_shape=(16, 16, 1))
    x = np.random.default_rng(0).normal(size=(32, 16, 16, 1)).astype("float32")
    _, report = convert_with_report(model, calibration_data=x, parity_inputs=x)
    _, float_report = convert_with_report(float_model, verify=False)
    assert [r.became for r in report.layers] == ["int8"] * 4
    # every ternary layer but the last passes exact codes; the last feeds the float head
    assert [r.exact for r in report.layers] == [True, True, True, False]
    assert "s1_conv1: output requantized to a calibrated int8 range" in " ".join(report.notes)
    assert report.sizes["total"] <= 0.3 * float_report.sizes["total"]
    assert "int8, 3 of them bit-exact" in report.text()


# ---------------------------------------------------------------------------------------------
# The recipe


def _digits():
    from tfquant import datasets

    (xtr, ytr), (xte, yte) = datasets.load("digits")
    return (xtr[:384], ytr[:384]), (xte[:128], yte[:128])


def test_fit_runs_the_three_stages():
    (x, y), _ = _digits()
    keras.utils.set_random_seed(0)
    model = zoo.build("binary_cnn", method="tsq", input_shape=x.shape[1:], widths=(32, 32))
    gates = []

    class Gates(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            gates.append([float(m.kernel_gate.numpy()) for m in tsq.ternary_layers(model)])

    result = tsq.fit(
        model,
        x,
        y,
        code_epochs=2,
        finetune_epochs=1,
        batch_size=64,
        step2_inputs=128,
        samples=500,
        iterations=5,
        callbacks=[Gates()],
        verbose=0,
    )
    # step 1 forwards float kernels (gate 0), step 3 the ternary approximation (gate 1)
    assert gates == [[0.0] * 4, [0.0] * 4, [1.0] * 4]
    assert len(result.history["loss"]) == 3 and result.epochs == (2, 1)
    assert [r.name for r in result.records] == ["s0_conv0", "s0_conv1", "s1_conv0", "s1_conv1"]
    assert all(r.error_after <= r.error_before for r in result.records)
    assert all(r.folded for r in result.records)
    tfquant.finalize(model, x)
    for m in tsq.ternary_layers(model):  # per channel {-a_c, 0, a_c}
        w = m.kernel.numpy().reshape(-1, m.kernel.shape[-1])
        for c in range(w.shape[1]):
            assert len(np.unique(np.abs(w[:, c]))) <= 2


def test_fit_without_step2_and_bad_input(tmp_path):
    (x, y), _ = _digits()
    model = zoo.build("binary_cnn", method="tsq", input_shape=x.shape[1:], widths=(32, 32))
    result = tsq.fit(model, x, y, code_epochs=1, finetune_epochs=0, step2=False, verbose=0)
    assert result.records == [] and len(result.history["loss"]) == 1
    with pytest.raises(ValueError, match="Received: finetune_epochs=-1"):
        tsq.fit(model, x, y, code_epochs=1, finetune_epochs=-1)
    with pytest.raises(ValueError, match="code_epochs"):
        tsq.fit(model, x, y, code_epochs=0, finetune_epochs=1)
    # a resume point (the checkpoint tfquant train gives every method): step 3's epochs
    # only after step 2 (its records in the method's state), step 1's only before
    def checkpoint(start):
        config = train.TrainConfig(method="tsq")
        return train.checkpoints._Checkpoints(tmp_path, config, False, start)

    with pytest.raises(ValueError, match="initial_epoch=2, step2_records None"):
        tsq.fit(model, x, y, code_epochs=1, finetune_epochs=2, checkpoints=checkpoint({"epoch": 2}))
    after_step2 = {"tsq": {"records": [], "seconds": 0.0}}
    with pytest.raises(ValueError, match="initial_epoch=0, step2_records given"):
        tsq.fit(model, x, y, code_epochs=1, finetune_epochs=2, checkpoints=checkpoint(after_step2))
    with pytest.raises(ValueError, match=r"in 1\.\.3 after it. Received: initial_epoch=4"):
        tsq.fit(
            model,
            x,
            y,
            code_epochs=1,
            finetune_epochs=2,
            checkpoints=checkpoint({"epoch": 4, **after_step2}),
        )
    binary = zoo.build("binary_cnn", method="ste", input_shape=x.shape[1:], widths=(32, 32))
    with pytest.raises(ValueError, match="kernel_quantizer is a SteTernary"):
        tsq.fit(binary, x, y, code_epochs=1, finetune_epochs=0)
    bare = zoo.binary_cnn(
        input_shape=x.shape[1:], widths=(32,), input_quantizer=None, kernel_quantizer="ste_ternary"
    )
    with pytest.raises(ValueError, match="with input_quantizer=None"):
        tsq.code_learning(bare)
