"""The method comparison is calibrated when checkpoints vary with their training seed: simulated
eval_scores through pool_seeds, the function results gets its numbers from."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from seed_calibration import rejection_rates, simulated_scores  # noqa: E402

from crv_dagster.evaluation.aggregate import pool_seeds, primary_comparisons  # noqa: E402
from crv_dagster.evaluation.statistics import seed_component  # noqa: E402

# The world: 500 problems, 3 seeds per method, seeds about 2 points apart.
WORLD = {"problems": 500, "seeds": 3, "seed_sd": 0.02, "accuracy": 0.4}


def test_a_true_null_is_rejected_about_five_percent_of_the_time_and_the_old_test_far_more():
    rates = rejection_rates(250, seed=11, gain=0.0, **WORLD)
    assert 0.01 <= rates["seed_aware"] <= 0.09, rates
    assert rates["interval_coverage"] >= 0.91, rates
    # The test it replaced, on the same data, calls a difference in far more than 5% of the runs.
    assert rates["problems_only"] >= 0.12, rates


def test_a_gain_of_eight_points_is_found_most_of_the_time():
    rates = rejection_rates(120, seed=12, gain=0.08, baseline=False, **WORLD)
    assert rates["seed_aware"] >= 0.5, rates
    assert rates["interval_coverage"] >= 0.88, rates


def test_problems_alike_and_no_seed_effect_keep_the_level():
    # All problems equally hard, and seeds that change nothing: only the problem-level noise is left.
    rates = rejection_rates(200, seed=13, gain=0.0, baseline=False, concentration=1000.0,
                            **{**WORLD, "seed_sd": 0.0})
    assert 0.01 <= rates["seed_aware"] <= 0.09, rates


def test_the_seed_variance_is_recovered_from_a_seeds_by_problems_table():
    rng = np.random.default_rng(3)
    # 8 seeds x 4000 problems, seed shifts of 5 points: the estimate comes back near 0.0025.
    chance = np.clip(0.5 + rng.normal(0.0, 0.05, size=(8, 1)), 0, 1)
    table = (rng.random((8, 4000)) < chance).astype(float)
    component = seed_component(table)
    assert component.variance == pytest.approx(np.var(chance, ddof=1), rel=0.35)
    assert component.df > 3
    # The same checkpoint scored eight times: no seed variance at all.
    assert seed_component(np.repeat(table[:1], 8, axis=0)).variance == 0.0
    assert np.isnan(seed_component(table[:1]).variance)  # one seed: nothing to estimate


def test_the_primary_family_counts_seeds_with_three_and_says_checkpoints_with_one():
    rng = np.random.default_rng(5)
    scores = simulated_scores(rng, gain=0.08, **WORLD)
    [row] = primary_comparisons(pool_seeds(scores), "cogpo", ["sft"]).to_dict("records")
    assert row["compared_as"] == "methods" and row["ci_low"] < row["difference"] < row["ci_high"]
    [one] = primary_comparisons(pool_seeds(scores[scores["seed"] == 0]), "cogpo", ["sft"]).to_dict("records")
    assert one["compared_as"] == "checkpoints"
