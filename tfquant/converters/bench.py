"""Latency of converted models on this machine: LCE's interpreter or TFLite's (XNNPACK).
On a device (ssh, adb), :mod:`tfquant.converters.device` runs LCE's ``lce_benchmark_model``.

Example:

>>> from tfquant.converters import bench
>>> bench.local_latency(flatbuffer, threads=[1, 2])                       # doctest: +SKIP
[{'runtime': 'lce', 'threads': 1, 'median_ms': 15.2, ...}, ...]
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np

__all__ = [
    "time_callable",
    "local_latency",
    "isolated_latency",
    "BenchTimeoutError",
    "tflite_latency",
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
        if not feed:  # a valid model may compute constants only; there is nothing to time
            raise ValueError("Expected a model with at least one input. Received: none")
        x = feed if len(feed) > 1 else feed[0]
        timing = time_callable(lambda: interpreter.predict(x), runs, warmup)  # noqa: B023
        results.append({"runtime": "lce", "threads": int(n), **timing})
    return results


class BenchTimeoutError(RuntimeError):
    """The isolated interpreter ran past its time limit and was killed."""


_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bench_child.py")
_RESULT_PREFIX = "TFQUANT_BENCH_RESULT "  # the child's one line of JSON on stdout
_DEFAULT_MEMORY = 8 * 2**30
# Lines of the child's stderr that never explain a failure (TF / absl start-up chatter).
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl|[IW]\d{4} |INFO: |Fatal Python error: Segm"
    r"|Current thread|Thread 0x|Extension modules: |  File \")"
)


def _last_useful_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines()]
    useful = [line for line in lines if line and not _NOISE.match(line)]
    return useful[-1][:300] if useful else ""


def _interpreter_log(stderr: str) -> str:
    """TFLite's own reasons, e.g. "reshape.cc:92 num_input_elements != num_output_elements
    (64 != 0); Node number 4 (RESHAPE) failed to prepare." (first and last ERROR lines)."""
    errors = [
        line[len("ERROR: ") :].strip() for line in stderr.splitlines() if line.startswith("ERROR: ")
    ]
    picked = errors[:1] + errors[-1:] if len(errors) > 1 else errors
    return "; ".join(e.replace("external/org_tensorflow/", "") for e in picked)[:400]


