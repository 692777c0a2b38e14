"""Quickstart: a binary CNN on the digits data (offline), trained, finalized, converted.

The Keras-user way: build with tfquant layers, compile, fit, ``tfquant.finalize``, convert
through Larq Compute Engine, check the flatbuffer against Keras.

    python examples/quickstart.py --out runs/quickstart
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import keras
import numpy as np

import tfquant


def load_digits(limit: int | None = None):
    from sklearn.datasets import load_digits as _load

    data = _load()
    x = (data.images.astype(np.float32) / 16.0)[..., None]  # (1797, 8, 8, 1) in [0, 1]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    (xtr, ytr), (xte, yte) = (x[:split], y[:split]), (x[split:], y[split:])
    if limit:
        xtr, ytr, xte, yte = xtr[:limit], ytr[:limit], xte[: limit // 4], yte[: limit // 4]
    return (xtr, ytr), (xte, yte)


def build_model() -> keras.Model:
    binary = dict(
        padding="same",
        pad_values=1.0,
        input_quantizer="ste_sign",
        kernel_quantizer="ste_sign",
        use_bias=False,
    )
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", use_bias=False),  # float first layer
            keras.layers.BatchNormalization(),
            tfquant.layers.QuantConv2D(64, 3, **binary),
            keras.layers.BatchNormalization(),
            tfquant.layers.QuantConv2D(64, 3, **binary),
            keras.layers.MaxPooling2D(2),
            keras.layers.BatchNormalization(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/quickstart")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None, help="use only this many samples")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import larq_compute_engine as lce

    from tfquant import converters

    keras.utils.set_random_seed(0)
    (xtr, ytr), (xte, yte) = load_digits(args.limit)
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(xtr, ytr, epochs=args.epochs, batch_size=64, validation_data=(xte, yte), verbose=2)
    tfquant.finalize(model, xtr, batch_size=256)
    summary = tfquant.summary(model)
    keras_acc = float(np.mean(np.argmax(model.predict(xte, verbose=0), -1) == yte))
    model.save(out / "model.keras")

    start = time.perf_counter()
    flatbuffer = converters.convert(model)  # model.export -> LCE's convert_saved_model
    convert_s = time.perf_counter() - start
    (out / "model.tflite").write_bytes(flatbuffer)
    interpreter = lce.testing.Interpreter(flatbuffer, num_threads=1, use_indirect_bgemm=True)
    start = time.perf_counter()
    tflite_out = np.concatenate([interpreter.predict(xte[i : i + 1]) for i in range(len(xte))])
    latency_ms = 1000 * (time.perf_counter() - start) / len(xte)
    report = {
        "dataset": "digits (sklearn, 8x8)",
        "test_accuracy_keras": keras_acc,
        "test_accuracy_tflite": float(np.mean(np.argmax(tflite_out, -1) == yte)),
        "max_abs_diff_keras_tflite": float(
            np.abs(tflite_out - model.predict(xte, verbose=0)).max()
        ),
        "ops": converters.flatbuffer.op_counts(flatbuffer),
        "tflite_bytes": len(flatbuffer),
        "bitpacked_bytes": summary.memory_bytes,
        "float32_bytes": summary.float32_bytes,
        "convert_seconds": convert_s,
        "latency_ms_1thread_x86_interpreter": latency_ms,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"Artifacts: {out}/model.keras, {out}/model.tflite, {out}/report.json")
    return report


if __name__ == "__main__":
    main()
