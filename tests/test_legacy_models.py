"""``.keras`` files saved by the release before the quantizer contract (commit 749736d) load
with this code and predict the same.

The files are made once per session by ``tests/make_legacy_models.py`` run against that
release's ``tfquant/`` (extracted with ``git archive``), in a temporary directory; nothing
generated is committed. Without git history (a source archive) the test is skipped.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tfquant.converters import load_model

RELEASE = "749736d"
ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def legacy_models(tmp_path_factory) -> pathlib.Path:
    """The directory of the release's saved models and their predictions."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the repository's git history to extract the release")
    base = tmp_path_factory.mktemp("legacy")
    old = base / "tree"
    old.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", RELEASE, "tfquant"], capture_output=True, check=False
    )
    if archive.returncode:
        pytest.skip(f"git archive {RELEASE} failed: {archive.stderr.decode()[:200]}")
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    out = base / "models"
    env = {**os.environ, "PYTHONPATH": str(old)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "make_legacy_models.py"), str(out)],
        env=env,
        cwd=str(base),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert str(old) in done.stdout  # the release's tfquant saved them, not this one
    return out


def test_release_files_load_and_predict_the_same(legacy_models):
    saved = np.load(legacy_models / "predictions.npz")
    names = sorted(k for k in saved.files if k != "x")
    assert names == ["binary", "relaxed", "ternary_dorefa", "tsq_cpq"]
    for name in names:
        model = load_model(legacy_models / f"{name}.keras")
        got = np.asarray(model(saved["x"], training=False))
        np.testing.assert_allclose(got, saved[name], rtol=0, atol=1e-6, err_msg=name)


def test_release_quantizers_declare_their_grids(legacy_models):
    """Every quantizer in the release's files declares a grid once loaded."""
    from tfquant.models import quantized_layers

    seen = set()
    for path in sorted(legacy_models.glob("*.keras")):
        for layer in quantized_layers(load_model(path)):
            for q in (layer.input_quantizer, layer.kernel_quantizer):
                assert q.grid is not None and q.levels == q.grid.values, (path.name, q)
                seen.add(type(q).__name__)
    assert len(seen) == 8, seen
