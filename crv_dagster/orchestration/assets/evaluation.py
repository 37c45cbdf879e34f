"""Evaluation: ``eval_scores`` of every model of one partition and seed (the base student, the SFT
variants, CogPO and its baselines), and ``results``, one dataset's scores of every size pooled over seeds."""

import json

import dagster as dg
import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.evaluation.aggregate import compare_with, pool_seeds
from crv_dagster.evaluation.benchmarks import benchmark_sources, evaluation_sets
from crv_dagster.evaluation.report import accuracy_plot, results_markdown
from crv_dagster.evaluation.scoring import generate_answers, summarize
from crv_dagster.factory import build_backend, code_sandbox, student_base_model
from crv_dagster.orchestration.memo import reused_table, table_output
from crv_dagster.orchestration.metadata import image, markdown_table
from crv_dagster.orchestration.partitions import by_dataset, dataset_partitions, partition_of
from crv_dagster.orchestration.resources import ProfileResource
from crv_dagster.orchestration.stage import MLFLOW_LINK
from crv_dagster.orchestration.tracking import MlflowTracking
from crv_dagster.orchestration.types import table_asset_args
from crv_dagster.schemas import eval_scores_schema, results_schema
from crv_dagster.storage import table_path, write_table
from crv_dagster.versions import AssetReads, backend_identity, students
from crv_dagster.vocabulary import BASE, COGPO

GROUP = "evaluation"
_REPORT = ("crv_dagster.evaluation.aggregate", "crv_dagster.evaluation.report")
READS = {
    "eval_scores": AssetReads(
        (__name__, "crv_dagster.evaluation.scoring", "crv_dagster.evaluation.benchmarks", "crv_dagster.factory",
         *_REPORT),
        lambda p: {"evaluation": p.evaluation.model_dump(mode="json"), "seeds": p.seeds,
                   "backend": backend_identity(p, p.evaluation.backend), "students": students(p),
                   "eval_fraction": {n: d.eval_fraction for n, d in p.datasets.items()}}),
    "results": AssetReads((__name__, *_REPORT),
                          lambda p: {"students": {s: c.parameters for s, c in p.model_sizes.items()}}),
}


def _crv_params(rewritten: pd.DataFrame, pairs: pd.DataFrame) -> dict:
    params = {f"crv.action_{k}": int(v) for k, v in rewritten["action"].value_counts().items()}
    params["crv.num_passed"] = int(rewritten["passed"].sum())
    params.update({f"pairs_{k}": int(v) for k, v in pairs["pair_type"].value_counts().items()})
    return params


