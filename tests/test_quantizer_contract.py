"""The quantizer contract: the converter reads a quantizer's declared grid, never its class.

A quantizer defined here, outside tfquant, declares a 4-bit grid; a layer using it trains a
step, is finalized and converts through the public API alone into int8 codes as the grid
says. The converter's source names no registered quantizer class.
"""

import pathlib
import re

import numpy as np
import pytest

import tfquant
from tfquant._keras import keras, tf
from tfquant.converters import convert_with_report
from tfquant.converters.flatbuffer import load_model_t
from tfquant.converters.rewrite import plan_layers, rewrite_model
from tfquant.layers import QuantConv2D
from tfquant.methods import binary_relax  # noqa: F401  (registers RelaxedQuantizer)

CONVERTERS = pathlib.Path(tfquant.__file__).parent / "converters"


@keras.saving.register_keras_serializable(package="test_contract")
class Int4Weights(tfquant.quantizers.Quantizer):
    """A user's 4-bit weight quantizer: round(7 clip(w, -1, 1)) / 7, straight through."""

    precision = 4

    @property
    def grid(self):
        return tfquant.quantizers.Grid(step=1 / 7, k_min=-7, k_max=7, ties="away")

    def call(self, inputs):
        x = tf.clip_by_value(inputs, -1.0, 1.0)
        return tfquant.quantizers.ste_round(x * 7.0) / 7.0


@keras.saving.register_keras_serializable(package="test_contract")
class Int4WeightsNoGrid(Int4Weights):
    """The same values, undeclared."""

    @property
    def grid(self):
        return None


def test_converter_names_no_quantizer_class():
    names = sorted(tfquant.quantizers.registered())
    assert {"SteSign", "CPQQuantizer", "SparseQuantizer", "RelaxedQuantizer"} <= set(names)
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    found = {
        path.name: sorted(set(pattern.findall(path.read_text())))
        for path in sorted(CONVERTERS.glob("*.py"))
    }
    assert len(found) >= 8, found  # the scan reads the converter's modules
    assert not any(found.values()), {k: v for k, v in found.items() if v}


def _model(kernel_quantizer) -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 16))
    x = QuantConv2D(
        16,
        3,
        padding="same",
        input_quantizer=tfquant.quantizers.UniformQuantizer(2),
        kernel_quantizer=kernel_quantizer,
        kernel_initializer=keras.initializers.RandomUniform(-1.0, 1.0),  # uses the 15 codes
        name="user_q",
    )(inp)
    x = tfquant.quantizers.UniformQuantizer(2)(x)  # an exact int8 output range
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4)(x))


def _trained(kernel_quantizer, x):
    model = _model(kernel_quantizer)
    y = np.random.default_rng(1).normal(size=(len(x), 4)).astype(np.float32)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(x, y, epochs=1, batch_size=len(x), verbose=0)  # one step
    return tfquant.finalize(model, x)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(0, 1, size=(16, 8, 8, 16)).astype(np.float32)


def _int8_filter_codes(flatbuffer: bytes) -> np.ndarray:
    """The int8 values of the (only) 4-D int8 filter tensor in the flatbuffer."""
    model = load_model_t(flatbuffer)
    graph = model.subgraphs[0]
    filters = [t for t in graph.tensors if t.type == 9 and len(t.shape) == 4]  # INT8
    filters = [t for t in filters if model.buffers[t.buffer].data is not None]
    assert len(filters) == 1, [t.name for t in filters]
    data = np.asarray(model.buffers[filters[0].buffer].data, np.uint8).view(np.int8)
    return data.astype(np.int32)


def test_user_quantizer_with_a_grid_converts_to_its_int8_codes(x):
    model = _trained(Int4Weights(), x)
    kernel = model.get_layer("user_q").kernel.numpy()
    assert np.allclose(kernel * 7, np.round(kernel * 7), atol=1e-5)  # finalized on the grid
    flatbuffer, report = convert_with_report(model, calibration_data=x, parity_inputs=x)
    [layer] = report.layers
    assert (layer.became, layer.exact, layer.weight_bits) == ("int8", True, 4), report.notes
    codes = _int8_filter_codes(flatbuffer)
    # step 1/7 of the largest value 1: m = floor(127 / 7) = 18 int8 codes per grid step
    assert np.all(codes % 18 == 0) and np.abs(codes).max() <= 126, np.unique(codes)
    assert len(np.unique(codes)) > 8  # the 4-bit grid's codes, not a ternary kernel's
    p = report.parity
    assert p["max_abs_diff"] <= 1e-4 * p["output_scale"], p


def test_a_quantizer_without_a_grid_is_not_exported_exactly(x):
    model = _trained(Int4WeightsNoGrid(), x)
    plans = plan_layers(model)
    _, notes = rewrite_model(model, plans, calibration_data=x)
    [plan] = plans
    assert plan.target == "int8" and plan.exact is False  # plain symmetric int8: it rounds
    assert "user_q: weights are not on an int8 grid" in " ".join(notes)
