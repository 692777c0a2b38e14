"""benchmarks/tsq.py runs end to end on a slice of Fashion-MNIST, and refuses bad arguments."""

import json

import pytest
from helpers import run_benchmark

VARIANTS = ("float", "tsq", "tsq_no_step2", "tsq_threshold0", "joint")
TERNARY_LAYERS = ("s0_conv0", "s0_conv1", "s1_conv0", "s1_conv1")


def run_script(*args, timeout: float = 600):
    return run_benchmark("tsq.py", *args, timeout=timeout)


def test_tsq_benchmark_smoke_run(tmp_path):
    out, png = tmp_path / "tsq.json", tmp_path / "tsq.png"
    proc = run_script(
        "--seeds", "0", "--epochs", "2", "--finetune-epochs", "1", "--subset", "256",
        "--test-subset", "128", "--step2-inputs", "64", "--step2-samples", "300",
        "--step2-iterations", "3", "--out", out, "--png", png,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert json.loads(proc.stdout) == result
    for variant in VARIANTS:
        assert f"seed 0 {variant}:" in proc.stderr
        accuracy = result["results"][variant]["test_accuracy_per_seed"]
        assert len(accuracy) == 1 and 0.0 <= accuracy[0] <= 1.0
        assert result["results"][variant]["train_seconds_per_seed"][0] > 0
    layers = result["results"]["tsq"]["step2_layers_per_seed"][0]
    assert [r["name"] for r in layers] == list(TERNARY_LAYERS)
    assert all(r["error_after"] <= r["error_before"] + 1e-9 for r in layers)
    assert result["results"]["tsq_no_step2"]["step2_layers_per_seed"] == [[]]
    for other in ("float", "joint", "tsq_no_step2", "tsq_threshold0"):
        gain = result["paired"][f"tsq_minus_{other}_points"]
        assert gain["seeds"] == 1 and gain["ci95"] is None
    targets = result["targets"]
    assert targets["tsq_within_1pt_of_float"]["verdict"] in ("met", "missed")
    assert targets["tsq_at_least_joint"]["verdict"] in ("met", "missed", "tie")
    assert "one seed" in targets["tsq_within_1pt_of_float"]["note"]
    conversion = result["conversion"]
    for name in TERNARY_LAYERS:
        assert conversion["layers"][name]["became"] == "int8"
    assert conversion["ternary_layers_int8"] is True
    assert 0 < conversion["size_ratio_tsq_over_float"] < 1
    for target in conversion["targets"].values():
        assert target["verdict"] in ("met", "missed")
    assert png.stat().st_size > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "3", "--finetune-epochs", "3"], "--finetune-epochs"),
        (["--epochs", "1"], "--epochs >= 2"),
        (["--seeds", "x"], "--seeds"),
        (["--methods", "tsq,nope"], "--methods"),
        (["--step2-samples", "0"], "--step2-samples"),
    ],
)
def test_tsq_benchmark_rejects_bad_arguments(args, message):
    proc = run_script(*args, "--no-convert", timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""
