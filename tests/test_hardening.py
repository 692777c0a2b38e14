"""Careless and hostile input to the command line: output paths that collide with inputs or
with each other, existing files, special files, interrupts at several moments, option
values out of range. Everything runs the real command (the installed ``tfquant`` script in a
subprocess where signals or a fresh process matter) on files the tests make."""

from __future__ import annotations

import hashlib
import os
import pathlib
import signal
import subprocess
import tempfile
import threading
import time

import numpy as np
import pytest
from helpers import TFQUANT, binary_cnn
from helpers import tfquant_cli as tfquant
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfquant._keras import keras

TRAIN_SMALL = ["--dataset", "digits", "--limit", "256", "--batch-size", "32", "--epochs", "2"]


def listing(directory: pathlib.Path) -> dict[str, str]:
    """Every file under ``directory`` (hidden ones included) with its SHA-256."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("model") / "binary.keras"
    binary_cnn().save(path)
    keras.backend.clear_session()
    return path


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory) -> pathlib.Path:
    """60 binary convolutions: slow enough to export and convert to be interrupted."""
    from tfquant.layers import QuantConv2D

    x = inputs = keras.Input((16, 16, 32))
    for _ in range(60):
        x = QuantConv2D(
            32,
            3,
            padding="same",
            input_quantizer="ste_sign",
            kernel_quantizer="ste_sign",
            pad_values=1.0,
        )(x)
        x = keras.layers.BatchNormalization()(x)
    path = tmp_path_factory.mktemp("deep") / "deep.keras"
    keras.Model(inputs, x).save(path)
    keras.backend.clear_session()
    return path


@pytest.fixture
def workdir(tmp_path, model_file) -> pathlib.Path:
    """A directory holding the user's model and a data file."""
    (tmp_path / "m.keras").write_bytes(model_file.read_bytes())
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28, 1), "float32"))
    return tmp_path


def _must_not_run(*args, **kwargs):
    raise AssertionError("the command started its work before refusing its paths")


def run_main(capsys, *argv) -> tuple[int, str]:
    from tfquant.cli import main

    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Output paths: collisions, existing files, special files. In-process: these are refused
# before anything is loaded, so each takes milliseconds.


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["-o", "m.keras"], "is the input 'm.keras'"),
        (["-o", "x.npy", "--data", "x.npy"], "is the input"),
        (["-o", "a.tflite", "--report", "m.keras"], "is the input"),
        (["-o", "a.tflite", "--report", "a.tflite"], "are the same file"),
        (["-o", "a.tflite", "--report", "./sub/../a.tflite"], "are the same file"),
        (["-o", "a.tflite", "--report", "x.npy", "--data", "x.npy"], "is the input"),
        (["-o", "link-to-model.tflite"], "is the input 'm.keras'"),  # a symlink
        (["-o", "hardlink.keras"], "is the input 'm.keras'"),  # a hard link
        (["-o", "link-to-out.json", "--report", "out.json", "--overwrite"], "are the same file"),
    ],
)
def test_convert_output_collisions_are_refused_before_any_work(
    workdir, capsys, monkeypatch, argv, needle
):
    monkeypatch.chdir(workdir)
    (workdir / "sub").mkdir()
    (workdir / "link-to-model.tflite").symlink_to("m.keras")
    os.link(workdir / "m.keras", workdir / "hardlink.keras")
    (workdir / "link-to-out.json").symlink_to("out.json")  # dangling: out.json is new
    before = listing(workdir)
    import tfquant.converters

    monkeypatch.setattr(tfquant.converters, "convert_with_report", _must_not_run)
    code, err = run_main(capsys, "convert", "m.keras", *argv)
    assert code == 2 and needle in err, err  # refused before loading or converting
    assert listing(workdir) == before


def test_bench_json_over_its_model_is_refused(workdir, capsys):
    flatbuffer = workdir / "m.tflite"
    flatbuffer.write_bytes(b"old bytes")
    code, err = run_main(capsys, "bench", flatbuffer, "--json", flatbuffer)
    assert code == 2 and "is the input" in err, err
    assert flatbuffer.read_bytes() == b"old bytes"


