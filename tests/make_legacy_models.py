"""Save small models with every tfquant quantizer, for the test that a release's files load.

Run with the tfquant of a release on ``PYTHONPATH`` (``tests/conftest.py``'s
``legacy_models`` fixture extracts commit 749736d's ``tfquant/`` with ``git archive`` and
runs this script against it); it writes, into the directory given as its argument, one
``<name>.keras`` per model and ``predictions.npz`` with the inputs and each model's
outputs. Only public names that release already had are used. The files are generated
per test session and never committed.

Usage: ``PYTHONPATH=<old tree> python tests/make_legacy_models.py OUT_DIR``
"""

import os
import sys

import numpy as np


def _conv_stack(tfquant, keras, pairs, input_shape=(8, 8, 16), seed=0):
    """Input -> one QuantConv2D per (input quantizer, kernel quantizer) pair, each followed
    by BatchNormalization -> global pooling -> QuantDense(4, sign, sign)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input(input_shape)
    x = inp
    for i, (input_q, kernel_q) in enumerate(pairs):
        x = tfquant.layers.QuantConv2D(
            16,
            3,
            padding="same",
            input_quantizer=input_q,
            kernel_quantizer=kernel_q,
            name=f"conv{i}",
        )(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = tfquant.layers.QuantDense(
        4, input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="head"
    )(x)
    return keras.Model(inp, out)


def models(tfquant, keras):
    """name -> model, together using every quantizer class of the release."""
    q = tfquant.quantizers
    from tfquant.methods.binary_relax import RelaxedQuantizer

    return {
        "binary": _conv_stack(
            tfquant,
            keras,
            [("ste_sign", "ste_sign"), (q.ApproxSign(), q.ScaledSign(per_channel=False))],
        ),
        "ternary_dorefa": _conv_stack(
            tfquant,
            keras,
            [
                (q.UniformQuantizer(2), q.SteTernary()),
                (q.UniformQuantizer(4), q.SteTernary(method="fixed", threshold_value=0.3)),
                (q.UniformQuantizer(2), q.UniformQuantizer(3, mode="weight")),
            ],
        ),
        "tsq_cpq": _conv_stack(
            tfquant,
            keras,
            [
                (q.SparseQuantizer(threshold=0.32), q.SteTernary(method="optimal")),
                (
                    q.CPQQuantizer(bits=3, signed=False, alpha=0.25),
                    q.CPQQuantizer(bits=2, alpha=0.5, learn_bits=True),
                ),
            ],
        ),
        "relaxed": _conv_stack(
            tfquant,
            keras,
            [("ste_sign", RelaxedQuantizer("scaled_sign", lambda_init=2.0))],
        ),
    }


def main(out: str) -> None:
    import keras

    import tfquant

    os.makedirs(out, exist_ok=True)
    x = np.random.default_rng(0).normal(0, 1, size=(4, 8, 8, 16)).astype(np.float32)
    outputs = {"x": x}
    for name, model in models(tfquant, keras).items():
        rng = np.random.default_rng(len(name))
        for layer in model.layers:  # non-trivial BatchNorm statistics
            if isinstance(layer, keras.layers.BatchNormalization):
                n = layer.moving_mean.shape[0]
                layer.moving_mean.assign(rng.normal(0, 0.5, n).astype(np.float32))
                layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
        outputs[name] = np.asarray(model(x, training=False))
        model.save(os.path.join(out, f"{name}.keras"))
    np.savez(os.path.join(out, "predictions.npz"), **outputs)
    print("saved", sorted(k for k in outputs if k != "x"), "with tfquant from", tfquant.__file__)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    main(sys.argv[1])
