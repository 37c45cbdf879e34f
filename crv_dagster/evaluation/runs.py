"""Evaluating one partition: which models, on which problems, with which protocol, and the table
their scores make.

``eval_scores`` scores the base student and every checkpoint of ``sft_model`` and ``cogpo_model``
(each seed) on the dataset's held-out split and the profile's benchmarks. ``evaluation_plan`` fixes
what is the same for every model; ``score_model`` scores one model through a backend the caller
opens; ``scores_table`` puts the summaries together with the p-values against CogPO;
``lighteval_results`` writes one model's scores in lighteval's layout. The asset opens one MLflow
run per model around ``score_model``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from crv_dagster.config import EvalProtocol, Profile
from crv_dagster.evaluation.accounting import COLUMNS as COST_COLUMNS
from crv_dagster.evaluation.aggregate import compare_with
from crv_dagster.evaluation.benchmarks import benchmark_sources, evaluation_sets
from crv_dagster.evaluation.lighteval_format import results_document, write_results
from crv_dagster.evaluation.scoring import generate_answers, summarize
from crv_dagster.schemas import eval_scores_schema
from crv_dagster.methods import BASE, COGPO

# What each model's MLflow run shows per benchmark.
BENCHMARK_METRICS = ("accuracy", "ci_low", "ci_high", "no_answer_share", "truncated_share", "mean_response_tokens")


class ScoredModel(NamedTuple):
    method: str
    seed: int
    path: str


@dataclass
class EvaluationPlan:
    benchmarks: dict[str, pd.DataFrame]  # name -> problems
    protocols: dict[str, EvalProtocol]  # name -> its protocol (the profile's, with the benchmark's overrides)
    sources: dict[str, str]  # name -> where its problems came from, pinned
    params: dict  # the MLflow parameters every model's run shares

    @property
    def has_code(self) -> bool:
        """Whether a benchmark is graded by running programs (a sandbox is needed)."""
        return any("tests" in f and f["tests"].notna().any() for f in self.benchmarks.values())


def models_to_score(cfg: Profile, base_model: str, sft_manifest: pd.DataFrame,
                    cogpo_manifest: pd.DataFrame) -> list[ScoredModel]:
    """The base student once per seed (its samples are drawn with the seed), then every trained checkpoint."""
    models = [ScoredModel(BASE, seed, base_model) for seed in cfg.seeds]
    return models + [ScoredModel(r.method, int(r.seed), r.path)
                     for r in pd.concat([sft_manifest, cogpo_manifest]).itertuples()]


def _crv_params(rewritten: pd.DataFrame, pairs: pd.DataFrame) -> dict:
    """What the CRV stage did, so that score runs can be told apart in MLflow by their data."""
    params = {f"crv.action_{k}": int(v) for k, v in rewritten["action"].value_counts().items()}
    params["crv.num_passed"] = int(rewritten["passed"].sum())
    params.update({f"pairs_{k}": int(v) for k, v in pairs["pair_type"].value_counts().items()})
    return params


def evaluation_plan(cfg: Profile, dataset: str, model_size: str, problems: pd.DataFrame,
                    rewritten: pd.DataFrame, pairs: pd.DataFrame) -> EvaluationPlan:
    evaluation = cfg.evaluation
    if evaluation.backend is None:
        raise ValueError(f"profile '{cfg.name}': evaluation.backend is not set (a backend whose model is 'student')")
    benchmarks = evaluation_sets(cfg, dataset, problems)
    if not benchmarks:
        raise ValueError(f"profile '{cfg.name}': nothing to evaluate for {dataset}: its held-out split is "
                         "empty (datasets.<name>.eval_fraction, evaluation.heldout) and evaluation.benchmarks "
                         "gives no problems")
    protocols = {name: evaluation.protocol_for(name) for name in benchmarks}
    shared = evaluation.protocol.model_dump()
    params = {**{f"eval.{k}": v for k, v in shared.items()},
              **{f"eval.{name}.{k}": v for name, p in protocols.items()
                 for k, v in p.model_dump().items() if v != shared[k]},
              **{f"beta_{t}": v for t, v in cfg.training.pairs.betas.model_dump().items()},
              **_crv_params(rewritten, pairs),
              "finetuning": cfg.training_for(model_size).finetuning,
              "model_size": model_size, "dataset": dataset}
    sources = benchmark_sources(cfg, dataset)
    return EvaluationPlan(benchmarks, protocols, {n: sources[n] for n in benchmarks}, params)


def score_model(backend, model: ScoredModel, plan: EvaluationPlan, sandbox=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One model's per-sample details on every benchmark of the plan, and their summary."""
    details = pd.concat([generate_answers(backend, model.method, name, frame, plan.protocols[name],
                                          seed=model.seed, sandbox=sandbox)
                         for name, frame in plan.benchmarks.items()], ignore_index=True)
    return details, summarize(details).assign(model_path=model.path)


