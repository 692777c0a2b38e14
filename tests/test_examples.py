"""The examples run end to end on a slice of real data, so they never rot."""

import importlib.util
import pathlib
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))  # the examples import their helper module _common


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_trains_converts_and_matches(tmp_path):
    report = _load("quickstart").main(["--out", str(tmp_path), "--epochs", "1", "--limit", "400"])
    assert report["ops"]["LceBconv2d"] == 2
    assert report["max_abs_diff_keras_tflite"] < 1e-4
    assert (tmp_path / "model.tflite").stat().st_size == report["tflite_bytes"]
    assert (tmp_path / "model.keras").exists()


@pytest.mark.parametrize("name", ["mirror_descent", "binary_relax", "ste"])
def test_method_examples_run_on_a_slice(name, tmp_path):
    result = _load(name).main(
        ["--dataset", "digits", "--limit", "256", "--epochs", "2", "--out", str(tmp_path)]
    )
    assert result["ops"]["LceBconv2d"] == 6
    assert (tmp_path / "model.tflite").stat().st_size > 0
