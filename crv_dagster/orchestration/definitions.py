"""The one Definitions object: assets, resources and jobs for the active profile.

The profile (``CRV_PROFILE``, default ``demo``) fixes the partition values, so it is read when
the code location loads: ``defs`` is Dagster's lazy entry point, called by Dagster where it loads
the code location (the CLI, `dagster dev`, each step worker), not on import, so that importing this
module (a test building its own definitions) starts no watcher and recovers nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg

from crv_dagster.config import active_profile_path, load_profile_file
from crv_dagster.hub_access import require_hub_when_needed
from crv_dagster.orchestration.assets import build_assets
from crv_dagster.orchestration.console import quiet_libraries
from crv_dagster.orchestration.io_manager import ParquetIOManager
from crv_dagster.orchestration.partitions import build_partitions, dataset_partitions
from crv_dagster.orchestration.recovery import exit_with_parent, recover_on_load
from crv_dagster.orchestration.resources import ProfileResource
from crv_dagster.orchestration.tracking import MlflowTracking


def build_definitions(profile_file: str | Path, run: bool = False) -> dg.Definitions:
    """``run``: the definitions a run executes (the code location), not a check of the profile:
    refused when the profile needs the Hugging Face Hub while HF_HUB_OFFLINE turns it off."""
    profile = load_profile_file(profile_file)
    if run:
        require_hub_when_needed(profile)
    partitions = build_partitions(profile)
    tables_dir = str(profile.artifacts_dir / "tables")
    assets = build_assets(partitions, profile)
    pipeline = dg.define_asset_job(
        "crv_pipeline",
        selection=dg.AssetSelection.all() - dg.AssetSelection.assets("results"),
        partitions_def=partitions,
        description="Every stage of CRV + CogPO for one dataset x model size partition.",
    )
    comparison = dg.define_asset_job(
        "results_job",
        selection=dg.AssetSelection.assets("results"),
        partitions_def=dataset_partitions(profile),
        description="The comparison across model sizes of one dataset (after eval_scores of every size).",
    )
    executor = dg.in_process_executor if profile.orchestration.executor == "in_process" else dg.multiprocess_executor
    return dg.Definitions(
        assets=assets,
        jobs=[pipeline, comparison],
        executor=executor,
        resources={
            "profile": ProfileResource(path=str(Path(profile_file).resolve())),
            "io_manager": ParquetIOManager(base_dir=tables_dir),
            "mlflow": MlflowTracking(
                tracking_uri=profile.tracking_uri,
                experiment=profile.tracking.experiment,
                ui_url=profile.tracking.ui_url,
            ),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location: the active profile's definitions, and the housekeeping of a process that runs them."""
    loaded = build_definitions(active_profile_path(), run=True)
    exit_with_parent()  # a step worker stops when its run's process is killed (see recovery.py)
    quiet_libraries()
    # Dead runs of this instance free their pool slots before this process's run can wait on them.
    recover_on_load(loaded.resources["mlflow"].tracking_uri,
                    log=lambda line: print(f"crv-dagster: {line}", file=sys.stderr, flush=True))
    return loaded
