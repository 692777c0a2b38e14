"""benchmarks/arm64_emulated.py: stock-TFLite exports give the same outputs on arm64
(qemu-user emulation, TFLite's ARM kernels) as on x86-64.

It builds an arm64 Python into ``$TFQUANT_ARM64_ROOT`` (default ``~/.cache/tfquant/arm64``)
on first use, from apt and PyPI (root for apt). In CI, because it stays well under the
3 minutes allowed for it: 53 s from nothing, 29 s warm (2 cores; benchmarks/README.md).
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "arm64_emulated.py"
INT8_MODELS = ("tsq", "dorefa")


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("needs an x86-64 Linux host")
    if not shutil.which("qemu-aarch64-static") and os.geteuid() != 0:
        pytest.skip("qemu-aarch64-static missing and not root to install it")
    out = tmp_path_factory.mktemp("arm64") / "result.json"
    cmd = [sys.executable, str(SCRIPT), "--out", str(out)]
    if os.environ.get("TFQUANT_ARM64_ROOT"):
        cmd += ["--root", os.environ["TFQUANT_ARM64_ROOT"]]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    # 0: the deployed interpreter's comparisons passed (the builtin kernels' are reported
    # in the JSON and checked below); 1: some failed; else no result.
    assert proc.returncode == 0 and out.exists(), proc.stderr[-3000:]
    return json.loads(out.read_text())


def _by_cpu(result: dict, model: str, config: str) -> dict:
    arm = result["models"][model]["arm"]
    assert arm, "no emulated CPU ran"
    return {cpu: by_config[config] for cpu, by_config in arm.items()}


def test_runs_on_emulated_aarch64(result):
    assert result["emulated_python"]["machine"] == "aarch64"
    assert "not" in result["note"] and "speed" in result["note"]
    cpus = [k for k in result["runs"] if k != "x86_64"]
    assert cpus and all(result["runs"][c]["machine"] == "aarch64" for c in cpus)
    assert result["runs"]["x86_64"]["machine"] == "x86_64"


def test_float_twin_matches_within_tolerance(result):
    model = result["models"]["float"]
    assert model["pass"], model
    assert model["max_abs_diff"] <= result["tolerance"]
    assert not model["lce_ops"]


@pytest.mark.parametrize("name", INT8_MODELS)
def test_int8_export_has_int8_convolutions_and_no_lce_ops(result, name):
    model = result["models"][name]
    assert not model["lce_ops"], model["ops"]
    assert not any(op.startswith("Lce") for op in model["ops"]), model["ops"]
    assert model["int8_conv2d"] >= 1, model["compute_ops"]
    assert any(c.startswith("CONV_2D int8xint8") for c in model["compute_ops"])
    assert model["failures"] == []


@pytest.mark.parametrize("name", INT8_MODELS)
def test_int8_export_matches_in_the_deployed_interpreter(result, name):
    """The interpreter as deployed (XNNPACK delegate): same outputs on ARM and x86."""
    for cpu, check in _by_cpu(result, name, "default").items():
        assert check["pass"], (cpu, check)
        assert check["max_abs_diff"] <= result["tolerance"], (cpu, check)


@pytest.mark.xfail(
    strict=True,
    reason="TFLite's builtin int8 CONV_2D requantizes values just below a half step "
    "differently on x86-64 (rounds up) and on ARM (rounds to the nearest): 1-step "
    "differences that later layers grow (benchmarks/README.md, arm64_emulated)",
)
@pytest.mark.parametrize("name", INT8_MODELS)
def test_int8_tensors_bit_exact_with_builtin_kernels(result, name):
    for cpu, check in _by_cpu(result, name, "builtin").items():
        assert check["int8_tensors_compared"] > 0
        assert check["int8_tensors_equal"], (cpu, check.get("divergence_origins"))
