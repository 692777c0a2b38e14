"""The child process of :func:`tfquant.converters.bench.isolated_latency` (not a public API).

Run as a script, ``python .../tfquant/converters/_bench_child.py MODEL --threads 1 2 --runs 20
--warmup 3 --memory-limit BYTES [--no-indirect-bgemm]``, it times the model with
``bench.local_latency`` and prints one line ``TFQUANT_BENCH_RESULT {json}`` on stdout:
``{"results": [...]}``, or ``{"error": first line, "kind": "model" | "environment"}`` with
exit status 1 when the interpreter raised. A crash shows as death by a signal.

To start in a fraction of a second it imports neither ``tfquant`` nor TensorFlow: ``bench.py``
is loaded from its file, and LCE's interpreter without ``larq_compute_engine/__init__``
(which imports the converter, hence TensorFlow; the interpreter itself needs only numpy).
"""

import argparse
import importlib.util
import json
import os
import sys
import types

_HERE = os.path.dirname(os.path.abspath(__file__))

RESULT_PREFIX = "TFQUANT_BENCH_RESULT "  # the same as bench._RESULT_PREFIX (tested)


def _load_bench() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("_tfquant_bench", os.path.join(_HERE, "bench.py"))
    assert spec is not None and spec.loader is not None  # a .py file path always has both
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lce_interpreter_without_tensorflow() -> None:
    """Make ``import larq_compute_engine.tflite...`` skip the package's ``__init__``; if that
    fails, the ordinary import (with TensorFlow, seconds slower) is left to happen."""
    if "larq_compute_engine" in sys.modules:
        return
    spec = importlib.util.find_spec("larq_compute_engine")
    if spec is None or not spec.submodule_search_locations:
        return
    package = types.ModuleType("larq_compute_engine")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["larq_compute_engine"] = package
    try:
        from larq_compute_engine.tflite.python.interpreter import Interpreter  # noqa: F401
    except Exception:
        for name in [m for m in sys.modules if m.split(".")[0] == "larq_compute_engine"]:
            del sys.modules[name]


def _limit_memory(limit: int) -> None:
    if limit <= 0:
        return
    try:
        import resource
    except ImportError:  # Windows
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    if not isinstance(error, (ValueError, RuntimeError)):  # not the interpreter's own words
        text = [f"{type(error).__name__}: {text[0] if text else ''}"]
    return text[0][:300] if text else type(error).__name__


def _report(payload: dict) -> None:
    sys.stdout.write(RESULT_PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="_bench_child")
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--memory-limit", type=int, default=0)
    parser.add_argument("--no-indirect-bgemm", action="store_true")
    args = parser.parse_args(argv)
    try:
        with open(args.model, "rb") as f:
            flatbuffer = f.read()
        bench = _load_bench()
        _lce_interpreter_without_tensorflow()
        from larq_compute_engine.tflite.python.interpreter import Interpreter  # noqa: F401
    except Exception as e:
        _report({"error": f"{type(e).__name__}: {_first_line(e)}", "kind": "environment"})
        return 1
    _limit_memory(args.memory_limit)
    try:
        results = bench.local_latency(
            flatbuffer,
            threads=args.threads,
            runs=args.runs,
            warmup=args.warmup,
            use_indirect_bgemm=not args.no_indirect_bgemm,
        )
    except MemoryError:
        limit = f" (limit {args.memory_limit / 2**30:.1f} GiB)" if args.memory_limit else ""
        _report({"error": f"LCE's interpreter ran out of memory on it{limit}", "kind": "model"})
        return 1
    except Exception as e:  # local_latency wraps the interpreter's own error
        _report({"error": _first_line(e.__cause__ or e), "kind": "model"})
        return 1
    _report({"results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
