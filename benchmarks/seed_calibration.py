"""Calibration of the method comparison: how often it calls a difference where there is none, and
how often it finds a real one, when checkpoints of one method differ from seed to seed.

Synthetic ``eval_scores`` rows go through ``pool_seeds``, the function ``results`` gets its numbers
from, beside the test it replaced (a paired bootstrap over problems of the seed-pooled scores,
which treats the checkpoints as fixed), on the same simulated data.

The simulated world: each problem has its own chance of being solved (drawn from a Beta around the
base accuracy, so some problems are easy and some hard, shared by every checkpoint); each
checkpoint (method, seed) moves every problem's chance by its own seed effect, normal with
``--seed-sd`` points; the method under test adds ``--gain`` points; each checkpoint then solves
each problem or not. Under the null (``gain`` 0) both methods have the same true accuracy.

    .venv/bin/python benchmarks/seed_calibration.py [--runs 1000] [--problems 500] [--seeds 3]
        [--seed-sd 2] [--gain 8] [--accuracy 40] [--concentration 2]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pandas as pd

from crv_dagster.evaluation.aggregate import pool_seeds

ALPHA = 0.05


def simulated_scores(rng: np.random.Generator, *, problems: int, seeds: int, seed_sd: float, gain: float,
                     accuracy: float, concentration: float = 2.0) -> pd.DataFrame:
    """Per-seed ``eval_scores`` rows of ``sft`` and ``cogpo`` (one model size, one benchmark); every
    number is a fraction. ``concentration`` sets how unequal the problems are (Beta a + b)."""
    difficulty = rng.beta(accuracy * concentration, (1 - accuracy) * concentration, size=problems)
    ids = [f"q{i:04d}" for i in range(problems)]
    rows = []
    for method, shift in (("sft", 0.0), ("cogpo", gain)):
        for seed in range(seeds):
            chance = np.clip(difficulty + shift + rng.normal(0.0, seed_sd), 0.0, 1.0)
            solved = (rng.random(problems) < chance).astype(float)
            rows.append({"dataset": "sim", "model_size": "small", "method": method, "seed": seed,
                         "benchmark": "bench", "benchmark_source": "simulated", "accuracy": float(solved.mean()),
                         "cons_at_n": None, "num_samples": 1, "mean_response_tokens": 0.0, "no_answer_share": 0.0,
                         "truncated_share": 0.0, "data_prompt_tokens": 0, "data_completion_tokens": 0,
                         "train_device_s": 0.0, "cost": None,
                         "problem_scores": json.dumps(dict(zip(ids, solved.tolist())))})
    return pd.DataFrame(rows)


def problems_only_p(scores: pd.DataFrame, samples: int = 2000, seed: int = 0) -> float:
    """The replaced test: the seeds averaged problem by problem, then a paired bootstrap over problems."""
    pooled = {m: pd.DataFrame([json.loads(s) for s in g["problem_scores"]]).mean()
              for m, g in scores.groupby("method")}
    diff = (pooled["cogpo"] - pooled["sft"]).to_numpy()
    observed = diff.mean()
    if not diff.any():
        return 1.0
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(samples, diff.size))].mean(axis=1)
    return float(np.mean(np.abs(means - observed) >= abs(observed)))


def rejection_rates(runs: int, *, seed: int = 0, baseline: bool = True, **world) -> dict:
    """Share of ``runs`` simulated comparisons with p < 0.05 (ours, and the replaced test), with the
    share whose 95% interval on the difference covers the true gain."""
    rng = np.random.default_rng(seed)
    ours = theirs = covered = 0
    for _ in range(runs):
        scores = simulated_scores(rng, **world)
        row = pool_seeds(scores).set_index("method").loc["sft"]  # sft minus cogpo: the gain is -gain
        ours += row["p_vs_cogpo"] < ALPHA
        covered += row["diff_vs_cogpo_low"] <= -world["gain"] <= row["diff_vs_cogpo_high"]
        if baseline:
            theirs += problems_only_p(scores) < ALPHA
    rate = {"seed_aware": ours / runs, "interval_coverage": covered / runs}
    if baseline:
        rate["problems_only"] = theirs / runs
    return rate


def monte_carlo_error(rate: float, runs: int) -> float:
    return math.sqrt(max(rate * (1 - rate), 1e-12) / runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed-sd", type=float, default=2.0, help="points")
    parser.add_argument("--gain", type=float, default=8.0, help="points, for the power")
    parser.add_argument("--accuracy", type=float, default=40.0, help="points")
    parser.add_argument("--concentration", type=float, default=2.0,
                        help="a + b of the problems' Beta: small, problems far apart in difficulty; large, alike")
    args = parser.parse_args()
    world = {"problems": args.problems, "seeds": args.seeds, "seed_sd": args.seed_sd / 100,
             "accuracy": args.accuracy / 100, "concentration": args.concentration}
    print(f"{args.runs} simulated comparisons of two methods, {args.problems} problems, {args.seeds} seeds each, "
          f"seed effects {args.seed_sd:g} points (sd), base accuracy {args.accuracy:g}%, "
          f"problem concentration {args.concentration:g}")
    for label, gain in (("null (no gain)", 0.0), (f"gain of {args.gain:g} points", args.gain / 100)):
        rate = rejection_rates(args.runs, seed=1 if gain else 0, **world, gain=gain)
        cells = ", ".join(f"{name} {100 * value:.1f}% ± {100 * monte_carlo_error(value, args.runs):.1f}"
                          for name, value in rate.items())
        print(f"  {label}: p < {ALPHA} in {cells}")


if __name__ == "__main__":
    main()
