"""Runs that die: step workers that stop with their run, and runs left behind marked failed.

A `dagster asset materialize` killed with SIGKILL (a closed terminal, a preempted job) cannot
clean up after itself: its step worker (a child process of the multiprocess executor) would run
on, the run would stay STARTED, its `gpu` pool slot would stay taken, and every later run in that
DAGSTER_HOME would wait for the slot. Two things prevent that:

- ``exit_with_parent`` runs in every step worker: when the process that launched it is gone, the
  step is interrupted (so its MLflow run ends FAILED) and the worker exits.
- ``recover`` finds runs still marked in progress whose process on this machine is gone, marks
  them failed, frees their pool slots and ends their MLflow runs as FAILED. It runs by itself
  wherever the definitions load (``recover_on_load``: `dagster asset materialize`, `dagster dev`, a
  backfill's runs), so a killed run never blocks the next one, however it is started;
  `python -m crv_dagster.orchestration.recovery` (`make recover`) runs it by hand.
- ``watch_pool_waits`` runs beside a run's process while its steps wait on the `gpu` pool: a holder
  that died meanwhile is recovered, and a step held up by a live run says so at INFO in its run's
  event log and on the terminal, naming the run that holds the slot and how to free it (Dagster
  itself says it only at DEBUG).

Each asset tags its run with the host and the pid of the run's process (``tag_run_process``),
which is what ``recover`` checks; on SQLite storage (one machine by construction) the pid of the
RUN_START event is used for runs that died before any asset started.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

HOST_TAG = "crv/host"
RUN_PID_TAG = "crv/run_pid"
STEP_PID_TAG = "crv/step_pid"
IN_PROGRESS = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)

_watchdog: threading.Thread | None = None
_pool_watch: threading.Thread | None = None


def _launcher_pid() -> int:
    """The pid of the process executing the run: a step worker's parent, else this process."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None else os.getpid()


def exit_with_parent(poll_s: float = 1.0, grace_s: float = 15.0) -> None:
    """In a multiprocess step worker: stop when the run's process dies.

    The worker interrupts itself (SIGINT: the step fails and context managers such as the MLflow
    run end), and exits for good after ``grace_s`` in case the step does not return.
    """
    import multiprocessing

    global _watchdog
    if multiprocessing.parent_process() is None or _watchdog is not None:
        return
    parent_pid = os.getppid()

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        print(f"crv-dagster: the run's process (pid {parent_pid}) is gone; stopping step worker {os.getpid()}",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(grace_s)
        os._exit(1)

    _watchdog = threading.Thread(target=watch, name="crv-exit-with-parent", daemon=True)
    _watchdog.start()


def tag_run_process(context: dg.AssetExecutionContext) -> None:
    """Record where the run executes, once per run, so that ``recover`` can tell if it died."""
    tags = context.run.tags
    if tags.get(HOST_TAG) == socket.gethostname() and RUN_PID_TAG in tags:
        return
    context.instance.add_run_tags(context.run.run_id, {
        HOST_TAG: socket.gethostname(), RUN_PID_TAG: str(_launcher_pid()), STEP_PID_TAG: str(os.getpid())})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes (its parent has not reaped it yet).
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _is_step_worker(pid: int) -> bool:
    """Whether ``pid`` is still a Python step worker (a pid can be reused once its process is gone:
    recovery never signals a process it cannot recognise)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            args = cmdline.read().decode(errors="replace").split("\0")
    except OSError:
        return False
    # Judged by the program and its entry point, not by any argument: a test run whose arguments
    # name a file "test_dagster_..." is no step worker.
    program = [Path(arg).name for arg in args[:2]]
    spawned = any(arg.startswith(("from multiprocessing.spawn import", "from multiprocessing.forkserver import"))
                  for arg in args)
    launched = any(name in ("dg", "dagster", "dagster-webserver", "dagster-daemon") for name in program) or \
        (len(args) > 2 and args[1] == "-m" and args[2].split(".")[0] in ("dagster", "dagster_dg_cli"))
    return any(name.startswith("python") for name in program) and (spawned or launched)


def _run_start_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.pid:
            return int(event.pid)
    return None


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    pid: int
    step_pid: int | None


def _local_pid(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int | None:
    """The pid of the process executing ``run`` on this machine; None when it is not known here
    (another machine's run, or one that has not started on a shared storage)."""
    tags = run.tags
    if RUN_PID_TAG in tags:
        return int(tags[RUN_PID_TAG]) if tags.get(HOST_TAG) == socket.gethostname() else None
    if "sqlite" in type(instance.run_storage).__name__.lower():  # one machine by construction
        return _run_start_pid(instance, run.run_id)
    return None


def find_dead_runs(instance: dg.DagsterInstance) -> list[DeadRun]:
    """Runs marked in progress whose process on this machine no longer exists."""
    dead = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=list(IN_PROGRESS))):
        run = record.dagster_run
        pid = _local_pid(instance, run)
        if pid is None:
            continue
        tags = run.tags
        if not _alive(pid):
            step = tags.get(STEP_PID_TAG)
            dead.append(DeadRun(run.run_id, pid, int(step) if step else None))
    return dead


