"""Real conversions through Larq Compute Engine, checked by op table and LCE's interpreter."""

import larq_compute_engine as lce
import numpy as np
import pytest
from helpers import binary_cnn

from tfquant.converters.flatbuffer import op_counts


@pytest.mark.parametrize("kernel_quantizer", ["ste_sign", "scaled_sign"])
@pytest.mark.parametrize("finalized", [False, True])
def test_binary_convs_become_lce_bconv2d(kernel_quantizer, finalized, tmp_path):
    import tfquant

    model = binary_cnn(kernel_quantizer)
    x = np.random.default_rng(0).normal(size=(4, 16, 16, 32)).astype(np.float32)
    if finalized:
        tfquant.finalize(model)
    # The Keras 3 route: model.export, then convert_saved_model.
    model.export(str(tmp_path / "saved"), verbose=False)
    flatbuffer = lce.convert_saved_model(str(tmp_path / "saved"))
    ops = op_counts(flatbuffer)
    assert ops.get("LceBconv2d") == 2, ops
    assert "CONV_2D" not in ops, ops
    # "Same with ones": the first bconv writes bit-packed output straight into the second.
    assert ops.get("LceQuantize") == 1, ops
    out = lce.testing.Interpreter(flatbuffer).predict(x)
    np.testing.assert_allclose(out, model(x).numpy(), atol=1e-4)
