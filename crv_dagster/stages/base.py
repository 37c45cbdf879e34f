"""What a stage gets and what it gives back, without Dagster.

A stage is the logic of one asset: a plain module under ``crv_dagster.stages`` with ``run(stage,
**inputs) -> StageResult`` and ``reads(profile) -> dict``. Everything a stage reaches outside its
inputs comes in through ``Stage``: the profile, the partition, a log, the MLflow run the Dagster
layer opened for it, and, for the stages that need them, a way to open runs of their own, to launch
training and to read an upstream asset's last metadata. Its metadata are plain values (``Markdown``,
``Json``, ``Url``, ``FilePath`` or numbers and strings) that the Dagster layer turns into Dagster's.
A stage with checks names them in ``CHECKS`` (name: description) and returns their outcomes from
``check(frame, profile)`` as ``CheckResult``s.

Nothing here imports the Dagster layer: the code an asset runs is what its stage module imports
(``code_digest``), and that closure is its code version.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.partition_keys import PartitionKey

MLFLOW_LINK = "mlflow_run"  # the metadata key of the link to an asset's MLflow run, on every asset


class Markdown(str):
    """Metadata shown as Markdown."""


class Url(str):
    """Metadata shown as a link."""


class FilePath(str):
    """Metadata shown as a file path."""


@dataclass(frozen=True)
class Json:
    """Metadata shown as JSON."""

    value: Any


class Log(Protocol):
    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...


class Run(Protocol):
    """An open MLflow run (``mlflow_run.TrackedRun``)."""

    url: str
    run_id: str

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def log_image_bytes(self, png: bytes, artifact_file: str) -> None: ...


class Tracking(Protocol):
    """MLflow runs for this materialisation, beyond the one a stage is handed."""

    tracking_uri: str

    def asset_run(self, extra_tags: Mapping[str, Any] | None = None) -> AbstractContextManager[Run]: ...

    def start_run(self, run_name: str, tags: Mapping[str, Any]) -> AbstractContextManager[Run]: ...

    def scores_view_url(self) -> str | None: ...


@dataclass(kw_only=True)
class Stage:
    profile: Profile
    partition: str  # the partition key as Dagster writes it
    log: Log
    tracking: Tracking
    run: Run | None = None  # None for a stage that opens its own runs
    run_id: str = ""  # the Dagster run's id, for the tags of a report run
    run_job: Callable[[Any], list] | None = None  # starts a training job (training.launch.JobRunner)
    upstream_metadata: Callable[[str], dict] = field(default=lambda asset: {})

    @property
    def key(self) -> PartitionKey:
        dataset, model_size = self.partition.split("|")
        return PartitionKey(dataset, model_size)


@dataclass(kw_only=True)
class CheckResult:
    """The outcome of one of an asset's checks (a warning when it fails: no check stops a run)."""

    name: str
    passed: bool
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class StageResult:
    frame: pd.DataFrame
    metrics: dict[str, Any] = field(default_factory=dict)  # numbers: metadata and MLflow metrics (None: left out)
    metadata: dict[str, Any] = field(default_factory=dict)  # metadata only: Json, Markdown, Url, FilePath, text
    params: dict[str, Any] = field(default_factory=dict)  # MLflow parameters
    link: str | None = None  # the MLflow page the asset links to, for a stage with its own runs
    # Tables stored beside the asset's own, by name, in the same partition (eval_scores' per-problem
    # eval_details): detail no asset reads, written by the IO manager with the asset's table.
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def run_links(links: dict[str, str]) -> dict[str, Url]:
    """Links to a stage's own runs, one metadata entry each, under ``MLFLOW_LINK/<name>``."""
    return {f"{MLFLOW_LINK}/{name}": Url(url) for name, url in links.items()}