def _end_mlflow_runs(tracking_uri: str, run_id: str) -> int:
    from mlflow.tracking import MlflowClient

    from crv_dagster.mlflow_run import ensure_sqlite_store

    if tracking_uri.startswith("sqlite:///"):
        from pathlib import Path

        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.exists():
            return 0
        ensure_sqlite_store(db)
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return 0
    runs = client.search_runs(experiments, f"tags.`dagster.run_id` = '{run_id}' and attributes.status = 'RUNNING'")
    for run in runs:
        client.set_terminated(run.info.run_id, "FAILED")
    return len(runs)


def recover(instance: dg.DagsterInstance, tracking_uri: str | None = None, log=print) -> list[str]:
    """Mark dead runs failed, free their pool slots, stop their leftover step workers and end their
    MLflow runs as FAILED. Returns the run ids recovered."""
    recovered = []
    for dead in find_dead_runs(instance):
        if dead.step_pid and dead.step_pid != dead.pid and _alive(dead.step_pid) and _is_step_worker(dead.step_pid):
            os.kill(dead.step_pid, signal.SIGTERM)  # a worker older than the exit-with-parent watch
        run = instance.get_run_by_id(dead.run_id)
        instance.report_run_failed(run, f"The run's process (pid {dead.pid}) is gone: it was killed or crashed. "
                                        "Marked failed by crv_dagster.orchestration.recovery; re-materialize to resume "
                                        "(finished assets and every model reply already made are kept).")
        instance.event_log_storage.free_concurrency_slots_for_run(dead.run_id)
        ended = _end_mlflow_runs(tracking_uri, dead.run_id) if tracking_uri else 0
        log(f"run {dead.run_id}: process {dead.pid} is gone; marked failed, pool slots freed, "
            f"{ended} MLflow run(s) ended as FAILED")
        recovered.append(dead.run_id)
    for run_id in free_ended_runs_slots(instance):
        log(f"run {run_id}: it has ended but still held a slot of pool '{POOL}'; freed")
        recovered.append(run_id)
    return recovered


def free_ended_runs_slots(instance: dg.DagsterInstance, pool: str | None = None) -> list[str]:
    """Free the slots still held by runs that have ended. A run stopped by a signal marks itself
    failed, but a step worker killed with it never gives its slot back, and every later run's GPU
    steps would wait for it."""
    info = instance.event_log_storage.get_concurrency_info(pool or POOL)
    freed = []
    for run_id in dict.fromkeys(slot.run_id for slot in info.claimed_slots):
        run = instance.get_run_by_id(run_id)
        if run is None or run.status not in IN_PROGRESS:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
            freed.append(run_id)
    return freed


POOL = "gpu"