def build_evaluation_assets(partitions: dg.PartitionsDefinition, profile_: Profile) -> list[dg.AssetsDefinition]:
    tables_dir = profile_.artifacts_dir / "tables"

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
                    rewritten_cots: pd.DataFrame, preference_pairs: pd.DataFrame) -> dg.Output:
        if (reused := reused_table(context, tables_dir)) is not None:
            return reused
        cfg = profile.profile
        key = partition_of(context)
        evaluation = cfg.evaluation
        if evaluation.backend is None:
            raise ValueError(f"profile '{cfg.name}': evaluation.backend is not set (a backend whose model is 'student')")
        base = student_base_model(cfg, key.model_size)
        models = [(BASE, seed, base) for seed in cfg.seeds]
        models += [(r.method, int(r.seed), r.path) for r in pd.concat([sft_model, cogpo_model]).itertuples()]
        benchmarks = evaluation_sets(cfg, key.dataset, problems)
        if not benchmarks:
            raise ValueError(f"profile '{cfg.name}': nothing to evaluate for {key.dataset}: its held-out split is "
                             "empty (datasets.<name>.eval_fraction, evaluation.heldout) and evaluation.benchmarks "
                             "gives no problems")
        protocols = {name: evaluation.protocol_for(name) for name in benchmarks}
        protocol = evaluation.protocol.model_dump()
        shared_params = {**{f"eval.{k}": v for k, v in protocol.items()},
                         **{f"eval.{name}.{k}": v for name, p in protocols.items()
                            for k, v in p.model_dump().items() if v != protocol[k]},
                         **{f"beta_{t}": v for t, v in cfg.training.pairs.betas.model_dump().items()},
                         **_crv_params(rewritten_cots, preference_pairs),
                         "finetuning": cfg.training_for(key.model_size).finetuning}
        sandbox = (code_sandbox(cfg.sandbox)
                   if any("tests" in f and f["tests"].notna().any() for f in benchmarks.values()) else None)
        details, summaries, links = [], [], {}
        for method, seed, path in models:
            with mlflow.asset_run(context, cfg, extra_tags={"crv.method": method, "crv.seed": seed,
                                                            "crv.report": "score"}) as run:
                with build_backend(cfg, evaluation.backend, model_path=path) as backend:
                    method_details = pd.concat(
                        [generate_answers(backend, method, name, frame, protocols[name], seed=seed,
                                          sandbox=sandbox)
                         for name, frame in benchmarks.items()], ignore_index=True)
                summary = summarize(method_details)
                run.log_params({**shared_params, "model_path": path, "method": method, "seed": seed,
                                "model_size": key.model_size, "dataset": key.dataset})
                run.log_metrics({f"eval/{r.benchmark}/{field}": getattr(r, field) for r in summary.itertuples()
                                 for field in ("accuracy", "ci_low", "ci_high", "no_answer_share", "truncated_share",
                                               "mean_response_tokens")})
                run.log_metrics({f"eval/{r.benchmark}/cons_at_n": r.cons_at_n for r in summary.itertuples()
                                 if r.cons_at_n is not None and not pd.isna(r.cons_at_n)})
                run.log_metrics({"eval/mean/accuracy": float(summary["accuracy"].mean())})
                context.log.info(f"{method} (seed {seed}): "
                                 + ", ".join(f"{r.benchmark} {100 * r.accuracy:.1f}%" for r in summary.itertuples())
                                 + f" ({backend.stats.as_metadata('eval')})")
            links[f"{MLFLOW_LINK}/{method}/seed-{seed}"] = dg.MetadataValue.url(run.url)
            details.append(method_details)
            summaries.append(summary.assign(model_path=path))
        scores = compare_with(pd.concat(summaries, ignore_index=True), COGPO)
        scores["model_size"], scores["dataset"] = key.model_size, key.dataset
        scores["protocol"] = [json.dumps(protocols[b].model_dump(), sort_keys=True) for b in scores["benchmark"]]
        sources = benchmark_sources(cfg, key.dataset)
        scores["benchmark_source"] = [sources[b] for b in scores["benchmark"]]
        scores = scores[list(eval_scores_schema.columns)]

        detail_path = table_path(tables_dir, "eval_details", str(context.partition_key))
        write_table(pd.concat(details, ignore_index=True), detail_path)
        pooled = pool_seeds(scores)
        table = results_markdown(pooled, {k: v.parameters for k, v in cfg.model_sizes.items()})
        # The link opens the runs table on this experiment's score runs, one per model and seed.
        view = mlflow.scores_view_url()
        return table_output(scores, {
            "dagster/row_count": len(scores),
            MLFLOW_LINK: dg.MetadataValue.url(view) if view else next(iter(links.values())), **links,
            "results": dg.MetadataValue.md(table),
            "protocol": dg.MetadataValue.json(protocol),
            "protocol_by_benchmark": dg.MetadataValue.json({n: p.model_dump() for n, p in protocols.items()}),
            "benchmark_sources": dg.MetadataValue.json({n: sources[n] for n in benchmarks}),
            "seeds": dg.MetadataValue.json(list(cfg.seeds)),
            "per_problem_results": dg.MetadataValue.path(str(detail_path)),
            "scores": markdown_table(scores, ["method", "seed", "benchmark", "accuracy", "cons_at_n", "ci_low", "ci_high",
                                              "p_vs_cogpo", "p_vs_cogpo_holm", "num_problems", "no_answer_share",
                                              "truncated_share"],
                                     rows=80),
        })

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
                eval_scores: pd.DataFrame) -> dg.Output:
        if (reused := reused_table(context, tables_dir)) is not None:
            return reused
        cfg = profile.profile
        dataset = str(context.partition_key)
        sizes = {k: v.parameters for k, v in cfg.model_sizes.items()}
        frame = pool_seeds(eval_scores)
        frame = frame.sort_values(["model_size", "method", "benchmark"], kind="stable").reset_index(drop=True)
        frame = frame[list(results_schema.columns)]
        table, png = results_markdown(frame, sizes), accuracy_plot(frame, sizes)
        context.log.info(f"results for {dataset}: {frame['model_size'].nunique()} model size(s), "
                         f"{frame['method'].nunique()} methods, {frame['benchmark'].nunique()} benchmarks")
        with mlflow.start_run(f"results [{dataset}]", {"crv.dataset": dataset, "crv.profile": cfg.name,
                                                      "crv.report": "results_table",
                                                      "dagster.run_id": context.run.run_id,
                                                      "dagster.asset": "results"}) as report:
            report.log_text(table, "results.md")
            report.log_image_bytes(png, "accuracy_vs_size.png")
            report.log_text(frame.to_csv(index=False), "results.csv")
        return table_output(frame, {
            "dagster/row_count": len(frame),
            "results": dg.MetadataValue.md(table),
            "accuracy_pct_vs_size": image(png, "accuracy (%) against model size, 95% intervals"),
            "model_sizes": dg.MetadataValue.json(sorted(frame["model_size"].unique().tolist())),
            MLFLOW_LINK: dg.MetadataValue.url(report.url),
        })

    return [eval_scores, results]
