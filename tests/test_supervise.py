"""make mlflow-ui: Ctrl-C stops the server and every process it started."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for init to reap it has stopped running.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"


def test_ctrl_c_stops_the_server_and_the_workers_it_left(tmp_path):
    pids = tmp_path / "pids"
    # A server that, like uvicorn signalled twice, leaves a worker behind that ignores SIGINT.
    server = textwrap.dedent(f"""
        import signal, subprocess, sys, time
        worker = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"])
        open({str(pids)!r}, "w").write(str(worker.pid))
        signal.signal(signal.SIGINT, lambda *a: sys.exit(0))
        time.sleep(600)
    """)
    supervisor = subprocess.Popen([sys.executable, "-m", "crv_dagster.supervise", "--grace", "2", "--",
                                   sys.executable, "-c", server])
    deadline = time.monotonic() + 30
    while not pids.exists() or not pids.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    worker = int(pids.read_text())
    assert _alive(worker)
    supervisor.send_signal(signal.SIGINT)  # what Ctrl-C sends to make's foreground job
    supervisor.wait(timeout=30)
    deadline = time.monotonic() + 5
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker)


def test_mlflow_ui_opens_the_active_profiles_store(monkeypatch, tmp_path):
    from crv_dagster.config import CONFIG_DIR, load_active_profile
    from crv_dagster.mlflow_ui import ui_command

    monkeypatch.setenv("CRV_PROFILE", "demo")
    monkeypatch.setenv("CRV_ARTIFACTS_ROOT", str(tmp_path / "elsewhere"))
    command = ui_command(load_active_profile(), port=5123)
    assert command[1:4] == ["ui", "--backend-store-uri", f"sqlite:///{tmp_path}/elsewhere/mlflow.db"]
    assert command[-2:] == ["-p", "5123"] and Path(command[0]).name == "mlflow"

    served = tmp_path / "served.yaml"
    served.write_text(f"extends: {CONFIG_DIR / 'demo.yaml'}\n"
                      "tracking: {tracking_uri: 'http://mlflow.internal:5000'}\n")
    monkeypatch.setenv("CRV_PROFILE", str(served))
    assert ui_command(load_active_profile()) is None  # its server has the UI
    out = subprocess.run([sys.executable, "-m", "crv_dagster.mlflow_ui"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "http://mlflow.internal:5000" in out.stdout


def test_make_mlflow_ui_runs_the_profiles_ui():
    root = Path(__file__).resolve().parents[1]
    dry = subprocess.run(["make", "-n", "mlflow-ui", "PROFILE=study"], cwd=root, capture_output=True, text=True)
    assert "CRV_PROFILE=study" in dry.stdout and "-m crv_dagster.mlflow_ui" in dry.stdout