def pool_holders(instance: dg.DagsterInstance, pool: str = POOL) -> list[str]:
    """Who holds the pool's slots now, as lines a person can act on."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    return [f"pool '{pool}': a slot is held by run {slot.run_id} (step {slot.step_key}); a step of another run "
            f"waits for it. If that run is stuck, `dagster run cancel {slot.run_id}` frees it"
            for slot in info.claimed_slots]


def pool_waits(instance: dg.DagsterInstance, pid: int, pool: str = POOL) -> list[tuple[str, str, str]]:
    """Steps of the runs that process ``pid`` executes which wait for a slot of ``pool`` held by
    another run: (waiting run, waiting step, what to say)."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    waits = []
    for step in info.pending_steps:
        holders = [slot for slot in info.claimed_slots if slot.run_id != step.run_id]
        if step.assigned_timestamp is not None or not holders:
            continue  # it has its slot, or waits on its own run's steps: the pool's limit, as meant
        run = instance.get_run_by_id(step.run_id)
        if run is None or run.status not in IN_PROGRESS:
            continue
        # A run whose first step is the one waiting has no pid tag yet: its start event names it.
        if (_local_pid(instance, run) or _run_start_pid(instance, run.run_id)) != pid:
            continue
        held = ", ".join(f"run {slot.run_id} (step {slot.step_key})" for slot in holders)
        waits.append((step.run_id, step.step_key,
                      f"step {step.step_key} waits for a slot of pool '{pool}' (limit {info.limit}), held by {held}. "
                      f"It starts when that run ends; to stop that run instead: `dagster run cancel "
                      f"{holders[0].run_id}` (or cancel it in the UI's Runs page)"))
    return waits


def watch_pool_waits(tracking_uri: str | None, poll_s: float = 10.0, repeat_s: float = 300.0, log=print) -> None:
    """In the process that executes a run: while one of its steps waits on the pool, recover a
    holder whose process has died, and otherwise say who holds the slot (once, and again every
    ``repeat_s`` while the wait lasts) at INFO in the waiting run's event log and through ``log``."""
    global _pool_watch
    if _pool_watch is not None:
        return
    pid = os.getpid()

    def watch() -> None:
        said: dict[tuple[str, str], float] = {}
        try:
            with dg.DagsterInstance.get() as instance:
                while True:
                    time.sleep(poll_s)
                    if not instance.event_log_storage.get_concurrency_info(POOL).pending_step_count:
                        continue
                    recover(instance, tracking_uri, log=log)
                    for run_id, step_key, message in pool_waits(instance, pid):
                        if time.monotonic() - said.get((run_id, step_key), -repeat_s) < repeat_s:
                            continue
                        said[(run_id, step_key)] = time.monotonic()
                        instance.report_engine_event(message, instance.get_run_by_id(run_id), step_key=step_key)
                        log(message)
        except Exception as err:  # a watch that fails must never fail the run it watches
            log(f"stopped watching pool '{POOL}' ({type(err).__name__}: {err})")

    _pool_watch = threading.Thread(target=watch, name="crv-pool-watch", daemon=True)
    _pool_watch.start()


def recover_on_load(tracking_uri: str | None, log=None) -> list[str]:
    """Run where the definitions load (the CLI, `dagster dev`, a backfill's runs): dead runs of this
    instance give back what they hold before a live run waits on it, and a slot still held by a
    live run is named at INFO. Never in a step worker (its own run is alive), never fatal."""
    import logging
    import multiprocessing

    log = log or logging.getLogger("crv_dagster").info
    if not os.environ.get("DAGSTER_HOME") or multiprocessing.parent_process() is not None:
        return []
    try:
        with dg.DagsterInstance.get() as instance:
            recovered = recover(instance, tracking_uri, log=log)
            for line in pool_holders(instance):
                log(line)
        watch_pool_waits(tracking_uri, log=log)
        return recovered
    except Exception as err:  # loading the definitions must not depend on it
        log(f"could not check this instance for dead runs ({type(err).__name__}: {err}); "
            "`make recover` does it by hand")
        return []


def main() -> None:
    from crv_dagster.config import load_active_profile

    profile = load_active_profile()
    with dg.DagsterInstance.get() as instance:
        recovered = recover(instance, profile.tracking_uri)
    if not recovered:
        print("crv-dagster: no dead runs in this DAGSTER_HOME")


if __name__ == "__main__":
    main()