def isolated_latency(
    flatbuffer_or_path: bytes | str | os.PathLike,
    threads: Sequence[int] = (1,),
    runs: int = 20,
    warmup: int = 3,
    use_indirect_bgemm: bool = True,
    timeout: float = 600.0,
    memory_limit: int | None = None,
) -> list[dict]:
    """:func:`local_latency` in a child process, after :func:`validate_flatbuffer`: a
    model that crashes LCE's interpreter (a segmentation fault on a damaged file) cannot take
    the caller down.

    The model is validated in this process (pure Python, milliseconds), written to a
    temporary file and timed by ``python tfquant/converters/_bench_child.py`` with
    ``TF_CPP_MIN_LOG_LEVEL=3``, an address-space limit and its stderr captured. The child
    loads LCE's interpreter without ``larq_compute_engine/__init__`` (which imports
    TensorFlow for the converter): the child costs about 0.15 s over :func:`local_latency`
    where importing TensorFlow alone takes 4-5 s (measured on 2 CPU cores).

    Args:
        flatbuffer_or_path: the model's bytes or the path of a ``.tflite`` file.
        threads, runs, warmup, use_indirect_bgemm: as in :func:`local_latency`.
        timeout: seconds before the child is killed.
        memory_limit: the child's address-space limit in bytes (Unix); default
            ``max(8 GiB, 4 x model size)``; ``0`` for none.

    Returns:
        :func:`local_latency`'s rows, one per thread count.

    Raises:
        InvalidFlatbufferError: (a ``ValueError``) the model failed validation, or the
            interpreter rejected it ("not a valid TFLite model: <its first line>"), crashed
            ("... LCE's interpreter crashed on it (signal SIGSEGV)") or ran out of memory.
        BenchTimeoutError: the child ran past ``timeout`` seconds and was killed.
        RuntimeError: the child could not run the interpreter at all (LCE missing).
        ValueError: bad ``threads`` / ``runs`` / ``warmup``.
        FileNotFoundError, OSError: the path cannot be read.
    """
    from tfquant.converters.validate import (
        PREFIX,
        InvalidFlatbufferError,
        read_flatbuffer_file,
        validate_flatbuffer,
    )

    threads = [int(n) for n in threads]
    if not threads or min(threads) < 1:
        raise ValueError(f"Expected thread counts >= 1. Received: threads={threads}")
    if runs < 1 or warmup < 0:
        raise ValueError(
            f"Expected runs >= 1 and warmup >= 0. Received: runs={runs}, warmup={warmup}"
        )
    if isinstance(flatbuffer_or_path, (bytes, bytearray, memoryview)):
        data = bytes(flatbuffer_or_path)
    else:
        data = read_flatbuffer_file(flatbuffer_or_path)
    validate_flatbuffer(data)
    if memory_limit is None:
        memory_limit = max(_DEFAULT_MEMORY, 4 * len(data))
    with tempfile.TemporaryDirectory(prefix="tfquant-bench-") as tmp:
        path = os.path.join(tmp, "model.tflite")
        with open(path, "wb") as f:
            f.write(data)
        command = [
            sys.executable,
            _CHILD,
            path,
            "--runs",
            str(runs),
            "--warmup",
            str(warmup),
            "--memory-limit",
            str(memory_limit),
            "--threads",
            *map(str, threads),
        ]
        if not use_indirect_bgemm:
            command.append("--no-indirect-bgemm")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        try:
            proc = subprocess.run(
                command, stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=timeout
            )
        except subprocess.TimeoutExpired as e:  # subprocess.run has killed the child
            raise BenchTimeoutError(
                f"LCE's interpreter did not finish within {timeout:g} s and was stopped "
                "(a longer run needs a larger timeout; a damaged model may loop forever)"
            ) from e
    stdout = proc.stdout.decode("utf-8", "replace")
    stderr = proc.stderr.decode("utf-8", "replace")
    found = [line for line in stdout.splitlines() if line.startswith(_RESULT_PREFIX)]
    try:
        result = json.loads(found[-1][len(_RESULT_PREFIX) :]) if found else None
    except ValueError:
        result = None
    last = _last_useful_line(stderr)
    if proc.returncode < 0:  # killed by a signal (POSIX)
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = str(-proc.returncode)
        raise InvalidFlatbufferError(
            f"{PREFIX}LCE's interpreter crashed on it (signal {name})"
            + (f"; its last message: {last}" if last else "")
        )
    if proc.returncode == 0 and isinstance(result, dict) and "results" in result:
        return result["results"]
    if isinstance(result, dict) and result.get("kind") == "model":
        log = _interpreter_log(stderr)
        raise InvalidFlatbufferError(
            PREFIX + str(result.get("error")) + (f" (interpreter log: {log})" if log else "")
        )
    if isinstance(result, dict) and "error" in result:
        raise RuntimeError(f"could not run LCE's interpreter: {result['error']}")
    raise InvalidFlatbufferError(
        f"{PREFIX}LCE's interpreter exited with status {proc.returncode} and no result"
        + (f"; its last message: {last}" if last else "")
    )


def tflite_latency(
    flatbuffer: bytes, threads: Sequence[int] = (1,), runs: int = 20, warmup: int = 3
) -> list[dict]:
    """Latency of one inference in TensorFlow Lite's interpreter (XNNPACK delegate on by
    default for float models), per thread count. For models without LCE ops."""
    from tfquant._keras import tf  # here: bench.py also runs in isolated_latency's light child

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
