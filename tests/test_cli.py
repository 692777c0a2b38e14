"""The ``tfquant`` command line as a user runs it (subprocesses), bad inputs included."""

from __future__ import annotations

import json
import os

import pytest
from helpers import binary_cnn, tfquant_cli

from tfquant._keras import keras, tf
from tfquant.converters.flatbuffer import op_counts
from tfquant.layers import QuantDense


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    base = binary_cnn()
    x = keras.layers.GlobalAveragePooling2D()(base.outputs[0])
    x = QuantDense(16, input_quantizer="ste_sign", kernel_quantizer="ste_sign")(x)
    keras.Model(base.inputs[0], x).save(root / "binary.keras")
    float_kernel = binary_cnn()
    float_kernel.layers[0].kernel_gate.assign(0.0)  # forwards the latent float kernel
    float_kernel.save(root / "float_kernel.keras")
    inp = keras.Input((4,))
    unsupported = keras.Model(inp, keras.layers.Lambda(lambda v: tf.math.digamma(v))(inp))
    # A Lambda's Python code does not load from .keras / .h5 in safe mode: a SavedModel
    # directory (model.export) carries the traced graph instead.
    unsupported.export(str(root / "unsupported_savedmodel"), verbose=False)
    (root / "not_a_model.keras").write_text("hello")
    keras.backend.clear_session()
    return root


def test_convert_writes_flatbuffer_report_and_summary(models, tmp_path):
    out, report = tmp_path / "m.tflite", tmp_path / "m.json"
    proc = tfquant_cli("convert", models / "binary.keras", "-o", out, "--report", report)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "LceBconv2d x3" in proc.stdout
    assert "parity vs Keras" in proc.stdout
    assert "converting with Larq Compute Engine" in proc.stderr  # progress display
    ops = op_counts(out.read_bytes())
    assert ops["LceBconv2d"] == 3 and "FULLY_CONNECTED" not in ops
    data = json.loads(report.read_text())
    assert [r["became"] for r in data["layers"]] == ["binary"] * 3
    assert data["parity"]["max_abs_diff"] < 1e-4
    assert data["sizes"]["total"] == out.stat().st_size
    assert sorted(os.listdir(tmp_path)) == ["m.json", "m.tflite"]  # no temporary files left

    bench = tfquant_cli(
        "bench", out, "--threads", "1", "--runs", "3", "--json", tmp_path / "b.json"
    )
    assert bench.returncode == 0, bench.stderr
    assert bench.stdout.splitlines()[0] == f"{out} on local"
    assert bench.stdout.splitlines()[3].startswith("| model | 1 | - | - | ")  # no twin: "- | -"
    data = json.loads((tmp_path / "b.json").read_text())
    (row,) = data["rows"]
    assert data["device"] == "local" and row["threads"] == 1 and row["runs"] == 3
    assert 0 < row["min_ms"] <= row["median_ms"] and row["inference_ms"] == row["mean_ms"]


def test_summary(models):
    proc = tfquant_cli("summary", models / "binary.keras")
    assert proc.returncode == 0, proc.stderr
    assert "QuantDense" in proc.stdout and "compression" in proc.stdout


def _fails_cleanly(proc, out, *needles, old=None):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    if old is None:
        assert not out.exists()
    else:
        assert out.read_bytes() == old  # an existing file is left as it was
    if out.parent.exists():
        assert not [p for p in os.listdir(out.parent) if p.startswith(".tfquant-")]


def test_missing_file(models, tmp_path):
    out = tmp_path / "m.tflite"
    _fails_cleanly(tfquant_cli("convert", tmp_path / "nope.keras", "-o", out), out, "not found")


def test_not_a_model(models, tmp_path):
    out = tmp_path / "m.tflite"
    proc = tfquant_cli("convert", models / "not_a_model.keras", "-o", out)
    _fails_cleanly(proc, out, "Expected a .keras file", "not a zip archive")


def test_unsupported_layers_leave_existing_output_untouched(models, tmp_path):
    out = tmp_path / "m.tflite"
    out.write_bytes(b"old")
    proc = tfquant_cli("convert", models / "unsupported_savedmodel", "-o", out, "--overwrite")
    _fails_cleanly(proc, out, "Digamma", "neither TFLite nor LCE", old=b"old")


def test_unwritable_output(models, tmp_path):
    out = tmp_path / "missing_dir" / "m.tflite"
    _fails_cleanly(
        tfquant_cli("convert", models / "binary.keras", "-o", out), out, "does not exist"
    )


