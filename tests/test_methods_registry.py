"""The method registry (tfquant.methods): every method is one object that tfquant.train, the
CLI and the zoo read without naming it, and a method user code registers trains through
`tfquant train`, finalizes and converts like a built-in one."""

import ast
import json
import pathlib

import numpy as np
import pytest

from tfquant import methods, zoo
from tfquant.errors import ConfigError
from tfquant.methods import Method, Option

ROOT = pathlib.Path(__file__).resolve().parent.parent / "tfquant"
# the modules that must read every method from the registry, never by its name
READERS = [
    *sorted((ROOT / "train").glob("*.py")),
    *sorted((ROOT / "zoo").glob("*.py")),
    *sorted((ROOT / "cli").glob("*.py")),
]


def _string_literals(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    return {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def test_train_cli_and_zoo_name_no_method():
    assert len(methods.names()) >= 8
    for module in ("cli/train.py", "train/job.py", "train/config.py", "zoo/builder.py"):
        assert ROOT / module in READERS
    for path in READERS:
        named = sorted(_string_literals(path) & set(methods.names()))
        assert not named, f"{path.relative_to(ROOT.parent)} names methods {named}"


def test_every_method_declares_what_train_reads():
    for name in methods.names():
        method = methods.get(name)
        assert method.name == name and method.summary
        options = method.resolve()
        assert set(options) == {o.name for o in method.options}
        inp, kernel = zoo.quantizers_for(name, **options)
        assert (inp is None) == (kernel is None)
        assert method.quantizers("first") == (None, None)  # first and last stay float
        assert method.learning_rate > 0
    with pytest.raises(ConfigError, match="Unknown method 'nope'"):
        methods.get("nope")
    with pytest.raises(ConfigError, match="already registered"):
        methods.register(methods.get("ste"))
    with pytest.raises(ConfigError, match="Expected bits an integer in 1..8. Received: bits=9"):
        methods.get("cpq").resolve({"bits": 9})
    assert Option("x", float, 0.5, min=0, max=1, open_interval=True).check(0.5) == 0.5
    with pytest.raises(ConfigError, match=r"Expected x a finite number in \(0, 1\)"):
        Option("x", float, 0.5, min=0, max=1, open_interval=True).check(1.0)


def test_cli_flags_come_from_the_registry():
    from tfquant.cli import build_parser

    class Wide(Method):
        name = "test-wide"
        summary = "a test method with an option of its own"
        options = (Option("bits", int, 5, "bits", min=1, max=8),)

        def quantizers(self, role="hidden", **options):
            return (None, None) if role != "hidden" else ("ste_sign", "ste_sign")

    methods.register(Wide())
    try:
        parser = build_parser()
        text = parser._subparsers._group_actions[0].choices["train"].format_help()
        text = " ".join(text.split()).replace("- ", "-")  # unwrapped
        assert "test-wide: a test method with an option of its own" in text
        assert "cpq, dorefa, test-wide: bits" in text
        args = parser.parse_args(["train", "--method", "test-wide", "--bits", "6"])
        assert (args.method, args.bits) == ("test-wide", 6)
    finally:
        methods.unregister("test-wide")
    assert "test-wide" not in methods.names()


class _ScaledSTE(Method):
    """STE with scaled-sign kernels (a per-channel magnitude): a user's method."""

    name = "test-scaled-ste"
    summary = "STE with scaled-sign kernels"

    def quantizers(self, role="hidden", **options):
        if role != "hidden":
            return super().quantizers(role)
        return "ste_sign", "scaled_sign"


def test_a_registered_method_trains_finalizes_and_converts(tmp_path, capsys):
    from tfquant.cli import main

    methods.register(_ScaledSTE())
    out = tmp_path / "run"
    try:
        argv = ["train", "--dataset", "digits", "--limit", "256", "--epochs", "1"]
        argv += ["--model", "binary_cnn", "--method", "test-scaled-ste", "--out", str(out), "-q"]
        assert main(argv) == 0, capsys.readouterr().err[-2000:]
    finally:
        methods.unregister("test-scaled-ste")
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["method"] == "test-scaled-ste"
    assert (out / "model.tflite").stat().st_size > 0
    assert "LceBconv2d" in report["conversion"]["ops"]  # binary convs on device
    assert abs(report["test_accuracy_tflite"] - report["test_accuracy_keras_same_samples"]) < 0.05
    from tfquant._keras import keras

    model = keras.models.load_model(out / "model.keras")  # finalized: exact kernels
    kernel = (
        model.get_layer("s0_conv1")
        .kernel.numpy()
        .reshape(-1, model.get_layer("s0_conv1").kernel.shape[-1])
    )
    assert all(len(np.unique(np.abs(kernel[:, c]))) == 1 for c in range(kernel.shape[1]))
