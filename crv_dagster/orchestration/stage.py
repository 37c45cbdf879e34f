"""What every table asset does the same way around its stage's logic.

An asset body hands its stage's logic to ``table_stage`` as a function of a ``Stage`` (the profile,
the partition, the open MLflow run, the log) returning a ``StageResult``; ``table_stage`` does the
rest, once, the same way for every asset: it reuses the stored result when nothing the asset
depends on changed, opens the asset's MLflow run, logs the result's metrics and parameters there,
and returns the table with its metrics, its row count, its content's data version and the link to
the run under one metadata key (``MLFLOW_LINK``); then the asset's checks, on a reused table too.

Assets that open several MLflow runs of their own (one per trained or scored model) ask for
``own_runs``: their stage gets no run of ``table_stage``'s, opens its runs through ``stage.mlflow``,
and names the one the link goes to in ``StageResult.link``. Model assets (``models=True``) are
reused only while every checkpoint's weights are unchanged, and their data version covers them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import dagster as dg
import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.llm.progress import reporting_to
from crv_dagster.mlflow_run import TrackedRun
from crv_dagster.orchestration.memo import models_output, reused_models, reused_table, table_output
from crv_dagster.orchestration.partitions import partition_of
from crv_dagster.partition_keys import PartitionKey
from crv_dagster.orchestration.resources import ProfileResource
from crv_dagster.orchestration.tracking import MlflowTracking

MLFLOW_LINK = "mlflow_run"  # the metadata key of the link to an asset's MLflow run, on every asset


@dataclass
class Stage:
    context: dg.AssetExecutionContext
    cfg: Profile
    run: TrackedRun | None  # None for a stage that opens its own runs
    mlflow: MlflowTracking

    @property
    def key(self) -> PartitionKey:
        return partition_of(self.context)

    @property
    def log(self):
        return self.context.log


@dataclass
class StageResult:
    frame: pd.DataFrame
    metrics: dict[str, Any] = field(default_factory=dict)  # numbers: metadata and MLflow metrics (None: left out)
    metadata: dict[str, Any] = field(default_factory=dict)  # metadata only: JSON, Markdown, images
    params: dict[str, Any] = field(default_factory=dict)  # MLflow parameters
    link: str | None = None  # the MLflow page the asset links to, for a stage with its own runs


Checks = Callable[[pd.DataFrame, Profile], Iterable[dg.AssetCheckResult]]


def run_links(links: dict[str, str]) -> dict[str, dg.MetadataValue]:
    """Links to a stage's own runs, one metadata entry each, under ``MLFLOW_LINK/<name>``."""
    return {f"{MLFLOW_LINK}/{name}": dg.MetadataValue.url(url) for name, url in links.items()}


def table_stage(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                compute: Callable[[Stage], StageResult], checks: Checks | None = None,
                reuse: bool = True, own_runs: bool = False, models: bool = False,
                ) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """The asset's output (reused, or computed by ``compute``), then its checks. ``reuse=False``
    for an asset that is always computed again (``problems``: reading its source is cheap, and a
    changed file must be seen)."""
    cfg = profile.profile
    tables_dir = cfg.artifacts_dir / "tables"
    reused = (reused_models if models else reused_table)(context, tables_dir) if reuse else None
    if reused is not None:
        frame = reused.value
        yield reused
    else:
        if own_runs:
            with reporting_to(context.log.info):
                result = compute(Stage(context, cfg, None, mlflow))
            link = result.link
        else:
            with mlflow.asset_run(context, cfg) as run, reporting_to(context.log.info):
                result = compute(Stage(context, cfg, run, mlflow))
                run.log_params(result.params)
                run.log_metrics({k: v for k, v in result.metrics.items() if isinstance(v, (int, float))})
            link = run.url
        frame = result.frame
        metadata = {**{k: v for k, v in result.metrics.items() if v is not None}, **result.metadata,
                    "dagster/row_count": len(frame)}
        if link:
            metadata[MLFLOW_LINK] = dg.MetadataValue.url(link)
        yield (models_output if models else table_output)(frame, metadata)
    for check in checks(frame, cfg) if checks else ():
        yield check
