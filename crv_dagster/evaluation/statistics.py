"""Uncertainty of a score: which problems were drawn and which training run made the checkpoint.

A benchmark score is a mean over problems (each problem's own score being its mean over samples).
One checkpoint's score varies with the problems drawn: its interval resamples problems
(``bootstrap_interval``). A *method*'s score varies as well with the training seed: two checkpoints
of one method trained on the same data with different seeds differ by a point or more, and a test
that ignores this compares checkpoints, not methods (in the simulation of
``benchmarks/seed_calibration.py``, 500 problems and 3 seeds 2 points apart, the problems-only test
rejected a true null in 19% of runs).

``method_estimate`` and ``method_difference`` count both. From each method's seeds x problems table
of scores, a two-way analysis of variance separates the seed component (how much one checkpoint's
accuracy moves with its seed alone) from the problem-level noise by the method of moments; a
difference between methods is paired on problems (which removes what both share, how hard each
problem is) and adds the seed variance, pooled over the two trained methods, over each side's
number of seeds; the test is Welch's t with Satterthwaite's degrees of freedom, so that a seed
variance estimated from a few seeds is charged its few degrees of freedom. With one checkpoint of a
trained method there is no seed variance to estimate: that comparison is between checkpoints. References: Satterthwaite (1946), "An approximate distribution of
estimates of variance components", Biometrics Bulletin 2(6); Searle, Casella and McCulloch (1992),
*Variance Components*, ch. 4 (ANOVA estimators); Bouthillier et al. (2021), "Accounting for Variance
in Machine Learning Benchmarks", MLSys; Miller (2024), "Adding Error Bars to Evals", arXiv 2411.00640.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

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


@dataclass(frozen=True)
class SeedComponent:
    """What one method's seeds x problems table of scores says about its training-seed noise: the
    two mean squares of a two-way analysis of variance (seeds, problems) and the table's shape. The
    seed mean square is problem-level noise plus ``problems`` times the seed variance; the residual
    mean square is that noise alone. ``trained=False`` marks a model with no training seed (the base
    student), whose seed variance is zero by construction."""

    seed_ms: float
    residual_ms: float
    seeds: int
    problems: int
    trained: bool = True

    @property
    def estimated(self) -> bool:
        """Whether the seed variance is known: estimated from two seeds or more, or zero by construction."""
        return not self.trained or (self.seeds >= 2 and self.problems >= 2)

    @property
    def variance(self) -> float:
        """Variance of one checkpoint's accuracy from its seed alone (0 where the seeds differ no more
        than problem-level noise explains; NaN where it cannot be estimated)."""
        if not self.trained:
            return 0.0
        if not self.estimated:
            return float("nan")
        return max(0.0, (self.seed_ms - self.residual_ms) / self.problems)

    def moments(self) -> tuple[float, float]:
        """(variance estimate before truncation, the denominator of its Satterthwaite df)."""
        estimate = (self.seed_ms - self.residual_ms) / self.problems
        denominator = ((self.seed_ms / self.problems) ** 2 / (self.seeds - 1)
                       + (self.residual_ms / self.problems) ** 2 / ((self.seeds - 1) * (self.problems - 1)))
        return estimate, denominator

    @property
    def df(self) -> float:
        """Satterthwaite's degrees of freedom of ``variance`` (a difference of two mean squares)."""
        if not (self.trained and self.estimated) or self.variance <= 0:
            return math.inf
        estimate, denominator = self.moments()
        return estimate ** 2 / denominator


def seed_component(per_seed, trained: bool = True) -> SeedComponent:
    """The ANOVA mean squares of a seeds x problems table of scores (rows: seeds, columns: the same
    problems)."""
    table = np.asarray(per_seed, dtype=float)
    seeds, problems = table.shape
    if seeds < 2 or problems < 2:
        return SeedComponent(float("nan"), float("nan"), seeds, problems, trained)
    seed_means, problem_means, grand = table.mean(axis=1), table.mean(axis=0), table.mean()
    seed_ms = problems * float(((seed_means - grand) ** 2).sum()) / (seeds - 1)
    residual = table - seed_means[:, None] - problem_means[None, :] + grand
    residual_ms = float((residual ** 2).sum()) / ((seeds - 1) * (problems - 1))
    return SeedComponent(seed_ms, residual_ms, seeds, problems, trained)


def seed_terms(ours: SeedComponent, theirs: SeedComponent) -> list[tuple[float, float]]:
    """The seed part of the variance of a difference between two methods' means, as (variance, df)
    terms. Two trained methods with estimated components share one seed variance, pooled over both
    weighted by their seed degrees of freedom: methods trained alike vary alike from seed to seed,
    and pooling doubles the few degrees of freedom that 3 seeds give (in the simulation of
    ``benchmarks/seed_calibration.py`` it brings the false-positive rate closer to 5% and the power
    up). An untrained side contributes nothing; a side that cannot be estimated, nothing either
    (the comparison is then between checkpoints)."""
    if ours.trained and theirs.trained and ours.estimated and theirs.estimated:
        weights = np.array([ours.seeds - 1, theirs.seeds - 1], dtype=float)
        weights /= weights.sum()
        pieces = [c.moments() for c in (ours, theirs)]
        variance = float(sum(w * e for w, (e, _) in zip(weights, pieces)))
        if variance <= 0:
            return []
        df = variance ** 2 / float(sum(w ** 2 * d for w, (_, d) in zip(weights, pieces)))
        return [(variance * (1 / ours.seeds + 1 / theirs.seeds), df)]
    return [(c.variance / c.seeds, c.df) for c in (ours, theirs)
            if c.trained and c.estimated and c.variance > 0]


