"""Training jobs run through Dagster Pipes: the runner ``training.launch`` hands its job to.

A local launch runs the job's command as a Pipes subprocess; a Kubernetes launch runs it in a pod
(``kubernetes.py``). Either way the job's messages come back through Pipes.
"""

from __future__ import annotations

import shlex
from functools import partial

import dagster as dg
from dagster._core.errors import DagsterPipesExecutionError  # what a failed Pipes process raises

from crv_dagster.config import PROJECT_ROOT, Profile
from crv_dagster.partition_keys import PartitionKey
from crv_dagster.training.launch import JobRequest, JobRunner


def _run(context: dg.AssetExecutionContext, profile: Profile, key: PartitionKey, request: JobRequest) -> list:
    if request.launch.launcher == "kubernetes":
        from crv_dagster.orchestration.kubernetes import run_pod

        return run_pod(context, profile, key, request.launch, request.job_file, request.env, request.extras)
    try:
        invocation = dg.PipesSubprocessClient(cwd=str(PROJECT_ROOT)).run(
            context=context, command=request.command, env=request.env, extras=request.extras)
    except DagsterPipesExecutionError as err:
        # The job's own traceback is in the step's output above; say how to run it again by hand.
        raise RuntimeError(f"the training job failed ({err}); it prints its error above. Runs it finished are "
                           f"kept. To run it by hand: cd {PROJECT_ROOT} && {shlex.join(request.command)}") from err
    return list(invocation.get_custom_messages())


def job_runner(context: dg.AssetExecutionContext, profile: Profile, key: PartitionKey) -> JobRunner:
    return partial(_run, context, profile, key)
