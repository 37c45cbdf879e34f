"""Comparing scores: each method against CogPO on the same problems, and the seeds pooled into one
number per (model size, method, benchmark), with the uncertainty of the problems drawn and the
seeds run.

Each seed's score is a mean over the same problems, so the seeds are pooled problem by problem:
a problem's pooled score is its mean over seeds (and samples) and the accuracy is the mean of
those. Its interval and every comparison count both sources of noise (``statistics``): the
problems, paired between methods, and the training seeds, through each method's seed variance
component (``seed_var``). A comparison where a trained side has a single seed cannot count seeds:
it is marked ``compared_as = "checkpoints"``, not "methods".
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from crv_dagster.evaluation.statistics import (
    Estimate,
    SeedComponent,
    holm_adjusted,
    method_difference,
    method_estimate,
    seed_component,
    welch,
)
from crv_dagster.methods import BASE, COGPO

KEYS = ["dataset", "model_size", "method", "benchmark"]
VERSUS = f"vs_{COGPO}"
HOLM = f"p_{VERSUS}_holm"
COMPARISON_COLUMNS = [f"diff_{VERSUS}", f"diff_{VERSUS}_low", f"diff_{VERSUS}_high", f"p_{VERSUS}", HOLM,
                      "compared_as"]
POOLED_COLUMNS = [*KEYS, "benchmark_source", "accuracy", "ci_low", "ci_high", "cons_at_n", *COMPARISON_COLUMNS,
                  "seed_std", "seed_var", "seed_ms", "noise_ms", "num_seeds",
                  "seed_accuracies", "num_problems", "num_samples", "mean_response_tokens", "no_answer_share",
                  "truncated_share", "data_prompt_tokens", "data_completion_tokens", "train_device_s", "cost",
                  "problem_scores"]
METHODS, CHECKPOINTS = "methods", "checkpoints"


def seed_table(problem_scores: list[str]) -> tuple[list[str], np.ndarray]:
    """The problems every seed scored, and the seeds x problems table of their scores."""
    per_seed = [json.loads(s) for s in problem_scores]
    common = sorted(set.intersection(*(set(s) for s in per_seed))) if per_seed else []
    return common, np.array([[s[k] for k in common] for s in per_seed], dtype=float).reshape(len(per_seed), len(common))


def pool_seeds(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model size, method, benchmark) of per-seed ``eval_scores`` rows, with
    intervals, differences and p-values against CogPO that count the training seeds."""
    rows = []
    for key, group in scores.groupby(KEYS, sort=False):
        group = group.sort_values("seed")
        common, table = seed_table(list(group["problem_scores"]))
        # The base student is not trained: its seeds only draw its samples, noise at the problem level.
        component = seed_component(table, trained=key[2] != BASE)
        estimate = method_estimate(table, trained=component.trained)
        cons = group["cons_at_n"].dropna()
        rows.append({**dict(zip(KEYS, key)), "benchmark_source": group["benchmark_source"].iloc[0],
                     "accuracy": estimate.value, "ci_low": estimate.low, "ci_high": estimate.high,
                     "cons_at_n": float(cons.mean()) if len(cons) else None,
                     "seed_std": float(group["accuracy"].std(ddof=1)) if len(group) > 1 else float("nan"),
                     "seed_var": component.variance, "seed_ms": component.seed_ms, "noise_ms": component.residual_ms,
                     "num_seeds": int(len(group)),
                     "seed_accuracies": json.dumps({str(s): round(float(a), 6)
                                                    for s, a in group[["seed", "accuracy"]].itertuples(index=False)}),
                     "num_problems": len(common), "num_samples": int(group["num_samples"].max()),
                     "mean_response_tokens": float(group["mean_response_tokens"].mean()),
                     "no_answer_share": float(group["no_answer_share"].mean()),
                     "truncated_share": float(group["truncated_share"].mean()),
                     # Every seed trained on the same data; its training time varies: the mean.
                     "data_prompt_tokens": int(group["data_prompt_tokens"].max()),
                     "data_completion_tokens": int(group["data_completion_tokens"].max()),
                     "train_device_s": float(group["train_device_s"].mean()),
                     "cost": float(group["cost"].mean()) if group["cost"].notna().any() else None,
                     "problem_scores": json.dumps(dict(zip(common, table.mean(axis=0).tolist())))})
    frame = pd.DataFrame(rows, columns=[c for c in POOLED_COLUMNS if c not in COMPARISON_COLUMNS])
    return compare_with(frame, COGPO, by=("dataset", "model_size", "benchmark"))[POOLED_COLUMNS]


def row_seeds(row) -> SeedComponent:
    """A scores row's seed component: from ``results``' mean squares, or none for one checkpoint's row."""
    trained = row["method"] != BASE
    if "seed_ms" not in row:
        return SeedComponent(float("nan"), float("nan"), 1, 0, trained)
    return SeedComponent(float(row["seed_ms"]), float(row["noise_ms"]), int(row["num_seeds"]), int(row["num_problems"]),
                         trained)


