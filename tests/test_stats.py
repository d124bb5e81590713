"""benchmarks/stats.py against hand-computed cases: IQM, the stratified bootstrap, probability of improvement."""

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import stats  # noqa: E402


def test_iqm_is_the_mean_of_the_middle_half():
    assert stats.iqm([1, 2, 3, 4, 5, 6, 7, 8]) == 4.5  # mean of 3, 4, 5, 6
    assert stats.iqm([8, 1, 100, 2, 3, 4, 5, -50]) == 3.5  # outliers cut: mean of 2, 3, 4, 5
    assert stats.iqm(list(range(10))) == pytest.approx(4.5)  # n = 10: floor(2.5) = 2 cut from each end
    assert stats.iqm([[1, 10], [2, 20], [3, 30], [4, 40]]) == pytest.approx((3 + 4 + 10 + 20) / 4)  # all runs x tasks
    assert stats.iqm([7.0]) == 7.0


def test_bootstrap_interval_matches_the_exact_bootstrap_distribution():
    """x = (0, 1, 2, 10): the 4^4 = 256 equally likely resamples give the exact bootstrap distribution of the mean;
    the Monte-Carlo percentile interval lands on its 2.5% and 97.5% quantiles (to within one atom)."""
    x = np.array([0.0, 1.0, 2.0, 10.0])
    exact = np.sort([np.mean(s) for s in itertools.product(x, repeat=4)])
    point, lo, hi = stats.bootstrap_ci(x, stats.mean, reps=20000, seed=1)
    assert point == 3.25
    assert np.quantile(exact, 0.015) <= lo <= np.quantile(exact, 0.035)
    assert np.quantile(exact, 0.965) <= hi <= np.quantile(exact, 0.985)
    # two runs (0, 1): resampled means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4 -> the 95% interval is [0, 1]
    assert stats.bootstrap_ci([0.0, 1.0], stats.mean, reps=4000)[1:] == (0.0, 1.0)
    assert stats.bootstrap_ci([3.0] * 8)[1:] == (3.0, 3.0)


def test_bootstrap_is_stratified_by_task():
    """Two tasks whose runs are constant (0 in task A, 10 in task B): resampling runs within each task always gives
    the mean 5, while a pooled bootstrap over the 16 scores would spread."""
    scores = np.stack([np.zeros(8), np.full(8, 10.0)], axis=1)
    assert stats.bootstrap_ci(scores, stats.mean, reps=500) == (5.0, 5.0, 5.0)
    resampled = stats.stratified_resample(scores, np.random.default_rng(0), 50)
    assert resampled.shape == (50, 8, 2)
    np.testing.assert_array_equal(resampled[:, :, 0], 0.0)
    np.testing.assert_array_equal(resampled[:, :, 1], 10.0)


def test_probability_of_improvement_by_hand():
    # x = (1, 2, 3) vs y = (2, 2, 0): pairs won 1 + (0.5 + 0.5 + 1) + 3 = 6 of 9
    assert stats.probability_of_improvement([1, 2, 3], [2, 2, 0]) == pytest.approx(6 / 9)
    assert stats.probability_of_improvement([5, 6], [1, 2]) == 1.0
    assert stats.probability_of_improvement([1, 2], [1, 2]) == 0.5
    # averaged over tasks: task 1 X always better (1), task 2 always worse (0)
    assert stats.probability_of_improvement([[2, 0], [3, 0]], [[1, 1], [1, 1]]) == 0.5
    p, lo, hi = stats.probability_of_improvement_ci([5, 6, 7], [1, 2, 3], reps=300)
    assert (p, lo, hi) == (1.0, 1.0, 1.0)
    p, lo, hi = stats.probability_of_improvement_ci([1, 2, 3, 4], [2, 3, 4, 5], reps=2000)
    assert lo < p < hi and p == pytest.approx(4.5 / 16)  # 0 + 0.5 + 1.5 + 2.5 pairs won of 16


def test_describe_cells():
    cells = stats.describe([1, 2, 3, 4, 5, 6, 7, 8], digits=2, reps=500)
    assert cells["mean_std"] == f"4.50 ± {np.std(np.arange(1, 9)):.2f}"
    assert cells["iqm_ci"].startswith("4.50 [")
    with pytest.raises(ValueError, match="runs"):
        stats.iqm(np.zeros((2, 2, 2)))
