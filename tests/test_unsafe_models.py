"""No model file runs code unless the user says ``--unsafe`` / ``unsafe=True``.

Every accepted format (.keras, .h5, .hdf5, SavedModel directory) gets a model whose
``Lambda`` writes a marker file when it runs; loading or converting it must fail cleanly
(exit 2, the layer or graph node named, ``--unsafe`` offered) and leave no marker and no
output. With ``--unsafe`` the marker appears, which shows the marker would catch a leak.
Most cases run in this process (``tfquant.cli.main``, ``load_model``); a few run the
command line as a user does (subprocesses, ~10 s each).
"""

from __future__ import annotations

import json
import os
import re
import zipfile

import h5py
import pytest
from helpers import tfquant_cli

from tfquant._keras import keras, tf
from tfquant.converters import ConversionError, UnsafeModelError, load_model, safety

HINT = "--unsafe"


def _file_writer(path):
    """A lambda that creates ``path`` when it runs (the path travels in its closure)."""
    return lambda x: (open(path, "w").close(), x)[1]


def _graph_writer(path):
    """A lambda whose traced graph holds a WriteFile op for ``path``."""
    return lambda x: (tf.io.write_file(path, "ran"), x)[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("unsafe")
    markers = root / "markers"
    markers.mkdir()
    out = {"root": root, "markers": markers}

    for suffix in ("keras", "h5", "hdf5"):
        inp = keras.Input((4,))
        x = keras.layers.Lambda(_file_writer(str(markers / suffix)), name=f"evil_{suffix}")(inp)
        model = keras.Model(inp, keras.layers.Dense(2)(x))
        out[suffix] = root / f"lambda.{suffix}"
        model.save(out[suffix])

    # Nested: Sequential > TimeDistributed(Lambda), and a Functional model inside it.
    inner_in = keras.Input((3,))
    inner = keras.Model(
        inner_in,
        keras.layers.Lambda(_file_writer(str(markers / "nested")), name="deep")(inner_in),
        name="inner",
    )
    nested = keras.Sequential(
        [
            keras.Input((2, 3)),
            keras.layers.TimeDistributed(
                keras.layers.Lambda(_file_writer(str(markers / "nested")), name="per_step"),
                name="td",
            ),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
            inner,
        ],
        name="outer",
    )
    out["nested"] = root / "nested.keras"
    nested.save(out["nested"])

    inp = keras.Input((4,))
    x = keras.layers.Lambda(_graph_writer(str(markers / "saved_model")), name="writer")(inp)
    out["saved_model"] = root / "saved_model"
    keras.Model(inp, keras.layers.Dense(2)(x)).export(str(out["saved_model"]), verbose=False)
    inp = keras.Input((4,))
    out["clean_saved_model"] = root / "clean_saved_model"
    keras.Model(inp, keras.layers.Dense(2)(inp)).export(
        str(out["clean_saved_model"]), verbose=False
    )

    # Building a functional model calls its layers: the lambdas ran once here, on purpose.
    for marker in markers.iterdir():
        marker.unlink()
    keras.backend.clear_session()
    return out


@pytest.fixture(autouse=True)
def _no_marker(files):
    """No test may leave a marker behind unless it says so (``_ran`` removes it)."""
    yield
    assert sorted(p.name for p in files["markers"].iterdir()) == []


def _ran(files, name: str) -> bool:
    marker = files["markers"] / name
    ran = marker.exists()
    if ran:
        marker.unlink()
    return ran


def _refused_cleanly(code, err, out, *needles):
    assert code == 2, err
    for needle in (*needles, HINT, "unsafe=True"):
        assert needle in err, err
    assert "Traceback" not in err and "safe_mode" not in err, err
    assert not out.exists()
    assert not [p for p in os.listdir(out.parent) if p.startswith(".tfquant-")]


# ---------------------------------------------------------------------------------------------
# Every format, through the command line's code (in process: the lambdas never run here)


@pytest.mark.parametrize("suffix", ["keras", "h5", "hdf5"])
def test_cli_refuses_a_lambda_in_every_keras_format(files, suffix, tmp_path, capsys):
    from tfquant.cli import main

    out = tmp_path / "m.tflite"
    for argv in (["summary", str(files[suffix])], ["convert", str(files[suffix]), "-o", str(out)]):
        code = main(argv)
        err = capsys.readouterr().err
        _refused_cleanly(code, err, out, f"evil_{suffix}", "(Lambda)", "Python lambda")
        assert f"tfquant {argv[0]}: error: Refusing to load" in err, err
    assert not _ran(files, suffix)


def test_cli_refuses_a_saved_model_that_writes_files(files, tmp_path, capsys):
    from tfquant.cli import main

    out = tmp_path / "m.tflite"
    code = main(["convert", str(files["saved_model"]), "-o", str(out)])
    err = capsys.readouterr().err
    # The node is named after the Keras layer ("functional_1/writer_1/WriteFile").
    _refused_cleanly(code, err, out, "/writer", "/WriteFile' (op WriteFile)", "writes files")
    assert not _ran(files, "saved_model")
    # summary never runs a SavedModel: it holds no Keras layers to summarise.
    assert main(["summary", str(files["saved_model"])]) == 2
    assert "holds no Keras layers" in capsys.readouterr().err
    assert not _ran(files, "saved_model")


def test_unsafe_model_error_is_a_conversion_error(files):
    with pytest.raises(UnsafeModelError) as info:
        load_model(files["keras"])
    assert isinstance(info.value, ConversionError)
    [finding] = info.value.findings
    assert finding.where == "layer 'evil_keras' (Lambda)"
    assert "Python lambda" in finding.what


def test_nested_layers_are_named(files):
    with pytest.raises(UnsafeModelError) as info:
        load_model(files["nested"])
    where = [f.where for f in info.value.findings]
    assert where == [
        "layer 'per_step' (Lambda) inside 'td' (TimeDistributed)",
        "layer 'deep' (Lambda) inside 'inner' (Functional)",
    ]
    assert not _ran(files, "nested")


def test_keras_2_h5_lambda(files, tmp_path):
    # tf-keras 2.x writes a Lambda as [base64 marshalled code, defaults, closure] with
    # function_type "lambda" (legacy format); Keras 3 would rebuild it as __lambda__.
    path = tmp_path / "keras2.h5"
    with h5py.File(files["h5"], "r") as src, h5py.File(path, "w") as dst:
        config = json.loads(src.attrs["model_config"])
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        src.copy("model_weights", dst)
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Lambda":
            lam = layer["config"]["function"]["config"]
            layer["config"].update(
                function=[lam["code"], None, lam["closure"]], function_type="lambda"
            )
    with h5py.File(path, "a") as dst:
        dst.attrs["model_config"] = json.dumps(config)
    with pytest.raises(UnsafeModelError, match=r"'evil_h5' \(Lambda\).*Keras 2 format"):
        load_model(path)
    assert not _ran(files, "h5")


def test_hdf5_signature_after_a_user_block(files, tmp_path):
    path = tmp_path / "userblock.h5"
    with h5py.File(files["h5"], "r") as src, h5py.File(path, "w", userblock_size=512) as dst:
        dst.attrs["model_config"] = src.attrs["model_config"]
    assert path.read_bytes()[:8] != b"\x89HDF\r\n\x1a\n"
    assert [f.where for f in safety.scan(path)] == ["layer 'evil_h5' (Lambda)"]


def test_other_code_carrying_layers(tmp_path):
    def keras_file(name, layer):
        path = tmp_path / f"{name}.keras"
        config = {"class_name": "Sequential", "config": {"name": "s", "layers": [layer]}}
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("config.json", json.dumps(config))
        return path

    cases = {
        "tfsm": ({"class_name": "TFSMLayer", "config": {"name": "t", "filepath": "/x"}}, "/x"),
        "vocab": (
            {"class_name": "StringLookup", "config": {"name": "v", "vocabulary": "/etc/v.txt"}},
            "vocabulary file '/etc/v.txt'",
        ),
        "mask": (
            {
                "class_name": "Lambda",
                "config": {"name": "m", "function": "abs", "mask": {"class_name": "__lambda__"}},
            },
            "its mask is a Python lambda",
        ),
        # CVE-2025-9906: a Lambda whose function switches safe mode off for the layers that
        # follow. Refused whatever the Keras version.
        "bypass": (
            {
                "class_name": "Lambda",
                "config": {
                    "name": "off",
                    "function": {
                        "module": "keras.config",
                        "class_name": "function",
                        "config": "enable_unsafe_deserialization",
                        "registered_name": "function",
                    },
                },
            },
            "it calls keras.config.enable_unsafe_deserialization",
        ),
    }
    for name, (layer, needle) in cases.items():
        with pytest.raises(UnsafeModelError, match=HINT) as info:
            load_model(keras_file(name, layer))
        assert needle in str(info.value)


def test_keras_safe_mode_is_the_fallback(files, monkeypatch):
    # Were the scan to miss something, Keras' own refusal still becomes UnsafeModelError,
    # without its advice to pass safe_mode=False.
    monkeypatch.setattr(safety, "scan", lambda path: [])
    with pytest.raises(UnsafeModelError) as info:
        load_model(files["keras"])
    message = str(info.value)
    assert "Keras' safe mode refused it" in message and HINT in message
    assert "safe_mode" not in message.replace("safe mode", "")
    assert not _ran(files, "keras")


def test_refused_even_when_keras_safe_mode_is_off_globally(files):
    from keras.src.backend.common import global_state

    before = global_state.get_global_attribute("safe_mode_saving")
    keras.config.enable_unsafe_deserialization()  # Keras alone would now run the lambda
    try:
        with pytest.raises(UnsafeModelError):
            load_model(files["keras"])
    finally:
        global_state.set_global_attribute("safe_mode_saving", before)
    assert not _ran(files, "keras")


def test_saved_model_restore_ops_are_allowed_only_where_variables_are_restored(files):
    assert safety.scan(files["clean_saved_model"]) == []
    # The saver's restore function (run by the session loader in LCE's converter) does
    # hold RestoreV2: it is scanned, with the restore ops allowed there only.
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((files["clean_saved_model"] / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0]
    restore = [graph.saver_def.restore_op_name]
    found = list(safety._scan_graph(graph, restore, [], frozenset(), "test"))
    assert [f.where.split(" in function")[0] for f in found] == ["node 'RestoreV2' (op RestoreV2)"]
    # The WriteFile node is live: running the serving signature writes the marker.
    loaded = tf.saved_model.load(str(files["saved_model"]))
    loaded.signatures["serving_default"](tf.zeros((1, 4)))
    assert _ran(files, "saved_model")
    [finding] = safety.scan(files["saved_model"])
    assert re.fullmatch(
        r"node 'functional\w*/writer\w*/WriteFile' \(op WriteFile\) in function '__inference_\w+'",
        finding.where,
    ), finding.where


# ---------------------------------------------------------------------------------------------
# Files that are not what their name says


def test_files_that_are_not_models(tmp_path, capsys, monkeypatch):
    from tfquant.cli import main

    monkeypatch.chdir(tmp_path)  # the messages quote the path as given
    (tmp_path / "text.keras").write_text("hello")
    (tmp_path / "text.h5").write_text("hello")
    with zipfile.ZipFile(tmp_path / "empty.keras", "w") as z:
        z.writestr("model.weights.h5", b"")
    with zipfile.ZipFile(tmp_path / "badjson.keras", "w") as z:
        z.writestr("config.json", "{nope")
    cases = {
        "text.keras": "Received: 'text.keras', which is not a zip archive",
        "text.h5": "Received: 'text.h5', which does not start with the HDF5 signature",
        "empty.keras": "Received: 'empty.keras', a zip archive without config.json",
        "badjson.keras": "whose config.json is not valid JSON",
    }
    for name, needle in cases.items():
        for argv in (["summary", name], ["convert", name, "-o", "m.tflite"]):
            code = main(argv)
            err = capsys.readouterr().err
            assert code == 2 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "m.tflite").exists()


def test_non_regular_files_are_refused_before_opening(tmp_path):
    fifo = tmp_path / "m.keras"
    os.mkfifo(fifo)
    with pytest.raises(ConversionError, match=r"Expected the model to be a regular file .* a FIFO"):
        load_model(fifo)  # opening it would block forever
    with pytest.raises(ConversionError, match="a character device"):
        load_model("/dev/zero")


# ---------------------------------------------------------------------------------------------
# End to end, as a user runs it


def test_cli_end_to_end(files, tmp_path):
    out = tmp_path / "m.tflite"
    proc = tfquant_cli("summary", files["h5"], timeout=120)
    _refused_cleanly(proc.returncode, proc.stderr, out, "'evil_h5' (Lambda)")
    proc = tfquant_cli("convert", files["hdf5"], "-o", out, timeout=120)
    _refused_cleanly(proc.returncode, proc.stderr, out, "'evil_hdf5' (Lambda)")
    proc = tfquant_cli("convert", files["saved_model"], "-o", out, timeout=120)
    _refused_cleanly(proc.returncode, proc.stderr, out, "/WriteFile' (op WriteFile)")
    fifo = tmp_path / "pipe.keras"
    os.mkfifo(fifo)
    proc = tfquant_cli("summary", fifo, timeout=60)  # must not block on the FIFO
    assert proc.returncode == 2 and "FIFO" in proc.stderr, proc.stderr
    assert not any(_ran(files, name) for name in ("h5", "hdf5", "saved_model"))


def test_unsafe_runs_the_code(files):
    # The marker check above can fail: with --unsafe the lambda runs (and writes it).
    proc = tfquant_cli("summary", files["keras"], "--unsafe", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "evil_keras" in proc.stdout
    assert _ran(files, "keras")