@dataclass(frozen=True)
class Estimate:
    """A mean accuracy or a difference of two, its standard error, the degrees of freedom of that
    error, its ``level`` interval and the two-sided p-value of "it is zero". ``counts_seeds`` says
    whether training seeds are in the error (False: the comparison is between checkpoints)."""

    value: float
    se: float
    df: float
    low: float
    high: float
    p_value: float
    counts_seeds: bool


def _all_alike(count: int, level: float) -> float:
    """Clopper-Pearson's bound for ``count`` of ``count`` alike: the smallest share of such problems
    in the population that is still compatible, at ``level``, with seeing no exception."""
    return ((1 - level) / 2) ** (1 / count)


def welch(value: float, terms: list[tuple[float, float]], counts_seeds: bool, level: float,
          moved: int | None = None) -> Estimate:
    """``value`` with variance the sum of independent ``terms`` (variance, df), Satterthwaite's df.
    ``moved``: for a paired difference, how many problems moved (used when they all moved alike)."""
    variance = sum(v for v, _ in terms)
    if variance <= 0:
        if value == 0 or not moved:
            return Estimate(value, 0.0, math.inf, value, value, 1.0 if value == 0 else 0.0, counts_seeds)
        # Every problem moved the same way by the same amount: no spread for a t statistic. The sign
        # test's exact p-value, and an interval that allows, at the same level, for the share of
        # problems that would not have moved so (Clopper-Pearson on "moved alike"): 4 of 4 problems
        # is no evidence, 40 of 40 is.
        other_end = value * (2 * _all_alike(moved, level) - 1)
        low, high = sorted((other_end, value))
        return Estimate(value, 0.0, math.inf, low, high, float(min(1.0, 2 * 0.5 ** moved)), counts_seeds)
    denominator = sum(v ** 2 / d for v, d in terms if v > 0 and math.isfinite(d))
    df = variance ** 2 / denominator if denominator > 0 else math.inf
    se = math.sqrt(variance)
    quantile = float(stats.t.ppf(0.5 + level / 2, df))
    p_value = float(2 * stats.t.sf(abs(value) / se, df))
    return Estimate(value, se, df, value - quantile * se, value + quantile * se, min(1.0, p_value), counts_seeds)


def method_estimate(per_seed, trained: bool = True, level: float = 0.95) -> Estimate:
    """A method's accuracy (the mean over its seeds and problems) with an interval that counts both:
    ``per_seed`` is its seeds x problems table of scores. The interval is clipped to [0, 1]."""
    table = np.asarray(per_seed, dtype=float)
    pooled = table.mean(axis=0)
    if pooled.size == 0:
        nan = float("nan")
        return Estimate(nan, nan, nan, nan, nan, nan, False)
    component = seed_component(table, trained)
    terms = [(float(pooled.var(ddof=1)) / pooled.size if pooled.size > 1 else 0.0, pooled.size - 1.0)]
    if component.trained and component.estimated and component.variance > 0:
        terms.append((component.variance / component.seeds, component.df))
    estimate = welch(float(pooled.mean()), terms, component.estimated, level)
    low, high = max(0.0, estimate.low), min(1.0, estimate.high)
    if estimate.se == 0 and estimate.value in (0.0, 1.0):
        # None solved (or all): no spread for a t interval; Clopper-Pearson's for n of n alike.
        bound = _all_alike(pooled.size, level)
        low, high = (0.0, 1 - bound) if estimate.value == 0 else (bound, 1.0)
    return Estimate(estimate.value, estimate.se, estimate.df, low, high, estimate.p_value, estimate.counts_seeds)


def method_difference(ours, theirs, ours_seeds: SeedComponent, theirs_seeds: SeedComponent,
                      level: float = 0.95) -> Estimate:
    """Difference of two methods' accuracies (ours minus theirs) on the same problems, ``ours`` and
    ``theirs`` each problem's score pooled over that method's seeds (same order), with each side's
    seed component (``seed_terms``). A trained side with one checkpoint has no estimable seed
    component: the result then says ``counts_seeds=False``, a comparison of checkpoints."""
    a, b = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same problems: {a.shape} vs {b.shape}")
    if a.size == 0:
        nan = float("nan")
        return Estimate(nan, nan, nan, nan, nan, nan, False)
    diff = a - b
    problem_term = (float(diff.var(ddof=1)) / diff.size if diff.size > 1 else 0.0, diff.size - 1.0)
    counts_seeds = ours_seeds.estimated and theirs_seeds.estimated
    estimate = welch(float(diff.mean()), [problem_term, *seed_terms(ours_seeds, theirs_seeds)], counts_seeds,
                     level, moved=int(np.count_nonzero(diff)))
    # Scores are in [0, 1], so no difference lies outside [-1, 1].
    return Estimate(estimate.value, estimate.se, estimate.df, max(-1.0, estimate.low), min(1.0, estimate.high),
                    estimate.p_value, estimate.counts_seeds)
