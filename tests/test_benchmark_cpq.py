"""benchmarks/cpq.py runs end to end on a slice of Fashion-MNIST, and refuses bad arguments."""

import importlib.util
import json
import pathlib

import pytest
from helpers import run_benchmark

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "cpq.py"
QUANT_LAYERS = ("s0_conv0", "s0_conv1", "s1_conv0", "s1_conv1")
SMOKE_VARIANTS = ("float", "cpq3", "cpq_learned", "cpq_fixed")


def run_script(*args, timeout: float = 1200):
    return run_benchmark("cpq.py", *args, timeout=timeout)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_cpq", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpq_benchmark_smoke_run(tmp_path):
    out, png = tmp_path / "cpq.json", tmp_path / "cpq.png"
    proc = run_script(
        "--smoke", "--seeds", "0", "--variants", ",".join(SMOKE_VARIANTS), "--out", out,
        "--png", png,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert json.loads(proc.stdout) == result
    assert result["train_images"] == 256 and result["test_images"] == 128
    for variant in SMOKE_VARIANTS:
        assert f"seed 0 {variant}:" in proc.stderr
        r = result["results"][variant]
        assert len(r["test_accuracy_per_seed"]) == 1 and 0.0 <= r["test_accuracy"] <= 1.0
        assert r["train_seconds_per_seed"][0] > 0 and r["ms_per_step_per_seed"][0] > 0
    learned = result["results"]["cpq_learned"]
    bits = learned["learned_bits_per_seed"][0]
    assert sorted(bits) == sorted(QUANT_LAYERS) and all(1 <= b <= 4 for b in bits.values())
    assert all(g[-1] == pytest.approx(-2.37) for g in learned["gates_start_per_seed"][0].values())
    # the fixed variant trains exactly the learned layer's widths
    fixed = result["results"]["cpq_fixed"]
    assert fixed["fixed_bits_per_seed"][0] == bits
    assert {r["layer"]: r["weight_bits"] for r in fixed["layer_bits_per_seed"][0]} == bits
    assert {r["layer"]: r["weight_bits"] for r in learned["layer_bits_per_seed"][0]} == bits
    assert all(r["input_bits"] == 3 for r in result["results"]["cpq3"]["layer_bits_per_seed"][0])
    for pair in ("cpq3_minus_float_points", "cpq_learned_minus_cpq_fixed_points"):
        assert result["paired"][pair]["seeds"] == 1 and result["paired"][pair]["ci95"] is None
    targets = result["targets"]
    assert set(targets) == {"cpq3_within_1pt_of_float", "learned_beats_fixed"}  # others not run
    assert targets["cpq3_within_1pt_of_float"]["verdict"] in ("met", "missed")
    assert targets["learned_beats_fixed"]["verdict"] in ("met", "missed", "tie")
    timing = result["step_time_memory"]
    assert "errors" not in timing, timing.get("errors")
    assert [(r["method"], r["bits"]) for r in timing["rows"]] == [
        ("pair", 2), ("cpq", 2), ("dorefa", 2),
    ]  # fmt: skip
    assert timing["rows"][0]["rounds"] == 7  # the smoke run's --timing-steps
    row = timing["by_bits"]["2"]
    for key in ("cpq_ms_per_step", "dorefa_ms_per_step", "cpq_peak_rss_mib", "dorefa_peak_rss_mib"):
        assert row[key] > 0
    q1, q3 = row["step_time_ratio_quartiles"]
    assert 0 < q1 <= row["step_time_ratio_cpq_over_dorefa"] <= q3
    assert row["step_time_target"]["verdict"] in ("met", "missed")
    assert row["peak_rss_target"]["at_most"] == 1.2
    conversion = result["conversion"]
    assert "error" not in conversion, conversion.get("error")
    assert set(QUANT_LAYERS) <= set(conversion["layers"])
    for name in QUANT_LAYERS:
        assert conversion["layers"][name]["became"] in ("int8", "float", "binary")
    assert conversion["ops"] and conversion["tflite_bytes_cpq3"] > 0
    assert 0 < conversion["size_ratio_cpq3_over_float"] < 1.5
    agreement = conversion["targets"]["tflite_keras_argmax_agreement"]
    assert 0 <= agreement["measured"] <= 1 and agreement["verdict"] in ("met", "missed")
    assert png.stat().st_size > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "--epochs >= 1"),
        (["--seeds", "x"], "--seeds"),
        (["--seeds", "1,1"], "distinct --seeds"),
        (["--variants", "cpq3,nope"], "--variants among"),
        (["--variants", "float,cpq_fixed"], "cpq_fixed with cpq_learned"),
        (["--bit-penalty", "-1"], "--bit-penalty >= 0"),
        (["--train", "-5"], "--train >= 0"),
        (["--timing-steps", "3"], "--timing-steps 0 or > 5"),
        (["--timing-bits", "2,9"], "--timing-bits"),
    ],
)
def test_cpq_benchmark_rejects_bad_arguments(bench, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(args)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


def test_cpq_benchmark_defaults_and_smoke_sizes(bench):
    args = bench.parse_args([])
    assert args.variants == list(bench.VARIANTS) and args.seeds == [0, 1, 2]
    # the study's budget: the whole training and test sets, 3 epochs
    assert (args.train, args.test, args.epochs, args.batch_size) == (0, 0, 3, 128)
    assert args.timing_bits == [2, 3, 4]
    smoke = bench.parse_args(["--smoke", "--variants", "cpq_fixed,cpq_learned"])
    assert (smoke.train, smoke.test, smoke.epochs, smoke.timing_bits) == (256, 128, 1, [2])
    assert smoke.variants == ["cpq_learned", "cpq_fixed"]  # learned runs first


def test_bad_arguments_exit_2_from_the_command_line():
    proc = run_script("--variants", "nope", timeout=120)
    assert proc.returncode == 2 and "--variants among" in proc.stderr and proc.stdout == ""
