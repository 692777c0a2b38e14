"""What a user's first run shows and leaves: ``tfquant train``, ``convert``, ``summary`` and
``bench`` on a tiny run raise no warning the user did not cause, and ``tfquant train``'s
``model.keras`` is the deployable model, without the optimizer's state.

The commands run in-process (``tfquant.cli.main``), so Python's warnings are recorded as
they are raised; ``bench``'s interpreter runs in a child process, whose stderr is read.
"""

from __future__ import annotations

import io
import json
import os
import re
import warnings
import zipfile

import h5py
import numpy as np
import pytest

import tfquant
import tfquant.cli
from tfquant import datasets
from tfquant._keras import keras
from tfquant.models import deployable, finalize, save_deployable

_PACKAGES = (os.path.dirname(tfquant.__file__), os.path.dirname(keras.__file__))
# A warning that reaches a user's terminal: Python's `Warning:` lines, absl's `WARNING:`.
_WARNING_LINE = re.compile(r"Warning\b|^WARNING:", re.MULTILINE)


def _ours(w: warnings.WarningMessage) -> bool:
    """A warning tfquant's own calls cause: raised in tfquant or in Keras (which tfquant
    drives), or any warning but a deprecation notice from deeper in the stack."""
    where = os.path.abspath(w.filename)
    if where.startswith(_PACKAGES):
        return True
    return not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))


def _run(argv: list[str], capfd) -> tuple[str, str]:
    """Run ``tfquant argv`` in-process with every warning recorded; fail on tfquant's."""
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status = tfquant.cli.main([str(a) for a in argv])
    out, err = capfd.readouterr()
    assert status == 0, err
    ours = [f"{w.category.__name__} at {w.filename}:{w.lineno}: {w.message}" for w in caught]
    ours = [line for line, w in zip(ours, caught) if _ours(w)]
    assert ours == [], f"tfquant {argv[0]} warned:\n" + "\n".join(ours)
    assert not _WARNING_LINE.search(err), f"tfquant {argv[0]} printed a warning:\n{err}"
    return out, err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny ``tfquant train`` (the main job's network and method on 256 digits)."""
    out = tmp_path_factory.mktemp("first") / "run"
    argv = ["train", "--dataset", "digits", "--epochs", "1", "--limit", "256", "--out", out]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status = tfquant.cli.main([str(a) for a in argv])
    assert status == 0
    return out, [w for w in caught if _ours(w)]


def test_train_warns_nothing(run):
    out, caught = run
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []
    assert (out / "model.tflite").exists()


def test_convert_summary_bench_warn_nothing(run, tmp_path, capfd):
    out, _ = run
    flatbuffer = tmp_path / "m.tflite"
    _run(["convert", out / "model.keras", "-o", flatbuffer], capfd)
    stdout, _ = _run(["summary", out / "model.keras"], capfd)
    assert "compression" in stdout
    stdout, _ = _run(["bench", flatbuffer, "--threads", "1", "--runs", "3"], capfd)
    assert "| model | 1 |" in stdout


def _archive(path) -> tuple[dict, list[str]]:
    """A ``.keras`` file's config and the names of the variables it stores."""
    with zipfile.ZipFile(path) as z:
        config = json.loads(z.read("config.json"))
        weights = h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")
    names: list[str] = []
    weights.visititems(
        lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None
    )
    return config, names


def test_train_saves_the_deployable_model(run):
    out, _ = run
    config, names = _archive(out / "model.keras")
    assert not config.get("compile_config")  # {} when never compiled
    assert names and not [n for n in names if n.startswith("optimizer")]
    # it loads and predicts what the run measured on its test images
    model = keras.models.load_model(out / "model.keras")
    report = json.loads((out / "report.json").read_text())
    _, (xte, yte) = datasets.load("digits")
    xte, yte = xte[: report["test_samples"]], yte[: report["test_samples"]]
    predicted = model.predict(xte, batch_size=512, verbose=0).argmax(-1)
    assert float(np.mean(predicted == yte)) == pytest.approx(report["test_accuracy"], abs=1e-9)
    # the checkpoints keep the training state (the optimizer's variables) for --resume
    (weights,) = [p for p in os.listdir(out / "checkpoints") if p.endswith(".weights.h5")]
    with h5py.File(out / "checkpoints" / weights, "r") as f:
        assert "optimizer" in f


def test_save_deployable_drops_the_optimizer_and_keeps_the_outputs(tmp_path):
    model = tfquant.zoo.build("bireal_cnn", method="md-tanh-s", input_shape=(8, 8, 1))
    model.compile(optimizer=tfquant.MirrorDescent(), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype("float32")
    model.fit(x, np.arange(32) % 10, epochs=1, batch_size=16, verbose=0)
    finalize(model, x)
    model.save(tmp_path / "full.keras")
    save_deployable(model, tmp_path / "model.keras")

    config, names = _archive(tmp_path / "model.keras")
    assert not config.get("compile_config")  # {} when never compiled
    assert not [n for n in names if n.startswith("optimizer")]
    _, full_names = _archive(tmp_path / "full.keras")
    assert [n for n in full_names if n.startswith("optimizer")]  # what model.save keeps
    assert os.path.getsize(tmp_path / "model.keras") < os.path.getsize(tmp_path / "full.keras") / 2

    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert model.optimizer is not None  # the model itself keeps its training state


def test_deployable_of_an_uncompiled_model_is_the_model():
    model = tfquant.zoo.build("binary_cnn", method="ste", input_shape=(8, 8, 1))
    assert deployable(model) is model
