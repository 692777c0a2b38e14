"""Damaged .tflite files never crash ``tfquant bench``: validation in pure Python
(tfquant.converters.validate), LCE's interpreter in a child process
(tfquant.converters.bench.isolated_latency), the CLI's messages, and fuzzing of both."""

from __future__ import annotations

import collections
import contextlib
import io
import os
import platform
import subprocess
import sys
import time

import flatbuffers
import numpy as np
import pytest
from flatbuffers import flexbuffers
from helpers import binary_cnn, tfquant_cli
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tensorflow.lite.python import schema_py_generated as schema

import tfquant.cli
from tfquant._keras import keras
from tfquant.converters import bench, convert
from tfquant.converters.flatbuffer import load_model_t, op_names
from tfquant.converters.validate import (
    InvalidFlatbufferError,
    read_flatbuffer_file,
    validate_flatbuffer,
)
from tfquant.layers import QuantDense

PREFIX = "not a valid TFLite model: "
FUZZ = settings(
    max_examples=100,  # damage that passes validation costs a child process (~0.15 s)
    deadline=None,
    derandomize=True,  # the same examples on every run: no flaky CI
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def binary_fb() -> bytes:
    """Two binary convs and a binary Dense: LceQuantize, LceBconv2d, MEAN, RESHAPE."""
    base = binary_cnn()
    x = keras.layers.GlobalAveragePooling2D()(base.outputs[0])
    x = QuantDense(16, input_quantizer="ste_sign", kernel_quantizer="ste_sign")(x)
    flatbuffer = convert(keras.Model(base.inputs[0], x))
    keras.backend.clear_session()
    return flatbuffer


@pytest.fixture(scope="module")
def float_fb() -> bytes:
    """Builtin TFLite ops only: CONV_2D, RESHAPE, FULLY_CONNECTED."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    x = keras.layers.Dense(10)(keras.layers.Flatten()(x))
    flatbuffer = convert(keras.Model(inp, x), allow_float=True)
    keras.backend.clear_session()
    return flatbuffer


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("flatbuffers")


def repack(model: schema.ModelT) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def run_isolated(data: bytes, **kwargs) -> str:
    """'rejected' (validation), 'ran', 'refused' (the interpreter raised) or 'crashed'. Any
    other exception fails the test."""
    try:
        validate_flatbuffer(data)
    except InvalidFlatbufferError as e:
        assert str(e).startswith(PREFIX)
        return "rejected"
    try:
        rows = bench.isolated_latency(data, runs=1, warmup=0, timeout=120, **kwargs)
    except InvalidFlatbufferError as e:
        assert str(e).startswith(PREFIX)
        return "crashed" if "crashed on it" in str(e) else "refused"
    assert rows and rows[0]["median_ms"] >= 0
    return "ran"


def assert_clean_failure(proc: subprocess.CompletedProcess, message: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# Valid models


def test_valid_models_pass_validation_with_a_summary(binary_fb, float_fb):
    summary = validate_flatbuffer(binary_fb)
    assert (summary.version, summary.subgraphs, summary.size) == (3, 1, len(binary_fb))
    assert summary.operators == len(op_names(binary_fb))
    assert {"LceBconv2d", "LceQuantize"} <= set(summary.custom_ops)
    assert [(s.shape, s.dtype) for s in summary.inputs] == [((1, 16, 16, 32), "float32")]
    assert [(s.shape, s.dtype) for s in summary.outputs] == [((1, 16), "float32")]
    summary = validate_flatbuffer(bytearray(float_fb))
    assert summary.custom_ops == () and not summary.external_buffers
    assert summary.operators == 3 and summary.inputs[0].shape == (1, 8, 8, 3)
    # Re-packed through TFLite's object API: the same model, other byte layout.
    assert validate_flatbuffer(repack(load_model_t(float_fb))).operators == 3


def test_module_docstring_example_runs():
    import doctest

    from tfquant.converters import validate

    result = doctest.testmod(validate, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_big_and_adversarial_files(binary_fb):
    # Timings are benchmarks/flatbuffer_fuzz.py's; here what matters is the outcome.
    validate_flatbuffer(binary_fb)
    # An 8 MB float model (weights are checked as sizes, not walked).
    inp = keras.Input((16, 16, 64))
    x = keras.layers.Conv2D(256, 3)(inp)
    x = keras.layers.Conv2D(256, 3)(x)
    x = keras.layers.Dense(2000)(keras.layers.GlobalAveragePooling2D()(x))
    big = convert(keras.Model(inp, x), allow_float=True)
    assert len(big) > 4_000_000
    validate_flatbuffer(big)
    # Offsets shared over and over (N distinct subgraphs sharing one N-element tensor vector:
    # N * N table visits) are refused within a budget instead of walked for minutes.
    b = flatbuffers.Builder(0)
    schema.TensorStart(b)
    tensor = schema.TensorEnd(b)
    n = 5000
    schema.SubGraphStartTensorsVector(b, n)
    for _ in range(n):
        b.PrependUOffsetTRelative(tensor)
    tensors = b.EndVector()
    subgraphs = []
    for _ in range(n):
        schema.SubGraphStart(b)
        schema.SubGraphAddTensors(b, tensors)
        subgraphs.append(schema.SubGraphEnd(b))
    schema.ModelStartSubgraphsVector(b, n)
    for s in subgraphs:
        b.PrependUOffsetTRelative(s)
    vector = b.EndVector()
    schema.ModelStart(b)
    schema.ModelAddVersion(b, 3)
    schema.ModelAddSubgraphs(b, vector)
    b.Finish(schema.ModelEnd(b), file_identifier=b"TFL3")
    with pytest.raises(InvalidFlatbufferError, match="referenced over and over"):
        validate_flatbuffer(bytes(b.Output()))


def test_valid_models_bench_in_a_child_process(binary_fb, float_fb, work_dir):
    rows = bench.isolated_latency(binary_fb, threads=[1, 2], runs=2, warmup=1)
    assert [r["threads"] for r in rows] == [1, 2]
    assert all(r["runtime"] == "lce" and r["median_ms"] > 0 and r["runs"] == 2 for r in rows)
    path = work_dir / "float.tflite"
    path.write_bytes(float_fb)
    (row,) = bench.isolated_latency(path, runs=1, warmup=0, use_indirect_bgemm=False)
    assert row["median_ms"] > 0


def test_child_runs_without_importing_tensorflow(float_fb, tmp_path):
    # What keeps the child cheap (benchmarks/flatbuffer_fuzz.py times it): LCE's interpreter
    # is imported without larq_compute_engine/__init__, which imports TensorFlow.
    model = tmp_path / "m.tflite"
    model.write_bytes(float_fb)
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{bench._CHILD!r}, {str(model)!r}, '--runs', '1', '--warmup', '0']\n"
        "try:\n"
        f"    runpy.run_path({bench._CHILD!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "print('TENSORFLOW_IMPORTED', 'tensorflow' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "TFQUANT_BENCH_RESULT" in proc.stdout
    assert "TENSORFLOW_IMPORTED False" in proc.stdout


def test_external_buffers_inside_the_file_are_valid(float_fb):
    """Weights after the flatbuffer (Buffer.offset / size, the >2 GiB layout) validate, run,
    and are refused when they reach past the end of the file."""
    model = load_model_t(float_fb)
    sizes = [0 if b.data is None else len(b.data) for b in model.buffers]
    index = sizes.index(max(sizes))
    weights = bytes(np.asarray(model.buffers[index].data, np.uint8))
    model.buffers[index].data = None
    model.buffers[index].offset, model.buffers[index].size = 1 << 40, len(weights)
    head = len(repack(model))  # the offset's value does not change the layout
    model.buffers[index].offset = offset = (head + 15) // 16 * 16
    flatbuffer = repack(model) + bytes(offset - head)
    assert validate_flatbuffer(flatbuffer + weights).external_buffers
    assert run_isolated(flatbuffer + weights) == "ran"
    with pytest.raises(InvalidFlatbufferError, match=r"buffers\[\d+\]: expected offset \+ size"):
        validate_flatbuffer(flatbuffer + weights[:-1])


def test_size_limit_without_external_buffers(float_fb, monkeypatch):
    from tfquant.converters import validate

    # Stand-in for a > 2 GiB file: the limit lowered to the flatbuffer, junk appended.
    monkeypatch.setattr(validate, "MAX_FLATBUFFER_BYTES", len(float_fb))
    validate_flatbuffer(float_fb)
    with pytest.raises(InvalidFlatbufferError, match="expected at most .* external buffers"):
        validate_flatbuffer(float_fb + bytes(16))


# ---------------------------------------------------------------------------------------------
# Damage found by validation


@pytest.mark.parametrize("cut", [0, 4, 8, 16, 100, "half", "len-1"])
def test_truncated_files_are_rejected(binary_fb, cut):
    size = {"half": len(binary_fb) // 2, "len-1": len(binary_fb) - 1}.get(cut, cut)
    with pytest.raises(InvalidFlatbufferError, match=f"^{PREFIX}.*expected .*found"):
        validate_flatbuffer(binary_fb[:size])
    assert run_isolated(binary_fb[:size]) == "rejected"


def test_header_messages(binary_fb):
    with pytest.raises(InvalidFlatbufferError, match="expected at least 8 bytes .* found 0"):
        validate_flatbuffer(b"")
    with pytest.raises(InvalidFlatbufferError, match=r"identifier b'TFL3' .* found b'TFL2'"):
        validate_flatbuffer(binary_fb[:4] + b"TFL2" + binary_fb[8:])
    with pytest.raises(InvalidFlatbufferError, match="root table offset .* found 4294967295"):
        validate_flatbuffer(b"\xff\xff\xff\xff" + binary_fb[4:])


def _field_position(table, slot: int) -> int:
    """Byte position of a table's field (the uoffset itself for offset fields)."""
    return table._tab.Pos + table._tab.Offset(4 + 2 * slot)


def test_buffer_offsets_past_the_end_are_rejected(binary_fb):
    model = schema.Model.GetRootAs(binary_fb, 0)
    for i in range(model.BuffersLength()):
        if model.Buffers(i).DataLength():
            at = _field_position(model.Buffers(i), 0)
            damaged = bytearray(binary_fb)
            damaged[at : at + 4] = (len(binary_fb) - at).to_bytes(4, "little")  # one past
            with pytest.raises(InvalidFlatbufferError, match=rf"buffers\[{i}\].data: expected"):
                validate_flatbuffer(bytes(damaged))
            damaged[at : at + 4] = (len(binary_fb) - at - 8).to_bytes(4, "little")
            with pytest.raises(InvalidFlatbufferError, match=rf"buffers\[{i}\].data: expected"):
                validate_flatbuffer(bytes(damaged))  # a length reaching past the end
    model_t = load_model_t(binary_fb)
    model_t.buffers[1].data, model_t.buffers[1].offset, model_t.buffers[1].size = None, 99, 10**6
    with pytest.raises(InvalidFlatbufferError, match=r"buffers\[1\]: expected offset \+ size"):
        validate_flatbuffer(repack(model_t))


def _constant(model):
    sub = model.subgraphs[0]
    return next(t for t in sub.tensors if model.buffers[t.buffer].data is not None)


def _mutate(model, name):
    sub = model.subgraphs[0]
    if name == "version":
        model.version = 2
    elif name == "no subgraph":
        model.subgraphs = []
    elif name == "opcode index":
        sub.operators[0].opcodeIndex = len(model.operatorCodes)
    elif name == "operator input":
        sub.operators[0].inputs[0] = len(sub.tensors)
    elif name == "operator output":
        sub.operators[0].outputs[0] = -2
    elif name == "subgraph input":
        sub.inputs[0] = -1
    elif name == "tensor buffer":
        sub.tensors[0].buffer = len(model.buffers)
    elif name == "tensor type":
        sub.tensors[0].type = 77
    elif name == "negative dim":
        sub.tensors[0].shape[1] = -3
    elif name == "buffer bytes":
        tensor = _constant(model)
        model.buffers[tensor.buffer].data = model.buffers[tensor.buffer].data[:-1]
    elif name == "builtin code":
        model.operatorCodes[0].builtinCode = 4000
    elif name == "custom code":
        model.operatorCodes[0].builtinCode = schema.BuiltinOperator.CUSTOM
        model.operatorCodes[0].customCode = None


DAMAGE = {
    "version": "expected schema version 3, found 2",
    "no subgraph": "expected at least one subgraph",
    "opcode index": r"operators\[0\]: expected an opcode index in 0\.\.",
    "operator input": r"operators\[0\]\.inputs: expected tensor indices in -1 \(optional\) or",
    "operator output": r"operators\[0\]\.outputs: expected tensor indices .* found -2",
    "subgraph input": r"subgraphs\[0\]\.inputs: expected tensor indices in 0\.\..* found -1",
    "tensor buffer": r"tensors\[0\]: expected a buffer index",
    "tensor type": r"tensors\[0\]: expected a tensor type known to this schema .* found 77",
    "negative dim": r"tensors\[0\]: expected non-negative dims",
    "buffer bytes": r"expected \d+ bytes of constant data for shape .* found \d+",
    "builtin code": "expected a builtin operator code known to this schema",
    "custom code": "expected a custom_code for a CUSTOM operator",
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_meaningless_models_are_rejected(binary_fb, damage):
    model = load_model_t(binary_fb)
    _mutate(model, damage)
    with pytest.raises(InvalidFlatbufferError, match=DAMAGE[damage]):
        validate_flatbuffer(repack(model))


def _landmarks(data: bytes) -> dict[str, int]:
    """Byte positions worth damaging: header, tables, vtables, vectors, weights, options."""
    model = schema.Model.GetRootAs(data, 0)
    sub = model.Subgraphs(0)

    def vector(t, slot):  # where the elements of a vector field start
        return t._tab.Vector(t._tab.Offset(4 + 2 * slot))

    def table(t, name):
        soffset = int.from_bytes(data[t._tab.Pos : t._tab.Pos + 4], "little", signed=True)
        return {name: t._tab.Pos, f"{name} vtable": t._tab.Pos - soffset}

    marks = {"root offset": 0, "identifier": 4, **table(model, "model"), **table(sub, "subgraph")}
    for i in (0, sub.TensorsLength() // 2, sub.TensorsLength() - 1):
        marks.update(table(sub.Tensors(i), f"tensor {i}"))
        marks[f"tensor {i} shape"] = vector(sub.Tensors(i), 0)
    for i in (0, sub.OperatorsLength() - 1):
        marks.update(table(sub.Operators(i), f"operator {i}"))
        marks[f"operator {i} inputs"] = vector(sub.Operators(i), 1)
    for i in range(model.BuffersLength()):
        if model.Buffers(i).DataLength() > 8:
            marks[f"buffer {i} length"] = vector(model.Buffers(i), 0) - 4
            marks[f"buffer {i} weights"] = vector(model.Buffers(i), 0) + 3
    for i in range(sub.OperatorsLength()):
        if sub.Operators(i).CustomOptionsLength():
            marks["custom options"] = vector(sub.Operators(i), 5) + 120
            break
    return marks


@pytest.mark.parametrize("which", ["binary", "float"])
def test_bit_flips_at_every_kind_of_place_never_crash(binary_fb, float_fb, which):
    data = binary_fb if which == "binary" else float_fb
    outcomes: dict[str, collections.Counter] = {}
    runs_left = 50  # bit flips that pass validation cost a child process each
    for name, at in _landmarks(data).items():
        counts = outcomes.setdefault(name, collections.Counter())
        for byte in range(at, min(at + 4, len(data))):
            for bit in (0, 3, 7):
                damaged = bytearray(data)
                damaged[byte] ^= 1 << bit
                try:
                    validate_flatbuffer(bytes(damaged))
                except InvalidFlatbufferError:
                    counts["rejected"] += 1
                    continue
                if runs_left and "weights" not in name:  # flipped weights just run
                    runs_left -= 1
                    counts[run_isolated(bytes(damaged))] += 1
                else:
                    counts["passed"] += 1
    print({name: dict(c) for name, c in outcomes.items()})
    assert outcomes["identifier"] == {"rejected": 12}
    assert outcomes["root offset"]["rejected"] >= 6
    assert sum(c["rejected"] for c in outcomes.values()) >= 30


# ---------------------------------------------------------------------------------------------
# Damage only LCE's interpreter finds: isolated in the child


def _zero_channels_in(binary_fb: bytes) -> bytes:
    """LceBconv2d's flexbuffer options re-encoded with channels_in = 0 (same length): a valid
    flatbuffer on which LCE's interpreter divides by zero (SIGFPE on x86)."""
    model = load_model_t(binary_fb)
    code = next(i for i, c in enumerate(model.operatorCodes) if c.customCode == b"LceBconv2d")
    op = next(op for op in model.subgraphs[0].operators if op.opcodeIndex == code)
    options = bytes(np.asarray(op.customOptions, np.uint8))
    decoded = flexbuffers.Loads(options)
    decoded["channels_in"] = 0
    damaged = flexbuffers.Dumps(decoded)
    assert len(damaged) == len(options) and binary_fb.count(options) >= 1
    return binary_fb.replace(options, bytes(damaged), 1)


def test_a_real_interpreter_crash_is_reported(binary_fb):
    damaged = _zero_channels_in(binary_fb)
    validate_flatbuffer(damaged)  # custom options are the custom op's business
    with pytest.raises(InvalidFlatbufferError) as info:
        bench.isolated_latency(damaged, runs=1, warmup=0)
    assert str(info.value).startswith(PREFIX)
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert "LCE's interpreter crashed on it (signal SIGFPE)" in str(info.value)


def test_interpreter_errors_are_reported_with_its_first_line(binary_fb):
    """A RESHAPE to a shape of the wrong size: valid structure, refused by TFLite's prepare."""
    model = load_model_t(binary_fb)
    sub = model.subgraphs[0]
    reshape = next(
        op
        for op in sub.operators
        if model.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.RESHAPE
    )
    shape = model.buffers[sub.tensors[reshape.inputs[1]].buffer]
    shape.data = np.full(len(shape.data) // 4, 3, np.int32).view(np.uint8)
    damaged = repack(model)
    validate_flatbuffer(damaged)
    with pytest.raises(InvalidFlatbufferError, match=f"^{PREFIX}.*RESHAPE") as info:
        bench.isolated_latency(damaged, runs=1, warmup=0)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


# Test-only stand-ins for the child: what each kind of child failure becomes.
STAND_INS = {
    "segfault": ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", "signal SIGSEGV"),
    "abort": ("import os\nos.abort()\n", "signal SIGABRT"),
    "exit 3": (
        "import sys\nprint('W0000 noise', file=sys.stderr)\nprint('boom: bad', file=sys.stderr)\n"
        "print('W0000 more noise', file=sys.stderr)\nsys.exit(3)\n",
        "exited with status 3 and no result; its last message: boom: bad",
    ),
    "garbage": ("print('TFQUANT_BENCH_RESULT {not json')\n", "exited with status 0 and no result"),
}


@pytest.mark.parametrize("kind", sorted(STAND_INS))
def test_child_failures_are_reported(float_fb, tmp_path, monkeypatch, kind):
    source, message = STAND_INS[kind]
    child = tmp_path / "child.py"
    child.write_text(source)
    monkeypatch.setattr(bench, "_CHILD", str(child))
    with pytest.raises(InvalidFlatbufferError) as info:
        bench.isolated_latency(float_fb, runs=1, warmup=0)
    assert str(info.value).startswith(PREFIX) and message in str(info.value)


def test_child_timeout_and_environment_errors(float_fb, tmp_path, monkeypatch):
    from tfquant.converters import _bench_child

    assert _bench_child.RESULT_PREFIX == bench._RESULT_PREFIX
    child = tmp_path / "child.py"
    child.write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setattr(bench, "_CHILD", str(child))
    start = time.perf_counter()
    with pytest.raises(bench.BenchTimeoutError, match="did not finish within 1 s"):
        bench.isolated_latency(float_fb, runs=1, warmup=0, timeout=1)
    assert time.perf_counter() - start < 30
    child.write_text(
        'import json\nprint("TFQUANT_BENCH_RESULT " + json.dumps({"error": "ModuleNotFoundError:'
        ' larq_compute_engine", "kind": "environment"}))\nraise SystemExit(1)\n'
    )
    with pytest.raises(RuntimeError, match="could not run LCE's interpreter: ModuleNotFound"):
        bench.isolated_latency(float_fb, runs=1, warmup=0)
    with pytest.raises(ValueError, match="Expected thread counts >= 1"):
        bench.isolated_latency(float_fb, threads=[0])


# ---------------------------------------------------------------------------------------------
# The command line


def test_cli_truncated_file_fifo_and_crash(binary_fb, tmp_path):
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(binary_fb[: len(binary_fb) // 2])
    assert_clean_failure(
        tfquant_cli("bench", truncated), "tfquant bench: error: not a valid TFLite model: "
    )
    crashing = tmp_path / "crashing.tflite"
    crashing.write_bytes(_zero_channels_in(binary_fb))
    proc = tfquant_cli("bench", crashing, "--runs", "1")
    assert_clean_failure(proc, "tfquant bench: error: not a valid TFLite model: ")
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert "crashed on it (signal SIGFPE)" in proc.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_cli_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "model.tflite"
    os.mkfifo(fifo)
    proc = tfquant_cli("bench", fifo)  # opening it would block forever: timeout=300 above
    assert_clean_failure(proc, f"Expected a regular .tflite file. Received: '{fifo}', a FIFO")
    with pytest.raises(ValueError, match="a FIFO"):
        read_flatbuffer_file(fifo)
    with pytest.raises(ValueError, match="a directory"):
        read_flatbuffer_file(tmp_path)


def test_cli_bad_option_values(float_fb, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(float_fb)
    proc = tfquant_cli("bench", model, "--threads", "2", "0")
    assert_clean_failure(proc, "argument --threads: Expected an integer in 1..256. Received: '0'")
    stderr = io.StringIO()
    parser = tfquant.cli.build_parser()
    for args, message in [
        (["--runs", "0"], "argument --runs: Expected an integer in 1..100000. Received: '0'"),
        (["--runs", "1e3"], "Received: '1e3'"),
        (["--warmup", "-1"], "argument --warmup: Expected an integer in 0..10000. Received: '-1'"),
        (["--threads", "257"], "Expected an integer in 1..256. Received: '257'"),
        (["--threads", "1", "2", "1"], "Expected distinct thread counts. Received: 1 2 1"),
        (["--timeout", "0"], "argument --timeout: Expected an integer in 1..86400"),
    ]:
        with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as info:
            parser.parse_args(["bench", str(model), *args])
        assert info.value.code == 2 and message in stderr.getvalue(), (args, stderr.getvalue())
    args = parser.parse_args(["bench", "m", "--threads", "4", " 2", "--runs", "+7"])
    # --warmup unset: 3 locally, the benchmark binary's own default on a device.
    assert (args.threads, args.runs, args.warmup, args.timeout) == ([4, 2], 7, None, 600)
    assert parser.parse_args(["bench", "m", "--threads", "1,2", "4"]).threads == [1, 2, 4]


# ---------------------------------------------------------------------------------------------
# Fuzzing


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """1-4 of: bit flip, truncation, overwrite with random bytes, splice of another part. The
    places come from a seeded Random (uniform over the file): Hypothesis' integers favour
    small values, which would damage the header over and over."""
    out = bytearray(data)
    rng = draw(st.randoms(use_true_random=False))
    for _ in range(draw(st.integers(1, 4))):
        if not out:
            break
        kind = draw(st.sampled_from(["flip"] * 4 + ["truncate", "overwrite", "splice"]))
        at = rng.randrange(len(out))
        if kind == "flip":
            out[at] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            del out[at:]
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            out[at : at + len(chunk)] = chunk
        else:
            source, length = rng.randrange(len(out)), rng.randint(1, 64)
            out[at : at + length] = out[source : source + length]
    return bytes(out)


def _bench_in_process(path, data: bytes) -> None:
    path.write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = tfquant.cli.main(["bench", str(path), "--runs", "1", "--warmup", "0"])
    assert code in (0, 2), err.getvalue()
    assert "Traceback" not in err.getvalue()
    if code == 2:
        assert err.getvalue().startswith("tfquant bench: error: "), err.getvalue()
    message = err.getvalue()
    event(
        "ran"
        if code == 0
        else "crashed in the child"
        if "crashed on it" in message
        else "refused by the interpreter"
        if "ERROR" in message or "interpreter" in message
        else "rejected by validation"
    )


@FUZZ
@given(data=st.data())
def test_fuzz_bench_never_crashes_on_mutations(binary_fb, work_dir, data):
    _bench_in_process(work_dir / "mutated.tflite", data.draw(mutated(binary_fb)))


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=4096),
        st.binary(max_size=4096).map(lambda b: b[:4] + b"TFL3" + b[4:]),  # past the identifier
    )
)
def test_fuzz_bench_never_crashes_on_random_bytes(work_dir, data):
    _bench_in_process(work_dir / "random.tflite", data)


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(data=st.data())
def test_fuzz_validation_raises_only_invalid_flatbuffer_error(binary_fb, float_fb, data):
    """Validation alone (no child) over many more mutations: a summary or the one error."""
    base = data.draw(st.sampled_from([binary_fb, float_fb]))
    try:
        validate_flatbuffer(data.draw(mutated(base)))
    except InvalidFlatbufferError as e:
        assert str(e).startswith(PREFIX)


OPTION_TEXT = st.one_of(
    st.integers(-5, 300_000).map(str),
    st.sampled_from(
        ["", " ", "1_0", "٣", "+5", " 7 ", "0x10", "1e3", "nan", "-", "--", "9" * 5000]
    ),
    st.text(max_size=8),
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    threads=st.lists(OPTION_TEXT, min_size=1, max_size=4),
    runs=OPTION_TEXT,
    warmup=OPTION_TEXT,
)
def test_fuzz_bench_options(threads, runs, warmup):
    argv = ["bench", "m.tflite", "--threads", *threads, "--runs", runs, "--warmup", warmup]
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            args = tfquant.cli.build_parser().parse_args(argv)
        except SystemExit as e:
            assert e.code == 2
            return
    assert args.model == "m.tflite"
    assert len(set(args.threads)) == len(args.threads)
    assert all(isinstance(n, int) and 1 <= n <= 256 for n in args.threads)
    assert isinstance(args.runs, int) and 1 <= args.runs <= 100_000
    assert isinstance(args.warmup, int) and 0 <= args.warmup <= 10_000
