"""The examples run end to end on a slice of real data, so they never rot."""

import importlib.util
import pathlib

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


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