def test_existing_output_needs_overwrite(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    (workdir / "out.tflite").write_bytes(b"the user's file")
    code, err = run_main(capsys, "convert", "m.keras", "-o", "out.tflite", "-q")
    assert code == 2 and "already exists" in err and "--overwrite" in err, err
    assert (workdir / "out.tflite").read_bytes() == b"the user's file"

    code, err = run_main(capsys, "convert", "m.keras", "-o", "out.tflite", "-q", "--overwrite")
    assert code == 0, err
    assert (workdir / "out.tflite").read_bytes()[4:8] == b"TFL3"
    assert not [p for p in os.listdir(workdir) if p.startswith(".tfquant-")]


@pytest.mark.parametrize("kind", ["fifo", "directory", "device", "proc", "missing_dir", "file_dir"])
def test_special_output_paths(workdir, capsys, kind):
    target = {
        "fifo": workdir / "fifo.tflite",
        "directory": workdir,
        "device": pathlib.Path("/dev/null"),
        "proc": pathlib.Path("/proc/self/out.tflite"),  # not writable, even for root
        "missing_dir": workdir / "nope" / "out.tflite",
        "file_dir": workdir / "x.npy" / "out.tflite",
    }[kind]
    if kind == "fifo":
        os.mkfifo(target)
    before = listing(workdir)
    code, err = run_main(capsys, "convert", workdir / "m.keras", "-o", target, "--overwrite")
    expected = {
        "fifo": "a FIFO",
        "directory": "it is a directory",
        "device": "a character device",
        "proc": "cannot create files in",
        "missing_dir": "does not exist",
        "file_dir": "is not a directory",
    }[kind]
    assert code == 2 and expected in err, err
    assert listing(workdir) == before


@pytest.mark.parametrize("command", ["convert", "summary", "bench"])
def test_special_input_files_do_not_hang(workdir, command):
    fifo = workdir / ("in.tflite" if command == "bench" else "in.keras")
    os.mkfifo(fifo)
    extra = ["-o", workdir / "out.tflite"] if command == "convert" else []
    proc = tfquant(command, fifo, *extra)  # a reader that opened the FIFO would block
    assert proc.returncode == 2, proc.stderr
    assert "FIFO" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "name, save, needle",
    [
        ("d.npz", lambda p: np.savez(p, x=np.zeros((2, 28, 28, 1))), ".npz archive"),
        ("s.npy", lambda p: np.save(p, np.array(["a", "b"])), "numeric array"),
        ("e.npy", lambda p: np.save(p, np.zeros((0, 28, 28, 1))), "non-empty"),
    ],
)
def test_data_files_that_are_not_a_batch_get_a_clear_message(workdir, capsys, name, save, needle):
    save(workdir / name)
    args = ["convert", workdir / "m.keras", "-o", workdir / "o.tflite", "--data", workdir / name]
    code, err = run_main(capsys, *args)
    assert code == 2 and needle in err, err
    assert not (workdir / "o.tflite").exists()


def test_unknown_int8_layer_names_are_refused(workdir, capsys):
    code, err = run_main(
        capsys, "convert", workdir / "m.keras", "-o", workdir / "o.tflite", "--int8", "nope", "-q"
    )
    assert code == 2 and "unknown: ['nope']" in err and "quant_conv2d" in err, err
    assert not (workdir / "o.tflite").exists()


def test_artifacts_follow_the_umask_even_when_replacing_a_private_file(workdir, capsys):
    out = workdir / "o.tflite"
    out.write_bytes(b"old")
    out.chmod(0o600)
    old = os.umask(0o022)
    try:
        code, err = run_main(
            capsys,
            "convert",
            workdir / "m.keras",
            "-o",
            out,
            "--overwrite",
            "-q",
            "--report",
            workdir / "r.json",
        )
    finally:
        os.umask(old)
    assert code == 0, err
    assert out.stat().st_mode & 0o777 == 0o644
    assert (workdir / "r.json").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------------------------------
# tfquant train's --out


def test_train_out_problems_are_found_before_training(tmp_path, capsys, monkeypatch):
    from tfquant import datasets

    monkeypatch.setattr(datasets, "load", _must_not_run)  # the first step of a run
    (tmp_path / "file").write_text("x")
    for out, needle in [
        (tmp_path / "file", "Expected --out to be a directory"),
        (tmp_path / "file" / "sub", "is not a directory"),
        ("/proc/self/run", "cannot create files in"),
    ]:
        code, err = run_main(capsys, "train", *TRAIN_SMALL, "--out", out, "-q")
        assert code == 2 and needle in err, (out, err)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").mkdir()  # an artifact path that is a directory
    code, err = run_main(capsys, "train", *TRAIN_SMALL, "--out", tmp_path / "run", "--overwrite")
    assert code == 2 and "is a directory" in err, err


