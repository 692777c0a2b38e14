"""The statistics the benchmarks judge their targets by, against scipy's."""

import pathlib
import sys

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

import common  # noqa: E402


@pytest.mark.parametrize("n", [2, 3, 5, 10, 31, 40])
def test_paired_gain_interval_matches_scipy(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(0.82, 0.01, n), rng.normal(0.815, 0.01, n)
    gain = common.paired_gain(a, b)
    diff = a - b
    half = stats.t.ppf(0.975, n - 1) * stats.sem(diff) if n <= 31 else 1.96 * stats.sem(diff)
    assert gain["mean"] == pytest.approx(diff.mean())
    assert gain["ci95"] == pytest.approx([diff.mean() - half, diff.mean() + half], abs=2e-5)
    assert gain["per_seed"] == pytest.approx(list(diff))
    assert gain["ahead_on_seeds"] == int((diff > 0).sum())
    assert gain["seeds"] == n


def test_paired_gain_one_seed_has_no_interval():
    gain = common.paired_gain([0.85], [0.84])
    assert gain["ci95"] is None
    assert gain["mean"] == pytest.approx(0.01)
    assert gain["ahead_on_seeds"] == 1


def test_paired_gain_pairs_by_seed():
    # The seed moves both methods by 2 points, a leads by 0.1-0.2 on each: pairing sees a
    # gain the 2-point spread of either method alone would hide.
    a, b = [0.821, 0.842, 0.8015], [0.820, 0.840, 0.800]
    low, high = common.paired_gain(a, b)["ci95"]
    assert 0 < low < 0.0015 < high < 0.003


@pytest.mark.parametrize("a, b", [([], []), ([0.8, 0.9], [0.8]), ([[0.8]], [[0.8]])])
def test_paired_gain_rejects_unpaired_input(a, b):
    with pytest.raises(ValueError, match="Expected two equal-length"):
        common.paired_gain(a, b)


def test_step_time_ratio_of_interleaved_rounds():
    # Round 3 is slow for both (another process ran): the per-round ratio does not see it.
    a, b = [0.11, 0.12, 0.30, 0.11], [0.10, 0.10, 0.25, 0.10]
    ratio = common.step_time_ratio(a, b)
    assert ratio["ratio_of_medians"] == pytest.approx(np.median(a) / np.median(b))
    paired = np.array(a) / np.array(b)
    assert ratio["per_round_median"] == pytest.approx(np.median(paired))
    assert ratio["per_round_quartiles"] == pytest.approx(np.percentile(paired, [25, 75]))
    with pytest.raises(ValueError, match="Expected two equal-length"):
        common.step_time_ratio([0.1], [0.1, 0.2])
