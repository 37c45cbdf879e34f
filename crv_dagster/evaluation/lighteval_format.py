"""Scores in the layout lighteval writes, so that leaderboards and comparison scripts read them.

lighteval saves ``<out>/results/<model>/results_<timestamp>.json``: ``config_general`` (the model,
start and end times), ``results`` (``{"<suite>|<task>|<few-shot>": {metric: value,
metric_stderr: value}}`` plus an ``all`` entry averaging the tasks), ``versions`` and
``config_tasks``; and, per task, the per-sample details as
``<out>/details/<model>/<timestamp>/details_<task>_<timestamp>.parquet``. Here each evaluated model
(a method and a seed) is one lighteval "model", every benchmark one task of the ``crv`` suite with
no few-shot examples, and the metrics are pass@1 (``pass@1``), and, with several samples, the
majority vote (``maj@<n>``), each with the standard error of its mean over problems.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

SUITE = "crv"
PASS_AT_1 = "pass@1"


def task_name(benchmark: str) -> str:
    return f"{SUITE}|{benchmark}|0"


def _stderr(values: np.ndarray) -> float:
    """The standard error of a mean over problems (0 for a single problem)."""
    return float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else 0.0


def _majority_per_problem(details: pd.DataFrame) -> np.ndarray:
    from crv_dagster.evaluation.scoring import majority_correct

    return np.array([float(majority_correct(group)) for _, group in details.groupby("problem_id")])


def results_document(model_name: str, summary: pd.DataFrame, details: pd.DataFrame, protocols: dict,
                     sources: dict[str, str], started: float, ended: float, extra_config: dict | None = None) -> dict:
    """One model's results file (a dict ready for JSON): ``summary`` is its rows of ``summarize``,
    ``details`` its per-sample rows, ``protocols`` each benchmark's protocol (a dict)."""
    results, config_tasks = {}, {}
    for row in summary.itertuples():
        task = task_name(row.benchmark)
        per_problem = np.array(list(json.loads(row.problem_scores).values()), dtype=float)
        metrics = {PASS_AT_1: float(row.accuracy), f"{PASS_AT_1}_stderr": _stderr(per_problem)}
        samples = int(row.num_samples)
        if samples > 1 and row.cons_at_n is not None and not pd.isna(row.cons_at_n):
            votes = _majority_per_problem(details[details["benchmark"] == row.benchmark])
            metrics.update({f"maj@{samples}": float(row.cons_at_n), f"maj@{samples}_stderr": _stderr(votes)})
        results[task] = metrics
        config_tasks[task.rsplit("|", 1)[0]] = {"name": row.benchmark, "suite": [SUITE],
                                                 "source": sources.get(row.benchmark),
                                                 "num_problems": int(row.num_problems),
                                                 "generation": protocols[row.benchmark]}
    shared = set.intersection(*(set(m) for m in results.values())) if results else set()
    results["all"] = {name: float(np.mean([m[name] for m in results.values()])) for name in sorted(shared)}
    return {
        "config_general": {"model_name": model_name, "start_time": started, "end_time": ended,
                           "total_evaluation_time_secondes": str(ended - started), **(extra_config or {})},
        "results": results,
        "versions": {task: 0 for task in results if task != "all"},
        "config_tasks": config_tasks,
    }


def timestamp(at: float) -> str:
    """lighteval's file-name timestamp: ISO time with ``-`` for ``:``."""
    return datetime.fromtimestamp(at, tz=timezone.utc).replace(tzinfo=None).isoformat().replace(":", "-")


def write_results(out_dir: Path, document: dict, details: pd.DataFrame, at: float) -> Path:
    """Writes the results file and each task's details; returns the results file's path."""
    model = document["config_general"]["model_name"]
    stamp = timestamp(at)
    path = out_dir / "results" / model / f"results_{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str))
    details_dir = out_dir / "details" / model / stamp
    details_dir.mkdir(parents=True, exist_ok=True)
    for benchmark, rows in details.groupby("benchmark", sort=False):
        rows.reset_index(drop=True).to_parquet(details_dir / f"details_{task_name(benchmark)}_{stamp}.parquet",
                                               index=False)
    return path
