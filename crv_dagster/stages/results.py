"""``results``: one dataset's comparison across model sizes: every method x benchmark with its
interval, pooled over seeds, the paper-shaped table and the accuracy-vs-size plot."""

from __future__ import annotations

import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.evaluation.aggregate import pool_seeds, primary_comparisons
from crv_dagster.evaluation.benchmarks import heldout_name
from crv_dagster.evaluation.report import accuracy_plot, headline, primary_markdown, results_markdown
from crv_dagster.schemas import results_schema
from crv_dagster.stages.base import Json, Markdown, Stage, StageResult
from crv_dagster.stages.display import image


def reads(profile: Profile) -> dict:
    return {"students": {s: c.parameters for s, c in profile.model_sizes.items()},
            "primary": profile.evaluation.primary.model_dump()}


def results_frame(eval_scores: pd.DataFrame) -> pd.DataFrame:
    """``results``' table: the scores pooled over seeds, by size and method, with the benchmarks in
    the order eval_scores has them (the held-out split, then the profile's), so that both assets'
    tables read alike (sorted by name, arith_bench came before arith_heldout here only)."""
    order = {bench: i for i, bench in enumerate(dict.fromkeys(eval_scores["benchmark"]))}
    frame = pool_seeds(eval_scores).sort_values(
        ["model_size", "method", "benchmark"], key=lambda c: c.map(order) if c.name == "benchmark" else c,
        kind="stable").reset_index(drop=True)
    return frame[list(results_schema.columns)]


def run(stage: Stage, eval_scores: pd.DataFrame) -> StageResult:
    cfg, dataset = stage.profile, stage.partition
    sizes = {k: v.parameters for k, v in cfg.model_sizes.items()}
    frame = results_frame(eval_scores)
    lines = headline(frame, heldout_name(dataset))
    table, (png, axes) = results_markdown(frame, sizes), accuracy_plot(frame, sizes, note=lines)
    primary = primary_comparisons(frame, cfg.evaluation.primary.method, cfg.evaluation.primary.against)
    stage.log.info(f"results for {dataset}: {frame['model_size'].nunique()} model size(s), "
                   f"{frame['method'].nunique()} methods, {frame['benchmark'].nunique()} benchmarks")
    # Its own run, not an asset run: one per dataset, tagged as the report MLflow users look for.
    with stage.tracking.start_run(f"results [{dataset}]", {"crv.dataset": dataset, "crv.profile": cfg.name,
                                                          "crv.report": "results_table",
                                                          "dagster.run_id": stage.run_id,
                                                          "dagster.asset": "results"}) as report:
        report.log_text(table, "results.md")
        report.log_image_bytes(png, "accuracy_vs_size.png")
        report.log_text(frame.to_csv(index=False), "results.csv")
        report.log_text(primary_markdown(primary), "primary_comparison.md")
    return StageResult(frame=frame, metadata={
        "headline": Markdown("\n".join(f"- {line}" for line in lines) or "_(no SFT and base scores yet)_"),
        "results": Markdown(table),
        "primary_comparison": Markdown(primary_markdown(primary)),
        "accuracy_pct_vs_size": image(png, "accuracy (%) against model size, 95% intervals"),
        "accuracy_plot_axes": Json(axes),
        "model_sizes": Json(sorted(frame["model_size"].unique().tolist())),
        "model_sizes_not_yet_evaluated": Json(sorted(set(cfg.model_sizes) - set(frame["model_size"]))),
    }, link=report.url)
