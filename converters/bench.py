"""Latency of converted models: locally through LCE's interpreter or TFLite's (XNNPACK),
and on a device through LCE's ``lce_benchmark_model`` (adb or ssh).

Example:

>>> from tfquant.converters import bench
>>> bench.local_latency(flatbuffer, threads=[1, 2])                       # doctest: +SKIP
[{'runtime': 'lce', 'threads': 1, 'median_ms': 15.2, ...}, ...]
>>> bench.device_command("adb", "/data/local/tmp/m.tflite", threads=4)     # doctest: +SKIP
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Sequence

import numpy as np

from tfquant._keras import tf

__all__ = [
    "time_callable",
    "local_latency",
    "tflite_latency",
    "device_command",
    "parse_benchmark_output",
]


def time_callable(fn, runs: int = 20, warmup: int = 3) -> dict[str, float]:
    """Median / min / mean wall time of ``fn()`` in milliseconds after ``warmup`` calls."""
    if runs < 1:
        raise ValueError(f"Expected runs >= 1. Received: runs={runs}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(1000.0 * (time.perf_counter() - t))
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "mean_ms": statistics.fmean(times),
        "runs": runs,
    }


def _random_feed(shapes_types) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    feed = []
    for shape, dtype in shapes_types:
        if np.issubdtype(dtype, np.integer):
            feed.append(rng.integers(-128, 127, size=shape).astype(dtype))
        else:
            feed.append(rng.normal(size=shape).astype(dtype))
    return feed


def local_latency(
    flatbuffer: bytes,
    threads: Sequence[int] = (1,),
    runs: int = 20,
    warmup: int = 3,
    use_indirect_bgemm: bool = True,
) -> list[dict]:
    """Latency of one inference (batch 1) in LCE's interpreter, per thread count.

    Raises:
        ValueError: the flatbuffer cannot be loaded.
    """
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    results = []
    for n in threads:
        try:
            interpreter = Interpreter(
                flatbuffer, num_threads=int(n), use_indirect_bgemm=use_indirect_bgemm
            )
        except Exception as e:  # the C++ wrapper raises RuntimeError / ValueError
            raise ValueError(f"LCE's interpreter could not load the flatbuffer: {e}") from e
        feed = _random_feed(
            [
                ((1, *shape[1:]), np.dtype(dtype))
                for shape, dtype in zip(interpreter.input_shapes, interpreter.input_types)
            ]
        )
        x = feed if len(feed) > 1 else feed[0]
        timing = time_callable(lambda: interpreter.predict(x), runs, warmup)  # noqa: B023
        results.append({"runtime": "lce", "threads": int(n), **timing})
    return results


def tflite_latency(
    flatbuffer: bytes, threads: Sequence[int] = (1,), runs: int = 20, warmup: int = 3
) -> list[dict]:
    """Latency of one inference in TensorFlow Lite's interpreter (XNNPACK delegate on by
    default for float models), per thread count. For models without LCE ops."""
    results = []
    for n in threads:
        interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=int(n))
        interpreter.allocate_tensors()
        details = interpreter.get_input_details()
        feed = _random_feed([(tuple(d["shape"]), np.dtype(d["dtype"])) for d in details])
        for d, x in zip(details, feed):
            interpreter.set_tensor(d["index"], x)
        timing = time_callable(interpreter.invoke, runs, warmup)
        results.append({"runtime": "tflite-xnnpack", "threads": int(n), **timing})
    return results


def device_command(
    via: str,
    model_path: str,
    threads: int = 1,
    host: str | None = None,
    binary: str = "/data/local/tmp/lce_benchmark_model",
    extra: Sequence[str] = ("--use_indirect_bgemm=true",),
) -> list[str]:
    """The command that runs LCE's ``lce_benchmark_model`` on a device (``via="adb"``:
    Android over adb; ``via="ssh"``: e.g. a Raspberry Pi, ``host`` required). The model
    must already be on the device (``adb push m.tflite /data/local/tmp/``)."""
    inner = [binary, f"--graph={model_path}", f"--num_threads={threads}", *extra]
    if via == "adb":
        return ["adb", "shell", *inner]
    if via == "ssh":
        if not host:
            raise ValueError("Expected host for via='ssh'. Received: host=None")
        return ["ssh", host, *inner]
    raise ValueError(f"Expected via 'adb' or 'ssh'. Received: via={via!r}")


_TIMINGS = re.compile(r"Inference timings in us: (.*)")


def parse_benchmark_output(text: str) -> dict[str, float]:
    """Parse ``lce_benchmark_model``'s last timing line into milliseconds, e.g.
    ``{'init_ms': 1.47, 'first_ms': 41.7, 'warmup_ms': 32.5, 'inference_ms': 31.4}``.

    Raises:
        ValueError: no timing line in ``text``.
    """
    found = _TIMINGS.findall(text)
    if not found:
        raise ValueError("No 'Inference timings in us:' line in the benchmark output")
    keys = {
        "Init": "init_ms",
        "First inference": "first_ms",
        "Warmup (avg)": "warmup_ms",
        "Inference (avg)": "inference_ms",
    }
    out = {}
    for part in found[-1].split(","):
        name, _, value = part.partition(":")
        if name.strip() in keys:
            out[keys[name.strip()]] = float(value) / 1000.0
    return out
