"""What every table asset does the same way around its stage's logic.

An asset body hands its stage's logic to ``table_stage`` as a function of a ``Stage`` (the profile,
the partition, the open MLflow run, the log) returning a ``StageResult``; ``table_stage`` does the
rest, once, the same way for every asset: it reuses the stored result when nothing the asset
depends on changed, opens the asset's MLflow run, logs the result's metrics and parameters there,
and returns the table with its metrics, its row count, its content's data version and the link to
the run under one metadata key (``MLFLOW_LINK``); then the asset's checks, on a reused table too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import dagster as dg
import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.mlflow_run import TrackedRun
from crv_dagster.orchestration.memo import reused_table, table_output
from crv_dagster.orchestration.partitions import PartitionKey, partition_of
from crv_dagster.orchestration.resources import ProfileResource
from crv_dagster.orchestration.tracking import MlflowTracking

MLFLOW_LINK = "mlflow_run"  # the metadata key of the link to an asset's MLflow run, on every asset


@dataclass
class Stage:
    context: dg.AssetExecutionContext
    cfg: Profile
    run: TrackedRun

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


Checks = Callable[[pd.DataFrame, Profile], Iterable[dg.AssetCheckResult]]


def mlflow_link(run: TrackedRun) -> dict[str, dg.MetadataValue]:
    return {MLFLOW_LINK: dg.MetadataValue.url(run.url)}


def table_stage(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                compute: Callable[[Stage], StageResult], checks: Checks | None = None,
                reuse: bool = True) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """The asset's output (reused, or computed by ``compute``), then its checks. ``reuse=False``
    for an asset that is always computed again (``problems``: reading its source is cheap, and a
    changed file must be seen)."""
    cfg = profile.profile
    reused = reused_table(context, cfg.artifacts_dir / "tables") if reuse else None
    if reused is not None:
        frame = reused.value
        yield reused
    else:
        with mlflow.asset_run(context, cfg) as run:
            result = compute(Stage(context, cfg, run))
            run.log_params(result.params)
            run.log_metrics({k: v for k, v in result.metrics.items() if isinstance(v, (int, float))})
        frame = result.frame
        metrics = {k: v for k, v in result.metrics.items() if v is not None}
        yield table_output(frame, {**metrics, **result.metadata, "dagster/row_count": len(frame), **mlflow_link(run)})
    for check in checks(frame, cfg) if checks else ():
        yield check
