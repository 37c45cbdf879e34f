"""Comparing scores: each method against CogPO on the same problems, and the seeds pooled into one
number per (model size, method, benchmark), with the uncertainty of the problems drawn and the
seeds run.

Each seed's score is a mean over the same problems, so the seeds are pooled problem by problem:
a problem's pooled score is its mean over seeds (and samples), the accuracy is the mean of those,
and the bootstrap interval resamples problems. The spread between seeds (``seed_std``) is
reported beside it: training noise that the interval over problems does not show.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from crv_dagster.evaluation.statistics import (
    bootstrap_interval,
    bootstrap_mean_of_means,
    holm_adjusted,
    paired_bootstrap_p,
)
from crv_dagster.vocabulary import COGPO

KEYS = ["dataset", "model_size", "method", "benchmark"]
HOLM = f"p_vs_{COGPO}_holm"
POOLED_COLUMNS = [*KEYS, "benchmark_source", "accuracy", "ci_low", "ci_high", "cons_at_n", f"p_vs_{COGPO}", HOLM,
                  "seed_std", "num_seeds",
                  "seed_accuracies", "num_problems", "num_samples", "mean_response_tokens", "no_answer_share",
                  "truncated_share", "data_prompt_tokens", "data_completion_tokens", "train_device_s", "cost",
                  "problem_scores"]


def pooled_problem_scores(problem_scores: list[str]) -> dict[str, float]:
    """Mean over seeds of each problem's score, over the problems every seed scored."""
    per_seed = [json.loads(s) for s in problem_scores]
    common = sorted(set.intersection(*(set(s) for s in per_seed))) if per_seed else []
    return {k: float(np.mean([s[k] for s in per_seed])) for k in common}


def pool_seeds(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model size, method, benchmark) of per-seed ``eval_scores`` rows."""
    rows = []
    for key, group in scores.groupby(KEYS, sort=False):
        pooled = pooled_problem_scores(list(group["problem_scores"]))
        values = np.array(list(pooled.values()))
        low, high = bootstrap_interval(values)
        accuracies = group.sort_values("seed")[["seed", "accuracy"]]
        cons = group["cons_at_n"].dropna()
        rows.append({**dict(zip(KEYS, key)), "benchmark_source": group["benchmark_source"].iloc[0],
                     "accuracy": float(values.mean()) if values.size else float("nan"),
                     "ci_low": low, "ci_high": high, "cons_at_n": float(cons.mean()) if len(cons) else None,
                     "seed_std": float(accuracies["accuracy"].std(ddof=1)) if len(group) > 1 else float("nan"),
                     "num_seeds": int(len(group)),
                     "seed_accuracies": json.dumps({str(s): round(float(a), 6) for s, a in accuracies.itertuples(index=False)}),
                     "num_problems": int(values.size), "num_samples": int(group["num_samples"].max()),
                     "mean_response_tokens": float(group["mean_response_tokens"].mean()),
                     "no_answer_share": float(group["no_answer_share"].mean()),
                     "truncated_share": float(group["truncated_share"].mean()),
                     # Every seed trained on the same data; its training time varies: the mean.
                     "data_prompt_tokens": int(group["data_prompt_tokens"].max()),
                     "data_completion_tokens": int(group["data_completion_tokens"].max()),
                     "train_device_s": float(group["train_device_s"].mean()),
                     "cost": float(group["cost"].mean()) if group["cost"].notna().any() else None,
                     "problem_scores": json.dumps(pooled)})
    frame = pd.DataFrame(rows, columns=[c for c in POOLED_COLUMNS if c not in (f"p_vs_{COGPO}", HOLM)])
    return compare_with(frame, COGPO, by=("dataset", "model_size", "benchmark"))[POOLED_COLUMNS]


def compare_with(scores: pd.DataFrame, reference: str, by: tuple[str, ...] = ("seed", "benchmark")) -> pd.DataFrame:
    """``scores`` with ``p_vs_<reference>``: the paired bootstrap p-value of each method against the
    reference method on the same problems, matched on the ``by`` columns (the same seed and benchmark);
    empty for the reference itself and where it was not scored. ``p_vs_<reference>_holm`` adjusts
    them for the number of comparisons: Holm over every p-value of the table. Reads ``problem_scores``."""
    keyed = {tuple(getattr(r, c) for c in by): r.problem_scores
             for r in scores[scores["method"] == reference].itertuples()}
    values = []
    for row in scores.itertuples():
        theirs = keyed.get(tuple(getattr(row, c) for c in by))
        if row.method == reference or theirs is None:
            values.append(float("nan"))
            continue
        ours, theirs = json.loads(row.problem_scores), json.loads(theirs)
        common = sorted(set(ours) & set(theirs))
        values.append(paired_bootstrap_p([ours[k] for k in common], [theirs[k] for k in common]))
    return scores.assign(**{f"p_vs_{reference}": values, f"p_vs_{reference}_holm": holm_adjusted(values)})


def benchmark_average(rows: pd.DataFrame) -> tuple[float, float, float]:
    """Mean accuracy over the benchmarks of ``rows`` (one row each) and its 95% interval, each
    benchmark's problems resampled on their own."""
    groups = [np.array(list(json.loads(s).values())) for s in rows["problem_scores"]]
    groups = [g for g in groups if g.size]
    if not groups:
        return float("nan"), float("nan"), float("nan")
    low, high = bootstrap_mean_of_means(groups)
    return float(np.mean([g.mean() for g in groups])), low, high


def primary_comparisons(pooled: pd.DataFrame, method: str, against: list[str]) -> pd.DataFrame:
    """The profile's primary comparison (``evaluation.primary``): ``method`` against each of
    ``against``, per model size and benchmark, on the problems both scored. Each row has the
    difference in accuracy, its paired bootstrap p-value and the Holm-adjusted one over these
    comparisons only: the primary family, decided before the results were seen."""
    rows = []
    for (dataset, size, benchmark), group in pooled.groupby(["dataset", "model_size", "benchmark"], sort=False):
        scores = {r.method: json.loads(r.problem_scores) for r in group.itertuples()}
        if method not in scores:
            continue
        for other in against:
            if other not in scores:
                continue
            common = sorted(set(scores[method]) & set(scores[other]))
            ours, theirs = [scores[method][k] for k in common], [scores[other][k] for k in common]
            rows.append({"dataset": dataset, "model_size": size, "benchmark": benchmark, "method": method,
                         "against": other, "difference": float(np.mean(ours) - np.mean(theirs)) if common else float("nan"),
                         "num_problems": len(common), "p_value": paired_bootstrap_p(ours, theirs)})
    frame = pd.DataFrame(rows, columns=["dataset", "model_size", "benchmark", "method", "against", "difference",
                                        "num_problems", "p_value"])
    return frame.assign(p_holm=holm_adjusted(frame["p_value"].tolist()) if len(frame) else [])
