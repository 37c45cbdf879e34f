"""MLflow tracking: one MLflow run per asset materialisation.

A resource of our own rather than dagster-mlflow, which leaves runs RUNNING after a success.
Runs are tagged so the MLflow compare view can line up datasets, model sizes and methods, and
they are always ended: FINISHED on success, FAILED when the asset raises.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import dagster as dg

from crv_dagster.evaluation.runs import MEAN_ACCURACY, SCORE_GROUP_PARAM, score_metric
from crv_dagster.mlflow_run import TrackedRun, ensure_sqlite_store

EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
SHARED_VIEW_TAG = "mlflow.sharedViewState."  # + key: a runs-table view the UI opens from a link
# What a score run shows in the runs table: its name (method, seed, partition) and the mean accuracy.
# No parameter columns: a group row has no single value for them and shows "-".
SCORE_COLUMNS = ["attributes.`Run Name`", f"metrics.`{MEAN_ACCURACY}`"]
SCORE_FILTER = "tags.`crv.report` = 'score'"
# The seeds of one method and size are one group, shown as their mean (score runs carry their group
# as one parameter: evaluation.runs.score_group).
SCORE_GROUPS = {"aggregateFunction": "average", "groupByKeys": [{"mode": "param", "groupByData": SCORE_GROUP_PARAM}]}


def scores_view(benchmarks: list[str]) -> dict:
    """The runs-table view of the score runs, as the MLflow UI stores a shared view: seeds grouped
    by method and size, and each benchmark's accuracy with its 95% interval as columns, best first."""
    per_benchmark = [f"metrics.`{score_metric(m, b)}`" for b in sorted(benchmarks)
                     for m in ("accuracy", "ci_low", "ci_high")]
    return {"searchFilter": SCORE_FILTER, "orderByKey": f"metrics.`{MEAN_ACCURACY}`", "orderByAsc": False,
            "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
            "selectedColumns": [*SCORE_COLUMNS, *per_benchmark],
            "groupBy": SCORE_GROUPS, "groupsExpanded": {}, "useGroupedValuesInCharts": True,
            "runsExpanded": {}, "runsPinned": [], "runsHidden": [], "viewMaximized": False, "runListHidden": False}


class MlflowTracking(dg.ConfigurableResource):
    """Where runs go: any MLflow tracking URI; the profile defaults to SQLite under the artifacts root."""

    tracking_uri: str
    experiment: str
    ui_url: str = "http://127.0.0.1:5000"

    def _client(self):
        from mlflow.tracking import MlflowClient

        if self.tracking_uri.startswith("sqlite:///"):
            ensure_sqlite_store(Path(self.tracking_uri[len("sqlite:///"):]))
        return MlflowClient(tracking_uri=self.tracking_uri)

    def _experiment_id(self, client) -> str:
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        artifact_location = None
        if self.tracking_uri.startswith("sqlite:///"):
            db_dir = Path(self.tracking_uri[len("sqlite:///"):]).parent
            artifact_location = (db_dir / "mlflow-artifacts").resolve().as_uri()
        try:
            # The kind tag makes the UI open on its model-training runs table, not the GenAI view.
            return client.create_experiment(self.experiment, artifact_location=artifact_location,
                                            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except Exception:  # another process created it first
            found = client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    @contextmanager
    def start_run(self, run_name: str, tags: Mapping[str, Any]) -> Iterator[TrackedRun]:
        client = self._client()
        experiment_id = self._experiment_id(client)
        run = client.create_run(experiment_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()})
        run_id = run.info.run_id
        tracked = TrackedRun(client, run_id, experiment_id,
                             f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}")
        try:
            yield tracked
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")

    @contextmanager
    def asset_run(self, context: dg.AssetExecutionContext, profile,
                  extra_tags: Mapping[str, Any] | None = None) -> Iterator[TrackedRun]:
        """A run for this asset materialisation, tagged with what identifies it (``profile``:
        the experiment's ``Profile``)."""
        from crv_dagster.orchestration.recovery import tag_run_process

        tag_run_process(context)
        asset = context.asset_key.to_user_string()
        tags: dict[str, Any] = {
            "dagster.run_id": context.run.run_id,
            "dagster.asset": asset,
            "crv.profile": profile.name,
            "crv.config_hash": profile.config_hash(),
        }
        name = asset
        if context.has_partition_key:
            tags["dagster.partition"] = context.partition_key
            for dim, value in context.partition_key.keys_by_dimension.items():
                tags[f"crv.{dim}"] = value
            name = f"{asset} [{context.partition_key}]"
        tags.update(extra_tags or {})
        # Several runs per materialisation (one per method and seed): tell them apart by name.
        if "crv.seed" in tags:
            name = f"seed {tags['crv.seed']} · {name}"
        if "crv.method" in tags:
            name = f"{tags['crv.method']} · {name}"
        with self.start_run(name, tags) as run:
            yield run

    def scores_view_url(self) -> str | None:
        """A link to the experiment's runs table showing only the score runs (``scores_view``: seeds
        grouped by size and method, each benchmark's accuracy and interval); None before any run exists.

        The view is stored on the experiment as the UI's own shared view state (a tag), so the link
        needs no manual setup in the UI.
        """
        import json

        client = self._client()
        found = client.get_experiment_by_name(self.experiment)
        if found is None:
            return None
        runs = client.search_runs([found.experiment_id], SCORE_FILTER, max_results=5000)
        accuracy = score_metric("accuracy", "")
        benchmarks = {k[len(accuracy):] for r in runs for k in r.data.metrics
                      if k.startswith(accuracy) and k != MEAN_ACCURACY}
        key = "crv-scores"
        client.set_experiment_tag(found.experiment_id, SHARED_VIEW_TAG + key, json.dumps(scores_view(sorted(benchmarks))))
        if found.tags.get(EXPERIMENT_KIND_TAG) is None:
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        base = f"{self.ui_url.rstrip('/')}/#/experiments/{found.experiment_id}/runs"
        # Only the key: the UI ignores a shared view when the link also carries a filter of its own.
        return f"{base}?viewStateShareKey={key}"
