"""``eval_scores``: accuracy (pass@1) of every model of one partition and seed (the base student,
the SFT variants, CogPO and its baselines) on the held-out split and each benchmark, each with its
interval and its paired p-value against CogPO."""

from __future__ import annotations

import time

import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.evaluation import runs
from crv_dagster.evaluation.accounting import TOKEN_ASSETS, asset_tokens, method_costs
from crv_dagster.evaluation.aggregate import pool_seeds
from crv_dagster.evaluation.report import results_markdown
from crv_dagster.evaluation.runs import SCORE_GROUP_PARAM, score_group
from crv_dagster.factory import build_backend, code_sandbox
from crv_dagster.model_card import add_scores
from crv_dagster.models.located import student_base_model
from crv_dagster.stages.base import FilePath, Json, Markdown, Stage, StageResult, run_links
from crv_dagster.stages.display import markdown_table
from crv_dagster.storage import table_path
from crv_dagster.versions import backend_identity, students
from crv_dagster.methods import BASE


def reads(profile: Profile) -> dict:
    p = profile
    return {"evaluation": p.evaluation.model_dump(mode="json", exclude={"primary"}), "seeds": p.seeds,
            "backend": backend_identity(p, p.evaluation.backend), "students": students(p),
            "eval_fraction": {n: d.eval_fraction for n, d in p.datasets.items()},
            # device time counts every training process
            "processes": {size: p.training_for(size).launch.num_processes for size in p.model_sizes}}


DETAILS = "eval_details"  # every model's answer to every problem, stored beside eval_scores

# Shares shown in percent, as `results` and MLflow show them (the table itself keeps fractions).
PERCENT_COLUMNS = {"accuracy": "accuracy %", "cons_at_n": "cons@n %", "ci_low": "ci_low %", "ci_high": "ci_high %",
                   "no_answer_share": "no answer %", "truncated_share": "truncated %"}


def _in_percent(scores: pd.DataFrame) -> pd.DataFrame:
    return scores.assign(**{shown: (100 * scores[column].astype(float)).round(1)
                            for column, shown in PERCENT_COLUMNS.items()})


def run(stage: Stage, problems: pd.DataFrame, rewritten_cots: pd.DataFrame, preference_pairs: pd.DataFrame,
        sft_model: pd.DataFrame, cogpo_model: pd.DataFrame) -> StageResult:
    cfg, key = stage.profile, stage.key
    todo = runs.evaluation_plan(cfg, key.dataset, key.model_size, problems, rewritten_cots, preference_pairs)
    models = runs.models_to_score(cfg, student_base_model(cfg, key.model_size), sft_model, cogpo_model)
    sandbox = code_sandbox(cfg.sandbox) if todo.has_code else None
    # What each model's data and training cost: the upstream assets' token counts, the manifests' times.
    tokens = {asset: asset_tokens(stage.upstream_metadata(asset)) for asset in TOKEN_ASSETS}
    trained, processes = pd.concat([sft_model, cogpo_model]), cfg.training_for(key.model_size).launch.num_processes
    details, summaries, links = [], [], {}
    lighteval_dir = cfg.artifacts_dir / "evaluation" / key.dataset / key.model_size
    for model in models:
        with stage.tracking.asset_run({"crv.method": model.method, "crv.seed": model.seed,
                                       "crv.report": "score"}) as run:
            started = time.time()
            with build_backend(cfg, cfg.evaluation.backend, model_path=model.path) as backend:
                model_details, summary = runs.score_model(backend, model, todo, sandbox)
            summary = method_costs(summary, tokens, trained, processes, cfg.evaluation.prices)
            results_file = runs.lighteval_results(lighteval_dir, model, todo, summary, model_details, started, time.time())
            run.log_params({**todo.params, "model_path": model.path, "method": model.method, "seed": model.seed,
                            SCORE_GROUP_PARAM: score_group(cfg, key.dataset, key.model_size, model.method)})
            run.log_metrics(runs.score_metrics(summary))
            run.log_text(results_file.read_text(), f"lighteval/{results_file.name}")
            stage.log.info(f"{runs.describe_scores(model, summary)} ({backend.stats.as_metadata('eval')})")
        links[f"{model.method}/seed-{model.seed}"] = run.url
        details.append(model_details)
        summaries.append(summary)
    scores = runs.scores_table(summaries, todo, key.dataset, key.model_size)
    for model in models:
        if model.method != BASE:  # a trained checkpoint's card gains what it scored
            add_scores(model.path, scores[(scores["method"] == model.method) & (scores["seed"] == model.seed)])
    detail_path = table_path(cfg.artifacts_dir / "tables", DETAILS, str(key))  # where the IO manager puts them
    protocol = cfg.evaluation.protocol.model_dump()
    # The asset's link opens the runs table on this experiment's score runs, one per model and seed.
    return StageResult(frame=scores, metadata={
        **run_links(links),
        "results": Markdown(results_markdown(pool_seeds(scores),
                                                        {k: v.parameters for k, v in cfg.model_sizes.items()})),
        "protocol": Json(protocol),
        "protocol_by_benchmark": Json({n: p.model_dump() for n, p in todo.protocols.items()}),
        "benchmark_sources": Json(todo.sources),
        "seeds": Json(list(cfg.seeds)),
        "per_problem_results": FilePath(str(detail_path)),
        "lighteval_results": FilePath(str(lighteval_dir)),
        "scores": markdown_table(_in_percent(scores), ["method", "seed", "benchmark", *PERCENT_COLUMNS.values(),
                                                        "p_vs_cogpo", "p_vs_cogpo_holm", "num_problems"], rows=80),
    }, link=stage.tracking.scores_view_url() or next(iter(links.values())),
        tables={DETAILS: pd.concat(details, ignore_index=True)})
