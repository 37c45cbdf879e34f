"""Evaluation: ``eval_scores`` of every model of one partition and seed (the base student, the SFT
variants, CogPO and its baselines), and ``results``, one dataset's scores of every size pooled over seeds."""

import time

import dagster as dg
import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.evaluation import runs
from crv_dagster.evaluation.accounting import TOKEN_ASSETS, asset_tokens, method_costs
from crv_dagster.evaluation.aggregate import pool_seeds, primary_comparisons
from crv_dagster.evaluation.benchmarks import heldout_name
from crv_dagster.evaluation.report import accuracy_plot, headline, primary_markdown, results_markdown
from crv_dagster.factory import build_backend, code_sandbox
from crv_dagster.model_card import add_scores
from crv_dagster.models.located import student_base_model
from crv_dagster.orchestration.metadata import image, latest_metadata, markdown_table
from crv_dagster.orchestration.partitions import by_dataset, dataset_partitions
from crv_dagster.orchestration.resources import ProfileResource
from crv_dagster.orchestration.stage import Stage, StageResult, run_links, table_stage
from crv_dagster.orchestration.tracking import SCORE_GROUP_PARAM, MlflowTracking, score_group
from crv_dagster.orchestration.types import table_asset_args
from crv_dagster.schemas import eval_scores_schema, results_schema
from crv_dagster.storage import table_path, write_table
from crv_dagster.versions import AssetReads, backend_identity, students
from crv_dagster.vocabulary import BASE

GROUP = "evaluation"
_REPORT = ("crv_dagster.evaluation.aggregate", "crv_dagster.evaluation.report")
READS = {
    "eval_scores": AssetReads(
        (__name__, "crv_dagster.evaluation.runs", "crv_dagster.evaluation.accounting", "crv_dagster.factory",
         "crv_dagster.model_card",
         *_REPORT),
        lambda p: {"evaluation": p.evaluation.model_dump(mode="json", exclude={"primary"}), "seeds": p.seeds,
                   "backend": backend_identity(p, p.evaluation.backend), "students": students(p),
                   "eval_fraction": {n: d.eval_fraction for n, d in p.datasets.items()},
                   # device time counts every training process
                   "processes": {size: p.training_for(size).launch.num_processes for size in p.model_sizes}}),
    "results": AssetReads((__name__, "crv_dagster.evaluation.benchmarks", *_REPORT),
                          lambda p: {"students": {s: c.parameters for s, c in p.model_sizes.items()},
                                     "primary": p.evaluation.primary.model_dump()}),
}


def build_evaluation_assets(partitions: dg.PartitionsDefinition, profile_: Profile) -> list[dg.AssetsDefinition]:
    @dg.asset(
        **table_asset_args(profile_, "eval_scores", eval_scores_schema, READS["eval_scores"]),
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"pandas", "parquet"},
        pool="gpu",
        description="Accuracy (pass@1) of base, the SFT variants, CogPO and the preference baselines on the "
                    "held-out split and each benchmark, once per seed, each with its interval and its paired "
                    "p-value against CogPO.",
    )
    def eval_scores(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                    problems: pd.DataFrame, sft_model: pd.DataFrame, cogpo_model: pd.DataFrame,
                    rewritten_cots: pd.DataFrame, preference_pairs: pd.DataFrame):
        yield from table_stage(context, profile, mlflow, own_runs=True, compute=lambda stage: _scores(
            stage, problems, sft_model, cogpo_model, rewritten_cots, preference_pairs))

    @dg.asset(
        **table_asset_args(profile_, "results", results_schema, READS["results"]),
        group_name=GROUP,
        partitions_def=dataset_partitions(profile_),
        kinds={"pandas", "parquet"},
        ins={"eval_scores": dg.AssetIn(partition_mapping=by_dataset())},
        description="One dataset's comparison across model sizes: every method x benchmark with its interval, "
                    "the paper-shaped table and the accuracy-vs-size plot.",
    )
    def results(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                eval_scores: pd.DataFrame):
        yield from table_stage(context, profile, mlflow, lambda stage: _results(stage, eval_scores), own_runs=True)

    return [eval_scores, results]


# Shares shown in percent, as `results` and MLflow show them (the table itself keeps fractions).
PERCENT_COLUMNS = {"accuracy": "accuracy %", "cons_at_n": "cons@n %", "ci_low": "ci_low %", "ci_high": "ci_high %",
                   "no_answer_share": "no answer %", "truncated_share": "truncated %"}


def _in_percent(scores: pd.DataFrame) -> pd.DataFrame:
    return scores.assign(**{shown: (100 * scores[column].astype(float)).round(1)
                            for column, shown in PERCENT_COLUMNS.items()})


