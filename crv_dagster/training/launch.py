"""One training launch, as the model stages see it: plan in, results out, no Dagster.

``sft_model`` and ``cogpo_model`` plan their runs (``training/plan.py``: a method and a seed each);
``launch_training`` opens an MLflow run for each, writes the ``TrainingJob`` and its data under
``<artifacts>/launch/<asset>/<dataset>/<size>/``, and hands the job to a runner the caller passes
in: the Dagster layer's (``orchestration/pipes_launch.py``) starts ``crv_dagster.training.job`` as
a local process (``accelerate launch`` with the profile's process count and config file, or one
plain process) or as a Kubernetes pod, through Dagster Pipes. The job reports each finished run back
as a message; the stages record those results.

A launch that fails leaves its finished runs' checkpoints in place, marked with what they were
trained from: materialising the asset again trains only the rest.
"""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from crv_dagster.config import CONFIG_DIR, LaunchConfig, Profile, TrainingConfig
from crv_dagster.training.job import LAUNCHER_PID_ENV, MESSAGE_KIND, RunSpec, TrainingJob, run_digest, stored_result
from crv_dagster.training.result import TrainingResult
from crv_dagster.training.launch_command import free_port, launch_command
from crv_dagster.training.plan import PlannedRun
from crv_dagster.versions import table_version


@dataclass(frozen=True)
class JobRequest:
    """What a runner starts: the job file, and for a local launch its command line and environment."""

    launch: LaunchConfig
    job_file: Path
    command: list[str]  # the local command; a pod builds its own for the image
    env: dict[str, str]
    extras: dict[str, str]


JobRunner = Callable[[JobRequest], list]  # starts the job, waits, returns its messages


@dataclass
class LaunchedRun:
    planned: PlannedRun
    run: Any  # the run's open MLflow run (mlflow_run.TrackedRun)
    result: TrainingResult
    reused: bool  # trained by an earlier launch that did not finish the whole job


def launch_folder(profile: Profile, asset: str, dataset: str, model_size: str) -> Path:
    return profile.artifacts_dir / "launch" / asset / dataset / model_size


def _write_data(folder: Path, planned: list[PlannedRun]) -> list[tuple[str, str]]:
    """Each distinct table once, as Parquet the ranks read, named by its content version: the job
    hands one reference pass to every run on the same checkpoint and the same file. Returns each
    run's (path, version); a table shared by several runs (the pairs of every method and seed) is
    hashed once."""
    versions: dict[int, str] = {}
    out = []
    for item in planned:
        if id(item.data) not in versions:
            versions[id(item.data)] = table_version(item.data)
            item.data.to_parquet(folder / f"{item.kind}-{versions[id(item.data)]}.parquet", index=False)
        version = versions[id(item.data)]
        out.append((str(folder / f"{item.kind}-{version}.parquet"), version))
    return out


def _results(messages: list, planned: list[PlannedRun]) -> list[dict]:
    """The job's reports by run, in the planned order, each ``result`` a ``TrainingResult`` (with its
    curves, read from the run's result file); a run the job never reported is an error."""
    by_index = {m["index"]: m for m in messages if isinstance(m, dict) and m.get("kind") == MESSAGE_KIND}
    missing = [f"{p.method} (seed {p.seed})" for i, p in enumerate(planned) if i not in by_index]
    if missing:
        raise RuntimeError(f"the training job ended without reporting {', '.join(missing)}")
    out = []
    for index, run in enumerate(planned):
        message = dict(by_index[index])
        result = TrainingResult.from_json(message["result"])
        if "history" not in message["result"]:  # the curves travel in the run's result file
            result.history = stored_result(run.out_dir).history
        out.append({**message, "result": result})
    return out


def _replay(run, history: list[dict]) -> None:
    """A reused run's curves into this launch's MLflow run, step by step, as the job logged them."""
    for point in history:
        run.log_metrics({k: v for k, v in point.items() if k != "step"}, step=int(point["step"]))


def _request(launch: LaunchConfig, job_file: Path) -> JobRequest:
    env = {"TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    command: list[str] = []
    if launch.launcher != "kubernetes":
        env[LAUNCHER_PID_ENV] = str(os.getpid())
        command = launch_command(launch, job_file, CONFIG_DIR, port=free_port() if launch.num_processes > 1 else None)
    return JobRequest(launch, job_file, command, env, {"job_file": str(job_file)})


@contextmanager
def launch_training(stage, asset: str, training: TrainingConfig,
                    planned: list[PlannedRun]) -> Iterator[list[LaunchedRun]]:
    """Trains ``planned`` in one launch and yields their results while their MLflow runs are open
    (the caller logs what it adds); the runs end FINISHED, or FAILED if anything raises. ``stage``
    (a ``stages.base.Stage``) gives the profile, partition, log, runs and the job runner."""
    profile, key = stage.profile, stage.key
    folder = launch_folder(profile, asset, key.dataset, key.model_size)
    # Scratch left by a launch that died is not trusted; the checkpoints it finished are kept elsewhere.
    shutil.rmtree(folder / "work", ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        runs = [stack.enter_context(stage.tracking.asset_run({"crv.method": p.method, "crv.seed": p.seed}))
                for p in planned]
        for run, item in zip(runs, planned):
            run.log_params({**item.params, "launch.launcher": training.launch.launcher,
                            "launch.num_processes": training.launch.num_processes,
                            "launch.accelerate_config": training.launch.accelerate_config})
        specs = [RunSpec(kind=p.kind, method=p.method, seed=p.seed, base_model=p.base_model, data=path,
                         out_dir=str(p.out_dir), mlflow_run_id=run.run_id,
                         digest=run_digest(p.kind, p.method, p.seed, p.base_model, version, training))
                 for p, run, (path, version) in zip(planned, runs, _write_data(folder, planned))]
        job_file = TrainingJob(training=training, runs=specs, work_dir=str(folder / "work"),
                               tracking_uri=stage.tracking.tracking_uri).write(folder / "job.json")
        stage.log.info(f"training {len(specs)} run(s) in {training.launch.num_processes} process(es) "
                       f"({training.launch.launcher}): {job_file}")
        messages = stage.run_job(_request(training.launch, job_file))
        launched = []
        for item, run, message in zip(planned, runs, _results(messages, planned)):
            if message["reused"]:
                stage.log.info(f"{item.method} (seed {item.seed}): trained by an earlier launch, kept")
                _replay(run, message["result"].history)
            launched.append(LaunchedRun(item, run, message["result"], message["reused"]))
        yield launched
    # The pair datasets and TRL's reference caches of a finished job are not needed again.
    shutil.rmtree(folder / "work", ignore_errors=True)
