"""Aggregate statistics for comparison tables: IQM, stratified bootstrap intervals, probability of improvement.

The conventions are rliable's (Agarwal et al., "Deep RL at the Edge of the Statistical Precipice", NeurIPS 2021),
written here with numpy only, so that the benchmarks need no extra package (`pip install rliable` 1.2.0 brings
arch, pandas, seaborn, statsmodels, formulaic, patsy and four more for these three functions; checked 2026-12-01):

- scores are a matrix (runs, tasks): one row per seed, one column per task (a table over one environment is a
  single column);
- IQM = the interquartile mean of all runs x tasks scores: the mean after cutting floor(0.25 n) scores from each
  end of the sorted n scores (`scipy.stats.trim_mean(scores, 0.25, axis=None)`, as rliable does);
- a stratified bootstrap resamples the runs of each task with replacement, separately per task (the strata), and
  recomputes the statistic; the 95% interval is the percentile interval of those replicates (rliable's default,
  through `arch`'s StratifiedBootstrap);
- the probability of improvement P(X > Y) is the Mann-Whitney U statistic averaged over tasks:
  mean over tasks of (1 / (n m)) sum_i sum_j [x_i > y_j] + 0.5 [x_i = y_j]; its interval resamples the runs of X
  and of Y independently within each task.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def _matrix(scores) -> np.ndarray:
    x = np.asarray(scores, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"scores must be (runs,) or (runs, tasks) with at least one of each, got shape {x.shape}.")
    return x


def iqm(scores) -> float:
    """Interquartile mean of all scores (runs x tasks): the mean after trimming floor(n / 4) from each end."""
    x = np.sort(_matrix(scores).reshape(-1))
    cut = int(0.25 * x.size)
    return float(x[cut: x.size - cut].mean())


def mean(scores) -> float:
    return float(_matrix(scores).mean())


def stratified_resample(x: np.ndarray, rng: np.random.Generator, reps: int) -> np.ndarray:
    """(reps, runs, tasks): each replicate draws `runs` rows with replacement within every task separately."""
    runs, tasks = x.shape
    idx = rng.integers(0, runs, size=(reps, runs, tasks))
    return np.take_along_axis(np.broadcast_to(x, (reps, runs, tasks)), idx, axis=1)


def bootstrap_ci(scores, statistic: Callable[[np.ndarray], float] = iqm, reps: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(point estimate, lower, upper): the statistic and its stratified-bootstrap percentile interval."""
    x = _matrix(scores)
    rng = np.random.default_rng(seed)
    replicates = np.array([statistic(r) for r in stratified_resample(x, rng, reps)])
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(replicates, [tail, 100.0 - tail])
    return statistic(x), float(lo), float(hi)


def probability_of_improvement(x_scores, y_scores) -> float:
    """P(X > Y): per task the fraction of (x run, y run) pairs with x > y, ties counting 1/2; mean over tasks."""
    x, y = _matrix(x_scores), _matrix(y_scores)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"X and Y need the same tasks (columns), got {x.shape[1]} and {y.shape[1]}.")
    greater = (x[:, None, :] > y[None, :, :]).mean(axis=(0, 1))
    ties = (x[:, None, :] == y[None, :, :]).mean(axis=(0, 1))
    return float(np.mean(greater + 0.5 * ties))


def probability_of_improvement_ci(x_scores, y_scores, reps: int = 2000, confidence: float = 0.95,
                                  seed: int = 0) -> tuple[float, float, float]:
    """(P(X > Y), lower, upper), the runs of X and of Y resampled independently within each task."""
    x, y = _matrix(x_scores), _matrix(y_scores)
    rng = np.random.default_rng(seed)
    xs, ys = stratified_resample(x, rng, reps), stratified_resample(y, rng, reps)
    replicates = np.array([probability_of_improvement(a, b) for a, b in zip(xs, ys)])
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(replicates, [tail, 100.0 - tail])
    return probability_of_improvement(x, y), float(lo), float(hi)


def describe(scores, digits: int = 1, reps: int = 2000, seed: int = 0) -> dict[str, str]:
    """Table cells: "mean ± std" (std over runs, ddof 0) and "IQM [lo, hi]" (95% stratified bootstrap)."""
    x = _matrix(scores)
    point, lo, hi = bootstrap_ci(x, iqm, reps=reps, seed=seed)
    return {"mean_std": f"{x.mean():.{digits}f} ± {x.std():.{digits}f}",
            "iqm_ci": f"{point:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"}
