"""`tfquant train` as a user runs it, on a slice of real data, for each method."""

import json
import re

import numpy as np
import pytest
from helpers import tfquant_cli as _tfquant

from tfquant import datasets
from tfquant.train import METHODS

LIMIT = 256
# Options a method is run with here: cpq learns its widths (the longest path through it);
# tsq trains binary_cnn, its paper's shape (no float shortcuts), on which its codes pass
# between the int8 convs exactly (README, "Two-Step Quantization").
EXTRA = {
    "cpq": ["--bits", "3", "--learn-bits"],
    "dorefa": ["--bits", "2"],
    "tsq": ["--model", "binary_cnn"],
}


@pytest.mark.parametrize("method", METHODS)
def test_train_each_method_end_to_end(tmp_path, method):
    from tfquant._keras import keras

    out = tmp_path / "run"
    proc = _tfquant(
        "train",
        "--dataset",
        "digits",
        "--limit",
        str(LIMIT),
        "--epochs",
        "2",
        "--method",
        method,
        "--out",
        str(out),
        "-q",
        *EXTRA.get(method, []),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("model.keras", "model.tflite", "report.json", "report.md", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["method"] == method
    became = [layer["became"] for layer in report["conversion"]["layers"]]
    if method == "tsq":  # ternary kernels on 2-bit codes: int8 kernels, no binary ones
        assert became == ["int8"] * 4 and "LceBconv2d" not in report["conversion"]["ops"]
        # the codes pass exactly between the ternary convs; the last feeds the float head
        assert [layer["exact"] for layer in report["conversion"]["layers"]] == [True] * 3 + [False]
        steps = report["tsq"]
        assert (steps["code_epochs"], steps["finetune_epochs"]) == (1, 1)
        names = [layer["name"] for layer in report["conversion"]["layers"]]
        assert [x["name"] for x in steps["layers"]] == names
        assert all(x["error_after"] <= x["error_before"] for x in steps["layers"])
        assert "Step 2's relative response reconstruction error" in (out / "report.md").read_text()
    elif method in ("cpq", "dorefa"):  # k-bit weights on k-bit codes: int8 kernels
        assert became == ["int8"] * 6 and "LceBconv2d" not in report["conversion"]["ops"]
        bits = report["layer_bits"]
        assert [x["layer"] for x in bits] == [x["name"] for x in report["conversion"]["layers"]]
        if method == "cpq":
            assert all(1 <= x["weight_bits"] <= 3 and x["input_bits"] == 3 for x in bits)
            assert all(x["weight_alpha"] > 0 and x["input_alpha"] > 0 for x in bits)
            assert "## Bits per layer (learned)" in (out / "report.md").read_text()
        else:
            assert all(x["weight_bits"] == x["input_bits"] == 2 for x in bits)
    elif method == "float":  # the reference: no quantizer anywhere
        assert set(became) == {"float"} and "LceBconv2d" not in report["conversion"]["ops"]
        assert report["size"]["compression"] == pytest.approx(1.0)
    else:
        assert report["conversion"]["ops"]["LceBconv2d"] == 6  # every binary conv is binary
        assert became == ["binary"] * 6
    assert report["tflite_bytes"] == (out / "model.tflite").stat().st_size
    # The report's accuracy is the saved (finalized) model's.
    (_, _), (xte, yte) = datasets.load_digits()
    xte, yte = xte[: LIMIT // 4], yte[: LIMIT // 4]
    model = keras.models.load_model(out / "model.keras")
    acc = float(np.mean(np.argmax(model.predict(xte, verbose=0), -1) == yte))
    assert acc == pytest.approx(report["test_accuracy"], abs=1e-9)
    # The per-epoch hard curve ends at the same network (same finalize, same BatchNorm data;
    # evaluate and predict batch differently, so allow one borderline sample).
    hard = report["history"]["hard_val_accuracy"]
    assert len(hard) == 2
    assert hard[-1] == pytest.approx(report["test_accuracy"], abs=1.01 / len(yte))
    assert report["test_accuracy_tflite"] == pytest.approx(
        report["test_accuracy_keras_same_samples"], abs=0.05
    )
    model_name = "binary_cnn" if method == "tsq" else "bireal_cnn"
    assert f"tfquant train: {model_name} on digits" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    "field, expected",
    [
        ({"dataset": "imagenet"}, "Unknown dataset 'imagenet'"),
        ({"model": "resnet"}, "Unknown model 'resnet'"),
        ({"method": "sgd"}, "Unknown method 'sgd'"),
        ({"epochs": 0}, "Received: epochs=0"),
        ({"epochs": True}, "Received: epochs=True"),
        ({"learning_rate": float("inf")}, "finite number > 0"),
        ({"seed": -1}, "Received: seed=-1"),
        ({"limit": 4}, "Received: limit=4"),
        ({"finetune_epochs": 1}, "only with method 'tsq'"),
        ({"method": "tsq", "epochs": 2, "finetune_epochs": 2}, "in 0..epochs-1 = 1"),
        ({"bits": 3}, "Expected bits only with method cpq or dorefa"),
        ({"method": "cpq", "bits": 9}, "Expected bits an integer in 1..8. Received: bits=9"),
        ({"method": "dorefa", "bits": 0}, "Received: bits=0"),
        ({"method": "dorefa", "learn_bits": True}, "learn_bits only with method 'cpq'"),
        ({"method": "cpq", "dropbits": "C"}, "Expected dropbits in ('A', 'B', 'none')"),
        ({"dropbits": "B"}, "dropbits only with method 'cpq'"),
        ({"method": "cpq", "learn_bits": True, "dropbits": "none"}, "with learn_bits"),
    ],
)
def test_bad_config_is_refused_before_any_work(tmp_path, field, expected):
    # The command line refuses these in its parser (tests/test_hardening.py); the library
    # entry point checks the same.
    from tfquant.train import TrainConfig, run

    config = TrainConfig(**{"dataset": "digits", "out": str(tmp_path / "o"), **field})
    with pytest.raises(ValueError, match=re.escape(expected)):
        run(config)
    assert not (tmp_path / "o").exists()


def test_refuses_a_previous_run_and_keeps_the_users_files(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.keras").write_text("my model")
    (out / "notes.txt").write_text("mine")
    proc = _tfquant(
        "train", "--dataset", "digits", "--limit", "64", "--epochs", "1", "--out", str(out)
    )
    assert proc.returncode == 2
    assert "holds a previous run (model.keras)" in proc.stderr and "--overwrite" in proc.stderr
    assert (out / "model.keras").read_text() == "my model"
    proc = _tfquant(
        "train",
        "--dataset",
        "digits",
        "--limit",
        "64",
        "--epochs",
        "1",
        "--out",
        str(out),
        "--overwrite",
        "--no-convert",
        "-q",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "notes.txt").read_text() == "mine"  # only tfquant's artifacts are replaced
    assert (out / "model.keras").read_bytes()[:2] == b"PK"  # a real .keras zip now


def _png_tree(root, sizes=((16, 16),) * 3, per_class=12):
    """Three classes of PNG images whose brightness says the class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, size in enumerate(sizes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(60 + 70 * c, 10, (*size, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


def test_train_on_an_image_folder(tmp_path):
    data = _png_tree(tmp_path / "images")
    out = tmp_path / "run"
    proc = _tfquant(
        "train", "--data-dir", data, "--image-size", "16,16", "--augment",
        "--validation-split", "0.25", "--model", "binary_cnn", "--method", "ste",
        "--epochs", "2", "--batch-size", "8", "--out", out, "-q",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["data_dir"] == str(data) and report["test_samples"] == 9
    assert report["conversion"]["ops"]["LceBconv2d"] == 4
    assert report["test_accuracy"] > 0.5  # three brightness classes: easy even in 2 epochs
    assert f"binary_cnn on {data}" in (out / "report.md").read_text()

    mixed = _png_tree(tmp_path / "mixed", sizes=((16, 16), (16, 16), (20, 16)), per_class=3)
    proc = _tfquant("train", "--data-dir", mixed, "--out", tmp_path / "o2", "-q")
    assert proc.returncode == 2 and "--image-size" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "o2").exists()  # nothing left behind
    (tmp_path / "one" / "only").mkdir(parents=True)
    proc = _tfquant("train", "--data-dir", tmp_path / "one", "--out", tmp_path / "o3", "-q")
    assert proc.returncode == 2 and "error:" in proc.stderr and not (tmp_path / "o3").exists()
    proc = _tfquant("train", "--augment", "--out", tmp_path / "o4", "-q")
    assert proc.returncode == 2 and "only with data_dir" in proc.stderr


def test_only_tfquant_errors_are_reported_as_bad_input(tmp_path, capsys):
    """`tfquant train` reports tfquant's refusals as bad input (exit 2) by their type,
    TfquantError, which names what was expected and received; any other exception (a bug,
    e.g. a ValueError raised inside TensorFlow or Keras while training) keeps its traceback,
    as test_cli.py's test of the dispatcher checks for every subcommand."""
    from tfquant.cli import main
    from tfquant.errors import TfquantError
    from tfquant.train import TrainConfig, check_config

    with pytest.raises(TfquantError):
        check_config(TrainConfig(epochs=0))
    with pytest.raises(ValueError) as theirs:
        json.loads("{")  # raised inside the json module: not one of tfquant's refusals
    assert not isinstance(theirs.value, TfquantError)
    out = tmp_path / "o"
    assert main(["train", "--augment", "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfquant train: error: Expected image_size and augment only with")
    assert "Traceback" not in err and not out.exists()
