"""CPQ as a training method: the zoo's "cpq" and "dorefa" forms, the data-set grid step,
learned widths fixed by tfquant.finalize, and a saved model that keeps them."""

import numpy as np
import pytest

import tfquant
from tfquant import zoo
from tfquant._keras import keras
from tfquant.quantizers import CPQQuantizer, UniformQuantizer


def _cpq_layers(model):
    return [layer for layer in tfquant.models.quantized_layers(model)]


def test_zoo_cpq_gives_each_layer_its_own_grid():
    model = zoo.build(
        "binary_cnn",
        method="cpq",
        method_options={"bits": 3, "learn_bits": True},
        input_shape=(8, 8, 1),
    )
    layers = _cpq_layers(model)
    quantizers = [q for layer in layers for q in (layer.input_quantizer, layer.kernel_quantizer)]
    assert len(layers) == 4 and all(isinstance(q, CPQQuantizer) for q in quantizers)
    assert len({id(q) for q in quantizers}) == 8  # no grid shared between layers or roles
    assert len({q.name for q in quantizers}) == 8
    for layer in layers:
        inp, kernel = layer.input_quantizer, layer.kernel_quantizer
        assert (inp.signed, inp.dropbits, inp.learn_bits) == (False, None, False)
        assert (kernel.signed, kernel.dropbits, kernel.learn_bits) == (True, "A", True)
        assert inp.bits == kernel.bits == 3 and inp.auto_alpha and kernel.auto_alpha
        assert layer.pad_values == 0.0
    dorefa = zoo.build("binary_cnn", method="dorefa", method_options={"bits": 4})
    q = dorefa.get_layer("s1_conv1")
    assert isinstance(q.kernel_quantizer, UniformQuantizer) and q.kernel_quantizer.bits == 4
    with pytest.raises(ValueError, match="Expected options of method 'ste' among none"):
        zoo.build("binary_cnn", method="ste", method_options={"bits": 3})
    with pytest.raises(ValueError, match=r"method 'tsq' among \['finetune_epochs'\]"):
        zoo.build("binary_cnn", method="tsq", method_options={"bits": 3})
    with pytest.raises(ValueError, match="method_options only with a method"):
        zoo.build("binary_cnn", method_options={"bits": 3})


def test_alpha_is_set_from_the_first_training_batch_and_kept():
    keras.utils.set_random_seed(0)
    q = CPQQuantizer(2, signed=True, alpha=None, dropbits=None)
    assert q.alpha_value == pytest.approx(1.0)  # inference before training: the placeholder
    w = np.random.default_rng(0).normal(scale=0.05, size=(64, 16)).astype("float32")
    q(w, training=True)
    # LSQ's rule: 2 mean|w| / sqrt(q_max), q_max = 2 for signed 2-bit codes {-2, -1, 0, 1}
    assert q.alpha_value == pytest.approx(2 * np.abs(w).mean() / np.sqrt(2), rel=1e-5)
    assert q.sigma_value == pytest.approx(q.alpha_value / 3, rel=1e-5)
    q(3 * w, training=True)  # only once
    assert q.alpha_value == pytest.approx(2 * np.abs(w).mean() / np.sqrt(2), rel=1e-5)
    assert q.get_config()["alpha"] is None and q.get_config()["sigma"] is None


def test_finalize_fixes_learned_bits_and_the_saved_model_keeps_them(tmp_path):
    model = zoo.build(
        "binary_cnn",
        method="cpq",
        method_options={"bits": 3, "learn_bits": True},
        input_shape=(8, 8, 1),
        widths=(32, 32),
    )
    x = np.random.default_rng(0).random((32, 8, 8, 1)).astype("float32")
    y = np.arange(32) % 10
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    # Close the top level's gate of one layer: its learned width is 2 bits.
    closing = model.get_layer("s0_conv1").kernel_quantizer
    closing.bit_gates.assign([3.0, -6.0])
    assert closing.learned_bits() == 2
    tfquant.finalize(model, x)
    bits = [layer.kernel_precision for layer in _cpq_layers(model)]
    assert bits == [3, 2, 3, 3]
    kernel = model.get_layer("s0_conv1").kernel.numpy()
    alpha = closing.alpha_value
    codes = kernel / alpha
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)  # the stored kernel is codes
    assert codes.min() >= -2 - 1e-4 and codes.max() <= 1 + 1e-4  # on the 2-bit grid
    assert tfquant.summary(model, print_fn=None).as_dict()  # summary reads the fixed widths
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert [layer.kernel_precision for layer in _cpq_layers(loaded)] == bits
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
