"""`make demo` from an empty state and again with nothing changed, per Dagster executor.

Both arms run the Makefile's pipeline commands (the partition check, recovery, the whole graph of
the demo partition, `results`, the summary) on the demo profile, each on an artifacts root and a
Dagster instance of its own, sharing one folder of converted models (made before timing, so no arm
pays the GGUF conversion) and nothing else. The baseline is the multiprocess executor (each step in
a process of its own: what the demo used before); ours is the in-process executor (every step in
the run's process), which `assets_config/demo.yaml` now sets. The script prints each arm's wall
time for the first and the unchanged run, and the ratios.

    .venv/bin/python benchmarks/demo_rerun.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PARTITION = "arith|smollm2-135m"
ARMS = {"multiprocess": "baseline: a process per step", "in_process": "ours: every step in the run's process"}
LOG_CONFIG = '{"loggers": {"console": {"config": {"log_level": "INFO"}}}}'


def _commands(profile: Path) -> list[list[str]]:
    dagster = str(BIN / "dagster")
    return [
        [sys.executable, "-m", "crv_dagster.orchestration.partitions", PARTITION],
        [sys.executable, "-m", "crv_dagster.orchestration.recovery"],
        [dagster, "asset", "materialize", "-m", "crv_dagster", "--select", "*eval_scores", "--partition", PARTITION,
         "--config-json", LOG_CONFIG],
        [dagster, "asset", "materialize", "-m", "crv_dagster", "--select", "results", "--partition", "arith",
         "--config-json", LOG_CONFIG],
        [sys.executable, "-m", "crv_dagster.orchestration.summary", "--partition", PARTITION],
    ]


def _arm(executor: str, work: Path, models: Path) -> tuple[float, float]:
    home, artifacts = work / executor / "dagster_home", work / executor / "artifacts"
    home.mkdir(parents=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    profile = work / executor / "demo.yaml"
    profile.write_text(f"extends: {ROOT / 'assets_config' / 'demo.yaml'}\n"
                       f"orchestration: {{executor: {executor}}}\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "CRV_PROFILE": str(profile), "CRV_ARTIFACTS_ROOT": str(artifacts),
           "CRV_MODELS_DIR": str(models), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run([str(BIN / "dagster"), "instance", "concurrency", "set", "gpu", "1"], env=env, check=True,
                   capture_output=True, cwd=ROOT)
    times = []
    for _ in ("first", "unchanged"):
        start = time.perf_counter()
        for command in _commands(profile):
            done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{executor}: {' '.join(command[:4])} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = work / "models"
        env = {**os.environ, "CRV_MODELS_DIR": str(models), "CRV_PROFILE": "demo"}
        subprocess.run([sys.executable, "-m", "crv_dagster.models", "demo", "smollm2-135m"], env=env, check=True,
                       capture_output=True, cwd=ROOT)
        results = {}
        for executor, label in ARMS.items():
            first, again = _arm(executor, work, models)
            results[executor] = (first, again)
            print(f"{label:40s} first {first:6.1f} s   unchanged {again:5.1f} s", flush=True)
    (base_first, base_again), (ours_first, ours_again) = results["multiprocess"], results["in_process"]
    print(f"first run: {base_first / ours_first:.2f}x faster; unchanged re-run: {base_again / ours_again:.2f}x faster "
          f"({base_again:.1f} s -> {ours_again:.1f} s)")


if __name__ == "__main__":
    main()
