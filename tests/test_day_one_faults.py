"""Faults a new user meets on the first day, met the way the user meets them: through the CLI."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from mlflow.tracking import MlflowClient
from profiles import TEST_PROFILE

from crv_dagster.config import PROJECT_ROOT
from crv_dagster.llm.base import Completion
from chat_server import ChatServer

DAGSTER = str(Path(sys.executable).with_name("dagster"))


class GatedTeacher:
    """Holds every request until the gate opens, then answers with a correct-looking CoT."""

    model_id = "gated"

    def __init__(self):
        self.gate = threading.Event()

    def generate(self, requests, on_result=None):
        self.gate.wait(timeout=600)
        return [Completion("One step.\n\nThe answer is \\boxed{1}.", completion_tokens=7) for _ in requests]

    def close(self):
        pass


def _home(tmp_path, name="dagster_home") -> Path:
    home = tmp_path / name
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def _env(tmp_path, home, profile=TEST_PROFILE):
    env = {**os.environ, "DAGSTER_HOME": str(home), "CRV_PROFILE": str(profile),
           "CRV_ARTIFACTS_ROOT": str(tmp_path / "artifacts")}
    subprocess.run([DAGSTER, "instance", "concurrency", "set", "gpu", "1"], env=env, check=True, capture_output=True)
    return env


def _gated_profile(tmp_path, server) -> Path:
    """The test profile with its teacher behind ``server`` (a GatedTeacher)."""
    profile = yaml.safe_load(TEST_PROFILE.read_text())
    profile["backends"]["gated"] = {"kind": "openai", "model": "gated", "base_url": server.base_url,
                                    "api_key_env": None, "timeout_s": 600}
    profile["teacher"]["backend"] = "gated"
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def _materialize(env, selection, partition, **kwargs):
    return subprocess.Popen([DAGSTER, "asset", "materialize", "-m", "crv_dagster", "--select", selection,
                             "--partition", partition], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kwargs)


def _wait(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
def test_after_a_sigkilled_run_the_same_command_completes(tmp_path, monkeypatch):
    teacher = GatedTeacher()
    with ChatServer(teacher, "gated") as server:
        path = _gated_profile(tmp_path, server)
        home = _home(tmp_path)
        env = _env(tmp_path, home, path)
        monkeypatch.setenv("DAGSTER_HOME", str(home))

        first = _materialize(env, "problems,raw_cots", "arith_gen|tiny-a")
        _wait(lambda: server.requests_seen > 0, 180, "the teacher step to call the server")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            [record] = instance.get_run_records()
            run_id, tags = record.dagster_run.run_id, record.dagster_run.tags
            assert record.dagster_run.status == dg.DagsterRunStatus.STARTED
        step_pid = int(tags["crv/step_pid"])
        assert step_pid != first.pid and _alive(step_pid)

        first.send_signal(signal.SIGKILL)  # a closed terminal, a preempted job
        first.wait()
        # The step worker notices its run's process is gone and stops by itself.
        _wait(lambda: not _alive(step_pid), 60, "the orphaned step worker to exit")

        # The same command again, and nothing in between: the dead run gives back its pool slot
        # where the definitions load, so the new run does not wait on it.
        teacher.gate.set()
        second = _materialize(env, "problems,raw_cots", "arith_gen|tiny-a")
        out, _ = second.communicate(timeout=300)
        assert second.returncode == 0, out[-3000:]
        assert f"run {run_id}: process {first.pid} is gone" in out
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
            assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
        client = MlflowClient(f"sqlite:///{tmp_path}/artifacts/mlflow.db")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  f"tags.`dagster.run_id` = '{run_id}'")
        assert {r.data.tags["dagster.asset"]: r.info.status for r in runs} == {"problems": "FINISHED",
                                                                                "raw_cots": "FAILED"}
        # Running recovery again finds nothing to do.
        again = subprocess.run([sys.executable, "-m", "crv_dagster.orchestration.recovery"], env=env, capture_output=True,
                               text=True, timeout=120)
        assert "no dead runs" in again.stdout


@pytest.mark.slow
def test_a_run_waiting_on_the_pool_says_which_run_holds_it(tmp_path, monkeypatch):
    teacher = GatedTeacher()
    with ChatServer(teacher, "gated") as server:
        path = _gated_profile(tmp_path, server)
        env = _env(tmp_path, _home(tmp_path), path)
        monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
        first = _materialize(env, "problems,raw_cots", "arith_gen|tiny-a")
        _wait(lambda: server.requests_seen > 0, 180, "the first run's teacher step to hold the gpu slot")
        second = _materialize(env, "problems,raw_cots", "arith_gen|tiny-b")
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(second.stdout), daemon=True)
        reader.start()
        try:
            _wait(lambda: any("waits for a slot of pool 'gpu'" in line for line in lines), 180,
                  "the waiting run to say what it waits for")
        finally:
            teacher.gate.set()
        out, _ = first.communicate(timeout=300)
        assert first.returncode == 0, out[-3000:]
        assert second.wait(timeout=300) == 0, "".join(lines)[-3000:]
        reader.join(timeout=30)
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            runs = {r.dagster_run.tags.get("dagster/partition"): r.dagster_run.run_id for r in instance.get_run_records()}
            holder = runs["arith_gen|tiny-a"]
            # In the waiting run's own event log, where the UI shows it.
            logged = [e.message for e in instance.all_logs(runs["arith_gen|tiny-b"]) if e.message]
        [said] = [line for line in lines if "waits for a slot of pool 'gpu'" in line]
        assert f"held by run {holder}" in said and f"dagster run cancel {holder}" in said
        assert any(f"held by run {holder}" in message for message in logged)


@pytest.mark.slow
def test_two_partitions_start_at_once_on_an_empty_artifacts_root(tmp_path):
    # Each with its own instance, so no pool makes one wait for the other; launched together.
    envs = {size: _env(tmp_path, _home(tmp_path, f"home-{size}")) for size in ("tiny-a", "tiny-b")}
    runs = [_materialize(env, "problems", f"arith|{size}") for size, env in envs.items()]
    for run in runs:
        out, _ = run.communicate(timeout=300)
        assert run.returncode == 0, out[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/artifacts/mlflow.db")
    found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.data.tags["dagster.partition"] for r in found) == ["arith|tiny-a", "arith|tiny-b"]


def test_recovery_signals_only_what_is_still_a_step_worker():
    import multiprocessing

    from crv_dagster.orchestration.recovery import _is_step_worker

    assert not _is_step_worker(os.getpid())  # pytest itself: a live process that is no step worker
    context = multiprocessing.get_context("spawn")
    worker = context.Process(target=time.sleep, args=(30,))
    worker.start()
    try:
        _wait(lambda: _is_step_worker(worker.pid), 30, "the worker to start")  # until it has exec'd
    finally:
        worker.kill()
        worker.join()
    assert not _is_step_worker(worker.pid)  # gone


def _started_run(instance, pid):
    from crv_dagster.orchestration.recovery import HOST_TAG, RUN_PID_TAG

    import socket

    run = instance.create_run_for_job(dg.GraphDefinition("job").to_job(), tags={HOST_TAG: socket.gethostname(),
                                                                                RUN_PID_TAG: str(pid)})
    instance.handle_run_event(run.run_id, dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, "job"))
    return instance.get_run_by_id(run.run_id)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_step_waiting_on_the_pool_names_the_run_that_holds_it_and_a_dead_holder_is_freed(tmp_path, monkeypatch):
    from crv_dagster.orchestration.recovery import POOL, pool_waits, recover

    home = _home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots(POOL, 1)
        holder, waiting = _started_run(instance, os.getpid()), _started_run(instance, os.getpid())
        assert storage.claim_concurrency_slot(POOL, holder.run_id, "raw_cots").is_claimed
        assert not storage.claim_concurrency_slot(POOL, waiting.run_id, "critiques").is_claimed

        [(run_id, step, message)] = pool_waits(instance, os.getpid())
        assert (run_id, step) == (waiting.run_id, "critiques")
        assert f"held by run {holder.run_id} (step raw_cots)" in message
        assert f"dagster run cancel {holder.run_id}" in message
        assert pool_waits(instance, _dead_pid()) == []  # another process's waits are not this one's to report

        # The holder's process dies while the other run waits: recovery frees its slot.
        instance.add_run_tags(holder.run_id, {"crv/run_pid": str(_dead_pid())})
        assert recover(instance, log=lambda line: None) == [holder.run_id]
        assert storage.claim_concurrency_slot(POOL, waiting.run_id, "critiques").is_claimed
        assert pool_waits(instance, os.getpid()) == []

        # A run that marked itself failed when a signal stopped it, while its killed step worker
        # still held the slot: recovery frees it too, and leaves a running run's slot alone.
        instance.report_run_failed(instance.get_run_by_id(waiting.run_id), "stopped by SIGTERM")
        third = _started_run(instance, os.getpid())
        assert not storage.claim_concurrency_slot(POOL, third.run_id, "raw_cots").is_claimed
        assert recover(instance, log=lambda line: None) == [waiting.run_id]
        assert storage.claim_concurrency_slot(POOL, third.run_id, "raw_cots").is_claimed
        assert recover(instance, log=lambda line: None) == []


def test_importing_the_definitions_starts_nothing(tmp_path):
    """The housekeeping of a process that runs the pipeline (step-worker watch, recovery of dead runs,
    quiet libraries) starts where Dagster loads the code location, not on import."""
    probe = ("import os, threading; import crv_dagster.orchestration.definitions; "
             "print(len(threading.enumerate()), os.environ.get('TQDM_DISABLE'))")
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "CRV_VERBOSE")}
    env.update(DAGSTER_HOME=str(_home(tmp_path)), CRV_PROFILE=str(TEST_PROFILE))
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # No pool watch, no step-worker watch, libraries left as they are, and nothing said on stderr.
    assert done.stdout.split() == ["1", "None"] and "crv-dagster" not in done.stderr


def test_loading_the_code_location_does_its_housekeeping(monkeypatch):
    import crv_dagster
    from crv_dagster.orchestration import definitions

    calls = []
    monkeypatch.setattr(definitions, "exit_with_parent", lambda: calls.append("exit_with_parent"))
    monkeypatch.setattr(definitions, "quiet_libraries", lambda: calls.append("quiet_libraries"))
    monkeypatch.setattr(definitions, "recover_on_load", lambda uri, log: calls.append("recover_on_load"))
    monkeypatch.setenv("CRV_PROFILE", str(TEST_PROFILE))
    assert calls == []
    loaded = crv_dagster.defs()  # what `-m crv_dagster` finds: Dagster's lazy definitions
    assert isinstance(loaded, dg.Definitions) and calls == ["exit_with_parent", "quiet_libraries", "recover_on_load"]