def test_train_overwrite_replaces_the_whole_set(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("model.keras", "model.tflite", "report.json", "report.md", "curves.png"):
        (out / name).write_text("previous run")
    (out / "notes.txt").write_text("the user's")
    proc = tfquant("train", *TRAIN_SMALL, "--no-convert", "--out", out, "-q")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr, proc.stderr
    assert (out / "model.keras").read_text() == "previous run"

    proc = tfquant("train", *TRAIN_SMALL, "--no-convert", "--out", out, "-q", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert "wrote to" in proc.stdout and "model.tflite" not in proc.stdout.splitlines()[-1]
    # --no-convert writes no model.tflite: the previous one goes too, so the directory holds
    # one run's set, never a mix; other files are left alone. The checkpoints are the run's
    # too (--resume).
    assert sorted(os.listdir(out)) == [
        "checkpoints",
        "curves.png",
        "model.keras",
        "notes.txt",
        "report.json",
        "report.md",
    ]
    assert (out / "notes.txt").read_text() == "the user's"
    assert (out / "model.keras").read_bytes()[:2] == b"PK"


# ---------------------------------------------------------------------------------------------
# Interrupts: a real subprocess, a signal at a moment recognised from its output


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler (Linux: SigCgt in /proc/PID/status):
    true once tfquant's launcher runs, before it imports TensorFlow (Python alone catches
    only SIGINT)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    except OSError:
        pass
    return False


def interrupt_when(args, needle: str | None, sig: int, delay: float = 0.0, cwd=None):
    """Run ``tfquant *args``; once ``needle`` appears on its stdout or stderr (``None``: once
    the launcher has installed its handlers), wait ``delay`` seconds and send ``sig``.
    Returns (returncode, stdout, stderr, sent)."""
    proc = subprocess.Popen(
        [*TFQUANT, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    seen = threading.Event()
    chunks: dict[str, list[str]] = {"out": [], "err": []}

    def pump(stream, key):
        for line in iter(lambda: stream.read(1), ""):
            chunks[key].append(line)
            if needle is not None and needle in "".join(chunks[key][-200:]):
                seen.set()

    threads = [
        threading.Thread(target=pump, args=(proc.stdout, "out"), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, "err"), daemon=True),
    ]
    for t in threads:
        t.start()
    if needle is None:
        deadline = time.monotonic() + 60
        while not _catches_sigterm(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.set()
    sent = seen.wait(timeout=300)
    if sent:
        time.sleep(delay)
        proc.send_signal(sig)
    proc.wait(timeout=300)
    for t in threads:
        t.join(timeout=10)
    return proc.returncode, "".join(chunks["out"]), "".join(chunks["err"]), sent


@pytest.mark.parametrize(
    "needle, delay, sig",
    [
        (None, 0.5, signal.SIGINT),  # while TensorFlow is still importing
        ("loading", 0.0, signal.SIGTERM),
        ("exporting a SavedModel", 0.5, signal.SIGINT),
        ("converting with Larq Compute Engine", 0.3, signal.SIGTERM),
    ],
)
def test_convert_interrupted_leaves_nothing(workdir, deep_model, needle, delay, sig):
    # A deep model, so that exporting (~6 s) and converting (~2 s) last long enough for the
    # signal to land in them.
    (workdir / "m.keras").write_bytes(deep_model.read_bytes())
    (workdir / "o.tflite").write_bytes(b"the user's old output")
    before = listing(workdir)
    code, out, err, sent = interrupt_when(
        ["convert", "m.keras", "-o", "o.tflite", "--report", "r.json", "--overwrite"],
        needle,
        sig,
        delay,
        cwd=workdir,
    )
    assert sent, (out, err)
    assert code == 128 + sig, (code, err)
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "interrupted; nothing written" in last, err
    if needle is None:  # during the import: nothing of the command ran yet
        assert err.strip() == "tfquant: interrupted; nothing written", err
    assert listing(workdir) == before  # the old output as it was, no temporary files


@pytest.mark.parametrize(
    "needle, delay, sig, moment",
    [
        ("training", 1.0, signal.SIGINT, "fit"),
        ("finalizing", 0.0, signal.SIGTERM, "finalize and save"),
    ],
)
def test_train_interrupted_keeps_the_previous_run(tmp_path, needle, delay, sig, moment):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("model.keras", "report.json", "report.md"):
        (out / name).write_text("previous run")
    before = listing(out)
    code, stdout, err, sent = interrupt_when(
        ["train", *TRAIN_SMALL, "--no-convert", "--out", out, "--overwrite"], needle, sig, delay
    )
    assert sent, (stdout, err)
    assert code == 128 + sig, (moment, code, stdout[-500:], err[-2000:])
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "tfquant train: interrupted; nothing written"
    after = listing(out)
    checkpoints = {k for k in after if k.startswith("checkpoints/")}
    assert {k: v for k, v in after.items() if k not in checkpoints} == before, moment
    if needle == "finalizing":  # every epoch's checkpoint is there: --resume only finalizes
        assert "checkpoints/state.json" in checkpoints
        proc = tfquant("train", *TRAIN_SMALL, "--no-convert", "--out", out, "-q", "--resume")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (out / "model.keras").read_bytes() != b"previous run"
        proc = tfquant("train", *TRAIN_SMALL, "--no-convert", "--out", out, "-q", "--resume")
        assert proc.returncode == 2 and "nothing to resume" in proc.stderr, proc.stderr[-2000:]


def test_train_interrupted_in_a_new_out_removes_it(tmp_path):
    out = tmp_path / "new" / "run"
    code, stdout, err, sent = interrupt_when(
        ["train", *TRAIN_SMALL, "--no-convert", "--out", out], "training", signal.SIGINT, 0.5
    )
    assert sent and code == 130, err
    assert not (tmp_path / "new").exists()  # the directories it created are gone


# ---------------------------------------------------------------------------------------------
# The parser: no command, option values


def test_no_command_prints_help_and_exits_2():
    proc = tfquant()
    assert proc.returncode == 2
    assert "usage: tfquant" in proc.stderr and "convert" in proc.stderr


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--epochs", "0"], "Expected an integer in 1..10000. Received: '0'"),
        (["train", "--batch-size", "-3"], "Expected an integer in 1..65536"),
        (["train", "--limit", "7"], "Expected an integer >= 8. Received: '7'"),
        (["train", "--seed", "-1"], "Expected an integer in 0..4294967295"),
        (["train", "--learning-rate", "nan"], "Expected a finite number > 0"),
        (["train", "--learning-rate", "inf"], "Expected a finite number > 0"),
        (["train", "--learning-rate", "0"], "Expected a finite number > 0"),
        (["train", "--dataset", "imagenet"], "invalid choice: 'imagenet'"),
        (["train", "--method", "sgd"], "invalid choice: 'sgd'"),
        (["train", "--model", "resnet"], "invalid choice: 'resnet'"),
        (["convert", "m.keras", "-o", "o.tflite", "--target", "x86"], "invalid choice"),
    ],
)
def test_bad_option_values_name_the_expected_range(capsys, argv, needle):
    from tfquant.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err


_OPTION_VALUES = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
    st.sampled_from(["", "-", "--", "1e309", "0x10", " 3", "٣", "nan", "-0", "1_000"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    option=st.sampled_from(
        [
            "--epochs",
            "--batch-size",
            "--learning-rate",
            "--limit",
            "--seed",
            "--dataset",
            "--method",
            "--model",
        ]
    ),
    value=_OPTION_VALUES,
)
def test_fuzz_train_options_parse_or_exit_2(option, value):
    """Any value: the parser returns a value the training config accepts, or exits 2."""
    import contextlib
    import io

    from tfquant.cli import build_parser
    from tfquant.cli.train import config_from_args
    from tfquant.train import check_config

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = build_parser().parse_args(["train", option, value])
    except SystemExit as e:
        assert e.code == 2
        assert "Traceback" not in stderr.getvalue()
        return
    args.out = os.path.join(tempfile.gettempdir(), "tfquant-fuzz-never-written", "run")
    config = config_from_args(args)
    check_config(config)  # never raises for a value the parser let through
