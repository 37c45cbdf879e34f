"""What every table asset does the same way around its stage (``crv_dagster.stages``).

An asset hands its stage module to ``table_stage``, which runs it with a ``Stage`` (the profile,
the partition, the log, the open MLflow run) and does the rest, once, the same way for every asset:
it reuses the stored result when nothing the asset depends on changed, opens the asset's MLflow
run, logs the result's metrics and parameters there, and returns the table with its metrics, its
row count, its content's data version and the link to the run under one metadata key
(``MLFLOW_LINK``); then the asset's checks, on a reused table too. The stage's plain metadata
values become Dagster's here, and the tables it returns beside its own go to the IO manager with
its table.

Assets that open several MLflow runs of their own (one per trained or scored model) ask for
``own_runs``: their stage gets no run of ``table_stage``'s, opens its runs through
``stage.tracking``, and names the one the link goes to in ``StageResult.link``. Model assets
(``models=True``) are reused only while every checkpoint's weights are unchanged, and their data
version covers them.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Iterator, Mapping

import dagster as dg
import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.llm.progress import reporting_to
from crv_dagster.orchestration.memo import models_output, reused_models, reused_table, table_output
from crv_dagster.orchestration.metadata import latest_metadata
from crv_dagster.orchestration.partitions import partition_of
from crv_dagster.orchestration.pipes_launch import job_runner
from crv_dagster.orchestration.resources import ProfileResource
from crv_dagster.orchestration.tracking import MlflowTracking
from crv_dagster.stages.base import MLFLOW_LINK, CheckResult, FilePath, Json, Markdown, Stage, Url
from crv_dagster.versions import TABLES_BESIDE_ATTR


def dagster_value(value: Any) -> Any:
    """A stage's plain metadata value as Dagster shows it."""
    if isinstance(value, Markdown):
        return dg.MetadataValue.md(str(value))
    if isinstance(value, Url):
        return dg.MetadataValue.url(str(value))
    if isinstance(value, FilePath):
        return dg.MetadataValue.path(str(value))
    if isinstance(value, Json):
        return dg.MetadataValue.json(value.value)
    return value


def dagster_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {key: dagster_value(value) for key, value in metadata.items()}


def dagster_check(check: CheckResult) -> dg.AssetCheckResult:
    # A failed check warns: the data it flags is kept out of use by the stages themselves.
    return dg.AssetCheckResult(check_name=check.name, passed=check.passed, severity=dg.AssetCheckSeverity.WARN,
                               description=check.description, metadata=dagster_metadata(check.metadata))


@dataclass
class AssetTracking:
    """The tracking resource bound to one materialisation, as a stage's ``Tracking``."""

    mlflow: MlflowTracking
    context: dg.AssetExecutionContext
    profile: Profile

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.tracking_uri

    def asset_run(self, extra_tags: Mapping[str, Any] | None = None):
        return self.mlflow.asset_run(self.context, self.profile, extra_tags)

    def start_run(self, run_name: str, tags: Mapping[str, Any]):
        return self.mlflow.start_run(run_name, tags)

    def scores_view_url(self) -> str | None:
        return self.mlflow.scores_view_url()


def _stage(context: dg.AssetExecutionContext, cfg: Profile, mlflow: MlflowTracking, run=None) -> Stage:
    multi = isinstance(context.partition_key, dg.MultiPartitionKey)
    partition = str(partition_of(context)) if multi else context.partition_key
    return Stage(profile=cfg, partition=partition, log=context.log, tracking=AssetTracking(mlflow, context, cfg),
                 run=run, run_id=context.run.run_id,
                 run_job=job_runner(context, cfg, partition_of(context)) if multi else None,
                 upstream_metadata=lambda asset: latest_metadata(context, asset))


def table_stage(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                stage: ModuleType, inputs: Mapping[str, pd.DataFrame], reuse: bool = True, own_runs: bool = False,
                models: bool = False) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """The asset's output (reused, or computed by ``stage.run`` on ``inputs``), then its checks
    (``stage.check``, where the stage has checks). ``reuse=False`` for an asset that is always
    computed again (``problems``: reading its source is cheap, and a changed file must be seen)."""
    cfg = profile.profile
    tables_dir = cfg.artifacts_dir / "tables"
    reused = (reused_models if models else reused_table)(context, tables_dir) if reuse else None
    if reused is not None:
        frame = reused.value
        yield reused
    else:
        if own_runs:
            with reporting_to(context.log.info):
                result = stage.run(_stage(context, cfg, mlflow), **inputs)
            link = result.link
        else:
            with mlflow.asset_run(context, cfg) as run, reporting_to(context.log.info):
                result = stage.run(_stage(context, cfg, mlflow, run), **inputs)
                run.log_params(result.params)
                run.log_metrics({k: v for k, v in result.metrics.items() if isinstance(v, (int, float))})
            link = run.url
        frame = result.frame
        metadata = {**{k: v for k, v in result.metrics.items() if v is not None}, **dagster_metadata(result.metadata),
                    "dagster/row_count": len(frame)}
        if link:
            metadata[MLFLOW_LINK] = dg.MetadataValue.url(link)
        output = (models_output if models else table_output)(frame, metadata)
        if result.tables:  # after the version is taken: the IO manager writes and removes them
            frame.attrs[TABLES_BESIDE_ATTR] = result.tables
        yield output
    for check in stage.check(frame, cfg) if hasattr(stage, "check") else ():
        yield dagster_check(check)
