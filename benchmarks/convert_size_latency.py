"""A binary CNN through tfquant's converter vs the same net in float: size and latency, JSON.

Keras 3: both nets are converted through ``model.export`` (a SavedModel), the binary one by
tfquant's converter (LCE's ``convert_saved_model``), the float one by TensorFlow Lite's
``TFLiteConverter.from_saved_model``.

The binary net: a float stride-2 first conv + BatchNorm, five binary ``QuantConv2D`` (sign
inputs and kernels, "same with ones" padding, BatchNorm after each, max-pooling between
stages), global pooling and a float Dense head. The float net has the same layers without
quantizers. Measured:

* flatbuffer size of each, the binary file's breakdown (bit-packed / float weights, other),
  and the ideal bit-packed size (binary weights at 1 bit, everything else at 32 bits, from
  ``tfquant.summary``); target: binary file within 1.1x of the ideal;
* conversion time, in all (rewrite, ``model.export`` to a SavedModel, LCE's
  ``convert_saved_model``, parity check), by step, and a second conversion in the same
  process (the first pays TensorFlow's one-off set-up); target: under 10 s;
* latency of one 1-image inference on this machine: the binary file in LCE's interpreter
  (``use_indirect_bgemm=True``) vs the float file in TensorFlow Lite's interpreter (XNNPACK
  delegate), 1 and 2 threads (median and min of ``--runs`` after ``--warmup``; on a shared
  machine the min is the less disturbed figure);
* parity of the binary file against Keras (LCE's interpreter, random inputs).

Run (about a minute on 2 CPU cores)::

    .venv/bin/python benchmarks/convert_size_latency.py --out runs/convert_size_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tfquant  # noqa: E402
from tfquant._files import write_file  # noqa: E402
from tfquant._keras import keras, tf  # noqa: E402
from tfquant.converters import bench, convert, convert_with_report  # noqa: E402
from tfquant.layers import QuantConv2D  # noqa: E402

STAGES = ((64, False), (128, True), (256, True), (256, False), (512, True))


def build(binary: bool, input_size: int = 96, seed: int = 0) -> keras.Model:
    """The benchmark net; ``binary=False`` gives the same layers without quantizers."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((input_size, input_size, 3))
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(inp)
    x = keras.layers.BatchNormalization()(x)
    for filters, pool_before in STAGES:
        if pool_before:
            x = keras.layers.MaxPool2D(2)(x)
        if binary:
            x = QuantConv2D(
                filters,
                3,
                padding="same",
                pad_values=1.0,
                input_quantizer="ste_sign",
                kernel_quantizer="ste_sign",
                use_bias=False,
            )(x)
        else:
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10)(x), name="binary" if binary else "float")


def float_flatbuffer(model: keras.Model) -> bytes:
    """TensorFlow Lite's own conversion of a Keras 3 model, through ``model.export`` and
    ``TFLiteConverter.from_saved_model`` (``from_keras_model`` aborts on TF 2.16)."""
    with tempfile.TemporaryDirectory(prefix="tfquant-bench-") as tmp:
        model.export(os.path.join(tmp, "saved_model"), verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(os.path.join(tmp, "saved_model"))
        return converter.convert()


def run(args: argparse.Namespace) -> dict:
    threads = [int(t) for t in args.threads.split(",")]
    binary, floating = build(True, args.input_size), build(False, args.input_size)

    t = time.perf_counter()
    binary_fb, report = convert_with_report(binary, parity_samples=4)
    binary_seconds = time.perf_counter() - t

    t = time.perf_counter()
    convert(binary)  # again, warm: without the first call's one-off set-up in this process
    binary_warm_seconds = time.perf_counter() - t

    t = time.perf_counter()
    float_fb = float_flatbuffer(floating)
    float_seconds = time.perf_counter() - t

    ideal = tfquant.summary(binary, print_fn=None).memory_bytes
    lce_rows = bench.local_latency(binary_fb, threads, runs=args.runs, warmup=args.warmup)
    xnn_rows = bench.tflite_latency(float_fb, threads, runs=args.runs, warmup=args.warmup)
    latency = {
        f"{row['runtime']}_{row['threads']}t_ms": round(row["median_ms"], 3)
        for row in lce_rows + xnn_rows
    }
    latency_min = {
        f"{row['runtime']}_{row['threads']}t_ms": round(row["min_ms"], 3)
        for row in lce_rows + xnn_rows
    }
    speedup = {
        f"{n}t": round(latency[f"tflite-xnnpack_{n}t_ms"] / latency[f"lce_{n}t_ms"], 2)
        for n in threads
    }
    return {
        "benchmark": "convert_size_latency",
        "input": [1, args.input_size, args.input_size, 3],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "binary": {
            "flatbuffer_bytes": len(binary_fb),
            "size_breakdown": report.sizes,
            "ideal_bitpacked_bytes": ideal,
            "size_over_ideal": round(len(binary_fb) / ideal, 4),
            "ops": report.ops,
            "layers": {r.name: r.became for r in report.layers},
            "convert_seconds": round(binary_seconds, 2),
            "convert_seconds_by_step": report.seconds,
            "convert_seconds_warm": round(binary_warm_seconds, 2),
            "parity": report.parity,
        },
        "float": {
            "flatbuffer_bytes": len(float_fb),
            "convert_seconds": round(float_seconds, 2),
        },
        "size_ratio_float_over_binary": round(len(float_fb) / len(binary_fb), 2),
        "latency_median_ms": latency,
        "latency_min_ms": latency_min,
        "speedup_lce_binary_vs_xnnpack_float": speedup,
        "latency_rows": lce_rows + xnn_rows,
        "targets": {
            "binary_size_within_1.1x_ideal": len(binary_fb) <= 1.1 * ideal,
            "export_and_lce_conversion_under_10s": (
                report.seconds["export"] + report.seconds["convert"] < 10.0
            ),
            "warm_conversion_under_10s": binary_warm_seconds < 10.0,
            "conversion_with_verification_under_10s": binary_seconds < 10.0,
        },
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input-size", type=int, default=96)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        write_file(args.out, text + "\n")


if __name__ == "__main__":
    main()
