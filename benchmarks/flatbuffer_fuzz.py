"""Damaged flatbuffers: what validation rejects, and what each would have done to LCE's
interpreter without it. Prints JSON.

Two real models are converted (a binary CNN from the zoo through tfquant's converter, and a
float twin); each is mutated ``--mutations`` times (flip 1 to 8 random bits, overwrite a
random run of up to 16 bytes, or truncate at a random length), and every mutant is

* validated (``tfquant.converters.validate.validate_flatbuffer``, pure Python, timed), and
* run, WITHOUT validation, in LCE's interpreter in a child process (the child of
  ``tfquant bench``: one inference), which either runs, refuses the file with an exception,
  or dies of a signal (a crash ``tfquant bench`` would show as a segmentation fault had it
  run the interpreter in-process, as it did before).

The counts say how many crashes validation stops before the interpreter sees the file, and
how many mutants pass validation and still crash (the child turns those into exit 2). Also
timed: validation of each model unmutated, and the cost of the child process
(``bench.isolated_latency`` against ``bench.local_latency`` in this process, one inference,
medians of 5).

Run (about two minutes on 2 CPU cores)::

    .venv/bin/python benchmarks/flatbuffer_fuzz.py --mutations 300
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfquant  # noqa: E402, F401  (registers the layers)
from tfquant import zoo  # noqa: E402
from tfquant.converters import bench, convert, validate  # noqa: E402

CHILD = os.path.join(os.path.dirname(bench.__file__), "_bench_child.py")


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    buf = bytearray(data)
    kind = rng.choice(["bits", "bytes", "truncate"], p=[0.5, 0.3, 0.2])
    if kind == "bits":
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(len(buf)))
            buf[i] ^= 1 << int(rng.integers(8))
    elif kind == "bytes":
        n = int(rng.integers(1, 17))
        i = int(rng.integers(max(len(buf) - n, 1)))
        buf[i : i + n] = rng.integers(0, 256, size=len(buf[i : i + n]), dtype=np.uint8).tobytes()
    else:
        buf = buf[: int(rng.integers(len(buf)))]
    return str(kind), bytes(buf)


def run_unprotected(data: bytes, directory: str) -> str:
    """``ran``, ``refused`` (an exception), ``crashed`` (a signal) or ``hung``."""
    path = os.path.join(directory, "mutant.tflite")
    with open(path, "wb") as f:
        f.write(data)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                CHILD,
                path,
                "--runs",
                "1",
                "--warmup",
                "0",
                "--memory-limit",
                str(8 << 30),
            ],
            capture_output=True,
            timeout=60,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    except subprocess.TimeoutExpired:
        return "hung"
    if proc.returncode < 0:
        return "crashed"
    return "ran" if proc.returncode == 0 else "refused"


def _median_ms(fn, repeats: int = 5) -> float:
    fn()  # warm: file cache, the schema's layout
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def models() -> dict[str, bytes]:
    binary = zoo.build("binary_cnn", input_shape=(28, 28, 1), classes=10)
    layers = keras.layers
    floating = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Conv2D(64, 3),
            layers.MaxPooling2D(2),
            layers.GlobalAveragePooling2D(),
            layers.Dense(10),
        ]
    )
    return {
        "binary": convert(binary, allow_float=True),
        "float": convert(floating, allow_float=True),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutations", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    out: dict = {"mutations_per_model": args.mutations, "seed": args.seed, "models": {}}
    with tempfile.TemporaryDirectory(prefix="tfquant-fuzz-") as tmp:
        for name, data in models().items():
            counts: collections.Counter = collections.Counter()
            times = []
            for _ in range(args.mutations):
                _, mutant = mutate(data, rng)
                start = time.perf_counter()
                try:
                    validate.validate_flatbuffer(mutant)
                    verdict = "passed"
                except validate.InvalidFlatbufferError:
                    verdict = "rejected"
                times.append(1000 * (time.perf_counter() - start))
                counts[f"{verdict}, interpreter {run_unprotected(mutant, tmp)}"] += 1
            rejected = sum(v for k, v in counts.items() if k.startswith("rejected"))
            out["models"][name] = {
                "bytes": len(data),
                "rejected_by_validation": rejected,
                "of_those_crash_the_interpreter_unprotected": counts[
                    "rejected, interpreter crashed"
                ],
                "passed_validation": args.mutations - rejected,
                "of_those_crash_the_interpreter (caught by tfquant bench's child)": counts[
                    "passed, interpreter crashed"
                ],
                "outcomes": dict(sorted(counts.items())),
                "validation_ms": {
                    "median": round(statistics.median(times), 3),
                    "max": round(max(times), 3),
                },
            }
            out["models"][name]["validation_ms_unmutated"] = round(
                _median_ms(
                    lambda: validate.validate_flatbuffer(data)  # noqa: B023
                ),
                3,
            )
            child = _median_ms(lambda: bench.isolated_latency(data, runs=1, warmup=0))  # noqa: B023
            local = _median_ms(lambda: bench.local_latency(data, runs=1, warmup=0))  # noqa: B023
            out["models"][name]["child_overhead_ms"] = round(child - local, 1)
            print(f"{name}: {dict(sorted(counts.items()))}", file=sys.stderr)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