def test_output_that_is_a_directory_in_process(models, tmp_path, capsys):
    from tfquant.cli import main

    assert main(["convert", str(models / "binary.keras"), "-o", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["summary", str(models / "not_a_model.keras")]) == 2
    assert "not a zip archive" in capsys.readouterr().err


def test_binary_layer_that_stays_float_fails_unless_allowed(models, tmp_path):
    out = tmp_path / "m.tflite"
    proc = tfquant_cli("convert", models / "float_kernel.keras", "-o", out)
    _fails_cleanly(proc, out, "declared binary", "quant_conv2d", "--allow-float")


@pytest.mark.slow
def test_allow_float_accepts_the_float_layer(models, tmp_path):
    out = tmp_path / "m.tflite"
    proc = tfquant_cli("convert", models / "float_kernel.keras", "-o", out, "--allow-float")
    assert proc.returncode == 0, proc.stderr
    assert "-> float" in proc.stdout and out.exists()


def test_help_lists_subcommands():
    from tfquant.cli import build_parser

    text = build_parser().format_help()
    for name in ("convert", "summary", "bench"):
        assert name in text


def test_convert_saved_model_directory(models, tmp_path):
    # Keras 3's model.export writes no Keras layers: converted as it is (the binary Dense
    # stays FULLY_CONNECTED), checked against the SavedModel's own serving signature.
    model = keras.models.load_model(models / "binary.keras")
    model.export(str(tmp_path / "saved"), verbose=False)
    out = tmp_path / "m.tflite"
    proc = tfquant_cli("convert", tmp_path / "saved", "-o", out, "-q")
    assert proc.returncode == 0, proc.stderr
    ops = op_counts(out.read_bytes())
    assert ops["LceBconv2d"] == 2 and "FULLY_CONNECTED" in ops
    assert "parity vs SavedModel serving signature" in proc.stdout
    assert "note: SavedModel directory" in proc.stdout
    summary = tfquant_cli("summary", tmp_path / "saved")
    _fails_cleanly(summary, out, "SavedModel", ".keras", old=out.read_bytes())


def test_output_files_follow_the_umask(models, tmp_path):
    from tfquant.cli import main

    out = tmp_path / "m.tflite"
    old = os.umask(0o027)
    try:
        assert main(["convert", str(models / "binary.keras"), "-o", str(out), "-q"]) == 0
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o640


def _help_texts(parser) -> dict[str, str]:
    """``--help`` of the command and of every subcommand, by name."""
    import argparse

    texts = {"tfquant": parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                texts[name] = sub.format_help()
    return texts


def test_help_texts_are_plain_text():
    from tfquant.cli import build_parser

    texts = _help_texts(build_parser())
    assert set(texts) == {"tfquant", "convert", "summary", "bench", "train"}
    for name, text in texts.items():
        for markup in ("``", ":func:", ":class:", ":mod:", ":data:"):
            assert markup not in text, (name, markup, text)
    assert "tfquant convert | summary | bench | train" in texts["tfquant"]


def test_user_errors_exit_2_by_type_and_bugs_keep_their_traceback(monkeypatch, capsys):
    # The mapping is by type alone: a TfquantError from anywhere is the user's to fix (one
    # line, exit 2); a plain ValueError is a bug and propagates with its traceback.
    from tfquant import cli
    from tfquant.errors import ConfigError

    def refuses(args):
        raise ConfigError("Expected a model file. Received: 'x'")

    monkeypatch.setattr(cli.summary, "run", refuses)
    assert cli.main(["summary", "x"]) == 2
    assert (
        capsys.readouterr().err == "tfquant summary: error: Expected a model file. Received: 'x'\n"
    )

    def breaks(args):
        raise ValueError("a bug")

    monkeypatch.setattr(cli.summary, "run", breaks)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["summary", "x"])


def test_user_facing_errors_are_typed():
    from tfquant._files import FileError
    from tfquant.cli import UsageError
    from tfquant.datasets import DatasetNotFoundError
    from tfquant.errors import ConfigError, TfquantError

    assert issubclass(FileError, ConfigError) and issubclass(FileError, ValueError)
    assert issubclass(UsageError, TfquantError)
    assert issubclass(DatasetNotFoundError, TfquantError)
    assert issubclass(DatasetNotFoundError, FileNotFoundError)


def test_a_signal_during_a_commit_lands_after_it(tmp_path):
    # Outputs.commit holds the signals back: the files land together, then the signal
    # raises, and the command line's line names them.
    import signal
    import threading
    import time

    from tfquant import _files, _signals

    # Another thread, as TensorFlow starts many: the kernel may hand it a signal sent to the
    # process, so a signal mask of the main thread alone would not hold it back.
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    received: list[int] = []
    outputs = _files.Outputs(overwrite=False)
    for name in ("a.txt", "b.txt"):
        outputs.add(tmp_path / name, name)
        outputs.write(tmp_path / name, name)
    with pytest.raises(_signals.Interrupted), _signals.raising(received):
        with _signals.held():
            signal.pthread_kill(other.ident, signal.SIGHUP)  # as the kernel may do
            time.sleep(0.2)  # time for it to land
            written = outputs.commit()
            assert received == []  # not yet delivered
    stop.set()
    other.join()
    assert received == [signal.SIGHUP]
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]
    line = _signals.interrupted_line("convert", written)
    assert (
        line
        == f"tfquant convert: interrupted; wrote {tmp_path / 'a.txt'}, {tmp_path / 'b.txt'} before it"
    )
    assert _signals.interrupted_line(None, []) == "tfquant: interrupted; nothing written"