def _scores(stage: Stage, problems: pd.DataFrame, sft_model: pd.DataFrame, cogpo_model: pd.DataFrame,
            rewritten_cots: pd.DataFrame, preference_pairs: pd.DataFrame) -> StageResult:
    cfg, key = stage.cfg, stage.key
    todo = runs.evaluation_plan(cfg, key.dataset, key.model_size, problems, rewritten_cots, preference_pairs)
    models = runs.models_to_score(cfg, student_base_model(cfg, key.model_size), sft_model, cogpo_model)
    sandbox = code_sandbox(cfg.sandbox) if todo.has_code else None
    # What each model's data and training cost: the upstream assets' token counts, the manifests' times.
    tokens = {asset: asset_tokens(latest_metadata(stage.context, asset)) for asset in TOKEN_ASSETS}
    trained, processes = pd.concat([sft_model, cogpo_model]), cfg.training_for(key.model_size).launch.num_processes
    details, summaries, links = [], [], {}
    lighteval_dir = cfg.artifacts_dir / "evaluation" / key.dataset / key.model_size
    for model in models:
        with stage.mlflow.asset_run(stage.context, cfg, extra_tags={"crv.method": model.method, "crv.seed": model.seed,
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
    detail_path = table_path(cfg.artifacts_dir / "tables", "eval_details", str(key))
    write_table(pd.concat(details, ignore_index=True), detail_path)
    protocol = cfg.evaluation.protocol.model_dump()
    # The asset's link opens the runs table on this experiment's score runs, one per model and seed.
    return StageResult(scores, metadata={
        **run_links(links),
        "results": dg.MetadataValue.md(results_markdown(pool_seeds(scores),
                                                        {k: v.parameters for k, v in cfg.model_sizes.items()})),
        "protocol": dg.MetadataValue.json(protocol),
        "protocol_by_benchmark": dg.MetadataValue.json({n: p.model_dump() for n, p in todo.protocols.items()}),
        "benchmark_sources": dg.MetadataValue.json(todo.sources),
        "seeds": dg.MetadataValue.json(list(cfg.seeds)),
        "per_problem_results": dg.MetadataValue.path(str(detail_path)),
        "lighteval_results": dg.MetadataValue.path(str(lighteval_dir)),
        "scores": markdown_table(_in_percent(scores), ["method", "seed", "benchmark", *PERCENT_COLUMNS.values(),
                                                        "p_vs_cogpo", "p_vs_cogpo_holm", "num_problems"], rows=80),
    }, link=stage.mlflow.scores_view_url() or next(iter(links.values())))


def results_frame(eval_scores: pd.DataFrame) -> pd.DataFrame:
    """``results``' table: the scores pooled over seeds, by size and method, with the benchmarks in
    the order eval_scores has them (the held-out split, then the profile's), so that both assets'
    tables read alike (sorted by name, arith_bench came before arith_heldout here only)."""
    order = {bench: i for i, bench in enumerate(dict.fromkeys(eval_scores["benchmark"]))}
    frame = pool_seeds(eval_scores).sort_values(
        ["model_size", "method", "benchmark"], key=lambda c: c.map(order) if c.name == "benchmark" else c,
        kind="stable").reset_index(drop=True)
    return frame[list(results_schema.columns)]


def _results(stage: Stage, eval_scores: pd.DataFrame) -> StageResult:
    cfg, dataset = stage.cfg, str(stage.context.partition_key)
    sizes = {k: v.parameters for k, v in cfg.model_sizes.items()}
    frame = results_frame(eval_scores)
    lines = headline(frame, heldout_name(dataset))
    table, (png, axes) = results_markdown(frame, sizes), accuracy_plot(frame, sizes, note=lines)
    primary = primary_comparisons(frame, cfg.evaluation.primary.method, cfg.evaluation.primary.against)
    stage.log.info(f"results for {dataset}: {frame['model_size'].nunique()} model size(s), "
                   f"{frame['method'].nunique()} methods, {frame['benchmark'].nunique()} benchmarks")
    # Its own run, not an asset run: one per dataset, tagged as the report MLflow users look for.
    with stage.mlflow.start_run(f"results [{dataset}]", {"crv.dataset": dataset, "crv.profile": cfg.name,
                                                          "crv.report": "results_table",
                                                          "dagster.run_id": stage.context.run.run_id,
                                                          "dagster.asset": "results"}) as report:
        report.log_text(table, "results.md")
        report.log_image_bytes(png, "accuracy_vs_size.png")
        report.log_text(frame.to_csv(index=False), "results.csv")
        report.log_text(primary_markdown(primary), "primary_comparison.md")
    return StageResult(frame, metadata={
        "headline": dg.MetadataValue.md("\n".join(f"- {line}" for line in lines) or "_(no SFT and base scores yet)_"),
        "results": dg.MetadataValue.md(table),
        "primary_comparison": dg.MetadataValue.md(primary_markdown(primary)),
        "accuracy_pct_vs_size": image(png, "accuracy (%) against model size, 95% intervals"),
        "accuracy_plot_axes": dg.MetadataValue.json(axes),
        "model_sizes": dg.MetadataValue.json(sorted(frame["model_size"].unique().tolist())),
        "model_sizes_not_yet_evaluated": dg.MetadataValue.json(sorted(set(cfg.model_sizes) - set(frame["model_size"]))),
    }, link=report.url)