def lighteval_results(out_dir: Path, model: ScoredModel, plan: EvaluationPlan, summary: pd.DataFrame,
                      details: pd.DataFrame, started: float, ended: float) -> Path:
    """The model's scores as lighteval writes them, under ``out_dir``; returns the results file."""
    document = results_document(
        f"{model.method}-seed-{model.seed}", summary, details,
        {name: protocol.model_dump() for name, protocol in plan.protocols.items()}, plan.sources, started, ended,
        {"method": model.method, "seed": model.seed, "model_path": model.path,
         "dataset": plan.params["dataset"], "model_size": plan.params["model_size"]})
    return write_results(out_dir, document, details, ended)


# MLflow metric names of a benchmark's scores, statistic first: the runs table cuts a column header
# to about 15 characters, and "eval/<benchmark>/..." left accuracy and both interval ends alike.
# Shares are logged in percent, as Dagster's tables show them.
SCORE_METRIC_NAMES = {"accuracy": "acc", "ci_low": "ci_lo", "ci_high": "ci_hi", "no_answer_share": "no_answer",
                      "truncated_share": "truncated", "mean_response_tokens": "tokens", "cons_at_n": "cons"}
_NOT_A_SHARE = {"mean_response_tokens"}
MEAN_ACCURACY = "acc/mean"


# The UI names a group of runs by "key: value" pairs cut to the column's width, but a group of one
# key by its value alone: so one parameter, `group`, holds a score run's method and size.
SCORE_GROUP_PARAM = "group"


def score_group(profile, dataset: str, model_size: str, method: str) -> str:
    """A score run's group: its method and the student's size as the agents are told it ("sft · 135M"),
    with the dataset where the profile has several (they share the experiment)."""
    parts = [method, profile.model_sizes[model_size].parameters]
    if len({cfg.parameters for cfg in profile.model_sizes.values()}) < len(profile.model_sizes):
        parts[1] = model_size  # two sizes told the same parameter count
    if len(profile.datasets) > 1:
        parts.append(dataset)
    return " · ".join(parts)


def score_metric(name: str, benchmark: str) -> str:
    """The MLflow metric of ``name`` (a column of the summary) on ``benchmark``."""
    return f"{SCORE_METRIC_NAMES[name]}/{benchmark}"


def score_metrics(summary: pd.DataFrame) -> dict[str, float]:
    """A model's summary as MLflow metrics: ``acc/<benchmark>``, ``ci_lo/<benchmark>``, ... (see
    ``SCORE_METRIC_NAMES``; shares in percent) and the mean accuracy ``acc/mean``."""
    unit = lambda name: 1.0 if name in _NOT_A_SHARE else 100.0  # noqa: E731
    metrics = {score_metric(name, r.benchmark): unit(name) * getattr(r, name)
               for r in summary.itertuples() for name in (*BENCHMARK_METRICS, "cons_at_n")
               if getattr(r, name) is not None and not pd.isna(getattr(r, name))}
    metrics[MEAN_ACCURACY] = 100.0 * float(summary["accuracy"].mean())
    # What the model cost, when the summary carries it: the same for every benchmark.
    metrics.update({f"cost/{name}": summary[name].iloc[0] for name in COST_COLUMNS
                    if name in summary and pd.notna(summary[name].iloc[0])})
    return metrics


def describe_scores(model: ScoredModel, summary: pd.DataFrame) -> str:
    return (f"{model.method} (seed {model.seed}): "
            + ", ".join(f"{r.benchmark} {100 * r.accuracy:.1f}%" for r in summary.itertuples()))


def scores_table(summaries: list[pd.DataFrame], plan: EvaluationPlan, dataset: str, model_size: str) -> pd.DataFrame:
    """Every model's summary (with its costs, ``accounting.method_costs``) in ``eval_scores``'
    columns, each score with its p-value against CogPO (same seed and benchmark) and the
    Holm-adjusted one."""
    scores = compare_with(pd.concat(summaries, ignore_index=True), COGPO)
    scores["model_size"], scores["dataset"] = model_size, dataset
    scores["protocol"] = [json.dumps(plan.protocols[b].model_dump(), sort_keys=True) for b in scores["benchmark"]]
    scores["benchmark_source"] = [plan.sources[b] for b in scores["benchmark"]]
    return scores[list(eval_scores_schema.columns)]