def difference(ours, theirs) -> tuple[Estimate, int]:
    """Two scores rows compared on the problems both scored (ours minus theirs), and how many."""
    a, b = json.loads(ours["problem_scores"]), json.loads(theirs["problem_scores"])
    common = sorted(set(a) & set(b))
    return method_difference([a[k] for k in common], [b[k] for k in common], row_seeds(ours), row_seeds(theirs)), len(common)


def compare_with(scores: pd.DataFrame, reference: str, by: tuple[str, ...] = ("seed", "benchmark")) -> pd.DataFrame:
    """``scores`` with each method's difference from the reference method on the same problems,
    matched on the ``by`` columns (the same seed and benchmark, or the same size and benchmark):
    ``diff_vs_<reference>`` and its 95% interval (``_low``, ``_high``), ``p_vs_<reference>`` (Welch's t
    over problems and, where the rows carry them, seeds) and ``p_vs_<reference>_holm``, Holm over
    every p-value of the table; ``compared_as`` says whether seeds were counted ("methods") or not
    ("checkpoints"). Empty for the reference itself and where it was not scored."""
    versus = f"vs_{reference}"
    keyed = {tuple(r[c] for c in by): r for _, r in scores[scores["method"] == reference].iterrows()}
    out = {f"diff_{versus}": [], f"diff_{versus}_low": [], f"diff_{versus}_high": [], f"p_{versus}": [],
           "compared_as": []}
    for _, row in scores.iterrows():
        theirs = keyed.get(tuple(row[c] for c in by))
        if row["method"] == reference or theirs is None:
            for column in out:
                out[column].append(None if column == "compared_as" else float("nan"))
            continue
        estimate, _ = difference(row, theirs)
        for column, value in zip(out, (estimate.value, estimate.low, estimate.high, estimate.p_value,
                                       METHODS if estimate.counts_seeds else CHECKPOINTS)):
            out[column].append(value)
    return scores.assign(**out, **{f"p_{versus}_holm": holm_adjusted(out[f"p_{versus}"])})


def benchmark_average(rows: pd.DataFrame) -> tuple[float, float, float]:
    """Mean accuracy over the benchmarks of ``rows`` (one row each) and its 95% interval: each
    benchmark's problems drawn on their own, and, where the rows carry seed components, a seed's
    effect taken as the same on every benchmark (one checkpoint sits the whole suite), which is the
    cautious reading."""
    groups = [(np.array(list(json.loads(r["problem_scores"]).values())), r) for _, r in rows.iterrows()]
    groups = [(g, r) for g, r in groups if g.size]
    if not groups:
        return float("nan"), float("nan"), float("nan")
    count = len(groups)
    terms = [(float(g.var(ddof=1)) / g.size / count ** 2 if g.size > 1 else 0.0, g.size - 1.0) for g, _ in groups]
    seeds = [row_seeds(r) for _, r in groups]
    if all(s.trained and s.estimated for s in seeds):
        spread = float(np.mean([math.sqrt(s.variance) for s in seeds]))
        if spread > 0:
            terms.append((spread ** 2 / min(s.seeds for s in seeds), min(s.df for s in seeds)))
    mean = float(np.mean([g.mean() for g, _ in groups]))
    estimate = welch(mean, terms, True, 0.95)
    return mean, max(0.0, estimate.low), min(1.0, estimate.high)


def primary_comparisons(pooled: pd.DataFrame, method: str, against: list[str]) -> pd.DataFrame:
    """The profile's primary comparison (``evaluation.primary``): ``method`` against each of
    ``against``, per model size and benchmark, on the problems both scored. Each row has the
    difference in accuracy with its 95% interval, its p-value (seeds and problems counted, as in
    ``compare_with``), the Holm-adjusted one over these comparisons only (the primary family,
    decided before the results were seen) and ``compared_as``."""
    rows = []
    for (dataset, size, benchmark), group in pooled.groupby(["dataset", "model_size", "benchmark"], sort=False):
        by_method = {r["method"]: r for _, r in group.iterrows()}
        if method not in by_method:
            continue
        for other in against:
            if other not in by_method:
                continue
            estimate, count = difference(by_method[method], by_method[other])
            rows.append({"dataset": dataset, "model_size": size, "benchmark": benchmark, "method": method,
                         "against": other, "difference": estimate.value, "ci_low": estimate.low,
                         "ci_high": estimate.high, "num_problems": count, "p_value": estimate.p_value,
                         "compared_as": METHODS if estimate.counts_seeds else CHECKPOINTS})
    frame = pd.DataFrame(rows, columns=["dataset", "model_size", "benchmark", "method", "against", "difference",
                                        "ci_low", "ci_high", "num_problems", "p_value", "compared_as"])
    return frame.assign(p_holm=holm_adjusted(frame["p_value"].tolist()) if len(frame) else [])
