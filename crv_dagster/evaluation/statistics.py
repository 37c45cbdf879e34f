"""Uncertainty of a score: bootstrap intervals over problems and a paired bootstrap test.

A benchmark score is a mean over problems (each problem's own score being its mean over samples),
so its uncertainty comes from which problems were drawn: the interval resamples problems with
replacement. Two methods scored on the same problems are compared pairwise, problem by problem,
which removes the variation that both share (how hard each problem is).
"""

from __future__ import annotations

import numpy as np

BOOTSTRAP_SAMPLES = 10_000


def bootstrap_interval(per_problem, level: float = 0.95, samples: int = BOOTSTRAP_SAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``per_problem`` scores (each in [0, 1])."""
    values = np.asarray(per_problem, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(samples, values.size))].mean(axis=1)
    tail = (1.0 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def holm_adjusted(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN: not a comparison, left as it is).

    The k-th smallest of m p-values is multiplied by m - k + 1, the running maximum keeps the order,
    and values are capped at 1: rejecting where the adjusted value is below alpha keeps the chance of
    any false rejection in the family at most alpha, however the comparisons depend on each other.
    """
    values = np.asarray(p_values, dtype=float)
    out = np.full(values.shape, np.nan)
    present = np.flatnonzero(~np.isnan(values))
    if present.size == 0:
        return out
    order = present[np.argsort(values[present], kind="stable")]
    m = order.size
    scaled = np.minimum(1.0, values[order] * (m - np.arange(m)))
    out[order] = np.maximum.accumulate(scaled)
    return out


def paired_bootstrap_p(scores_a, scores_b, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> float:
    """Two-sided p-value for "a and b score the same", from per-problem scores on the same problems.

    The differences are resampled with replacement; the p-value is the share of resampled mean
    differences at least as far from the observed one as the observed one is from zero (the
    bootstrap distribution shifted to the null).
    """
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same problems: {a.shape} vs {b.shape}")
    if a.size == 0:
        return float("nan")
    diff = a - b
    observed = diff.mean()
    if observed == 0 and not diff.any():
        return 1.0
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(samples, diff.size))].mean(axis=1)
    return float(np.mean(np.abs(means - observed) >= abs(observed)))


def bootstrap_mean_of_means(groups, level: float = 0.95, samples: int = BOOTSTRAP_SAMPLES,
                            seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of several groups' means (an average over benchmarks), each
    group resampled on its own, as the benchmarks' problems were drawn independently."""
    rng = np.random.default_rng(seed)
    means = np.zeros(samples)
    for group in groups:
        values = np.asarray(group, dtype=float)
        means += values[rng.integers(0, values.size, size=(samples, values.size))].mean(axis=1)
    means /= len(groups)
    tail = (1.0 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))
