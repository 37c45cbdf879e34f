"""`make demo` from an empty state and again with nothing changed, per arm: two Dagster executors, or
today's code against a previous commit of this repository.

Every run does what `make demo` does once its environment is ready: the Makefile's pipeline
commands (the partition check, recovery, `dg launch` of the demo partition's graph and of
`results`, the summary), from an empty artifacts root and a new Dagster instance, timed; then the
same commands again with nothing changed, timed. Each run gets an artifacts root and an instance of
its own, deleted after it; converted models are made before any timing (no arm pays the GGUF
conversion) and kept per arm. The arms alternate over ``--rounds`` rounds (benchmarks/arms.py) and
the script prints per arm the median and min-max of both times and the ratios of medians.

``--compare executor`` (the default): the multiprocess executor (each step in a process of its own:
what the demo used before) against the in-process executor (every step in the run's process, which
``assets_config/demo.yaml`` sets), both on this tree's demo profile.

``--compare code``: this tree against ``--baseline-ref``, a commit checked out into a temporary
``git worktree``. Each arm runs its own tree's code and its own ``assets_config/demo.yaml``, in the
same virtual environment (this interpreter's), with its tree first on PYTHONPATH and its root as the
working directory: today's demo against the demo as users ran it at that commit, not the same
workload on two codebases. The default ref, 9d8be54, is the parent of 3c17084 (trailing_text), the
first of issue 32's commits; with it came stop_at_answer (1c8e46d) and the new demo.yaml (477da92).
At 9d8be54 the demo trained on 2 CoTs for 2 steps and scored 0.0% on 4 held-out problems, in about
7 minutes on 2 cores.

The previous code also lacks the passive OpenMP wait (2f9c87b): beside another busy process its
generation slows many times over, so measure on otherwise idle cores, or pass ``--omp-wait-policy
PASSIVE`` to give both arms the same policy. ``--overlay FILE`` lays a profile fragment over each
arm's demo profile and ``--partition`` picks another partition: for smoke tests of this script
(not for figures).

    .venv/bin/python benchmarks/demo_rerun.py [--compare executor|code] [--baseline-ref REF] [--rounds 3]

Full measurements (2 otherwise idle cores; each round runs both arms' first and unchanged runs,
about 12-16 minutes, so about 40-50 minutes for three rounds):

    .venv/bin/python benchmarks/demo_rerun.py --compare code --rounds 3
    .venv/bin/python benchmarks/demo_rerun.py --compare executor --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arms import Figure, add_rounds_argument, alternate, markdown_table, rounds_note  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BASELINE_REF = "9d8be54"
FIGURES = [Figure("first_s", "first `make demo` s"), Figure("unchanged_s", "unchanged re-run s")]


@dataclass
class Arm:
    label: str
    tree: Path  # whose code runs (first on PYTHONPATH, the working directory)
    profile: Path


def _commands(partition: str) -> list[list[str]]:
    """The Makefile's `pipeline` target (the same at the default baseline ref)."""
    python, dg = sys.executable, str(BIN / "dg")
    return [
        [python, "-m", "crv_dagster.orchestration.partitions", partition],
        [python, "-m", "crv_dagster.orchestration.recovery"],
        [dg, "launch", "-m", "crv_dagster", "--assets", "*eval_scores", "--partition", partition],
        [dg, "launch", "-m", "crv_dagster", "--assets", "results", "--partition", partition.split("|")[0]],
        [python, "-m", "crv_dagster.orchestration.summary", "--partition", partition],
    ]


def _env(arm: Arm, models: Path, **more: str) -> dict[str, str]:
    # What the Makefile exports for the demo; PYTHONPATH makes the arm's tree shadow the venv's
    # editable install of the main checkout (checked in _prepare).
    return {**os.environ, "PYTHONPATH": str(arm.tree), "CRV_PROFILE": str(arm.profile), "CRV_MODELS_DIR": str(models),
            "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1", **more}


def _profile(path: Path, base: Path, overlay: str) -> Path:
    """A profile that extends ``base`` with ``overlay`` (YAML text) laid over it; no overlay: ``base``."""
    if not overlay.strip():
        return base
    path.write_text(f"extends: {base}\n{overlay}\n")
    return path


def _prepare(name: str, arm: Arm, work: Path) -> Path:
    """Convert the arm's models (untimed) and check that its own code is what runs."""
    models = work / f"models-{name}"
    env = _env(arm, models)
    found = subprocess.run([sys.executable, "-c", "import crv_dagster; print(crv_dagster.__file__)"], env=env,
                           cwd=arm.tree, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(arm.tree.resolve()):
        raise SystemExit(f"{name}: crv_dagster came from {found}, not from {arm.tree}")
    subprocess.run([sys.executable, "-m", "crv_dagster.models", "demo", "smollm2-135m"], env=env, cwd=arm.tree,
                   check=True, capture_output=True)
    return models


def _run(name: str, arm: Arm, work: Path, models: Path, partition: str) -> dict:
    """One first run and one unchanged re-run from an empty artifacts root and instance."""
    run_dir = work / f"run-{name}"
    home, artifacts = run_dir / "dagster_home", run_dir / "artifacts"
    home.mkdir(parents=True)
    shutil.copy(arm.tree / "dagster.yaml", home / "dagster.yaml")
    env = _env(arm, models, DAGSTER_HOME=str(home), CRV_ARTIFACTS_ROOT=str(artifacts))
    # `make setup`'s instance step: untimed, as in a `make demo` whose environment is ready.
    subprocess.run([str(BIN / "dagster"), "instance", "concurrency", "set", "gpu", "1"], env=env, check=True,
                   capture_output=True, cwd=arm.tree)
    times = {}
    for which in ("first_s", "unchanged_s"):
        start = time.perf_counter()
        for command in _commands(partition):
            done = subprocess.run(command, env=env, cwd=arm.tree, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{name}: {' '.join(command[:5])} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        times[which] = time.perf_counter() - start
        if which == "first_s":  # the summary's sentences (today's code writes a headline first)
            times["headline"] = _headline(done.stdout)
    shutil.rmtree(run_dir)  # checkpoints and tables: a round's worth of disk, not three
    return times


def _headline(summary: str) -> str:
    """The summary's lines between its title and its first table: the headline where there is one."""
    lines = summary.splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.startswith("Results on")), 0)
    body = []
    for line in lines[start:]:
        if line.startswith("|"):
            break
        if line.strip():
            body.append(line.strip())
    return " ".join(body)


def _executor_arms(work: Path, overlay: str) -> tuple[dict[str, Arm], str]:
    arms = {}
    for executor, label in (("multiprocess", "baseline: a process per step (multiprocess executor)"),
                            ("in_process", "ours: every step in the run's process (in-process executor)")):
        profile = _profile(work / f"demo-{executor}.yaml", ROOT / "assets_config" / "demo.yaml",
                           f"{overlay}\norchestration: {{executor: {executor}}}")
        arms[executor] = Arm(label, ROOT, profile)
    return arms, "multiprocess"


def _code_arms(work: Path, ref: str, overlay: str) -> tuple[dict[str, Arm], str]:
    commit = subprocess.run(["git", "rev-parse", "--short", f"{ref}^{{commit}}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    tree = work / f"tree-{commit}"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT, check=True, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()
    dirty = " + uncommitted changes" if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                                       cwd=ROOT, capture_output=True, text=True).stdout else ""
    return {"previous": Arm(f"baseline: {commit}, its demo profile", tree,
                            _profile(work / "demo-previous.yaml", tree / "assets_config" / "demo.yaml", overlay)),
            "today": Arm(f"ours: {head}{dirty}, its demo profile", ROOT,
                         _profile(work / "demo-today.yaml", ROOT / "assets_config" / "demo.yaml", overlay))}, "previous"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", choices=["executor", "code"], default="executor")
    parser.add_argument("--baseline-ref", default=BASELINE_REF, help=f"with --compare code (default {BASELINE_REF})")
    parser.add_argument("--omp-wait-policy", choices=["PASSIVE", "ACTIVE"],
                        help="OMP_WAIT_POLICY for both arms (default: unset, each code as it is)")
    parser.add_argument("--overlay", type=Path, help="a profile fragment laid over each arm's (smoke tests)")
    parser.add_argument("--partition", default="arith|smollm2-135m")
    add_rounds_argument(parser)
    args = parser.parse_args()
    if args.omp_wait_policy:  # every arm's environment starts from this process's
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy
    overlay = args.overlay.read_text() if args.overlay else ""
    with tempfile.TemporaryDirectory(prefix="demo-rerun-") as tmp:
        work = Path(tmp)
        arms, baseline = (_code_arms(work, args.baseline_ref, overlay) if args.compare == "code"
                          else _executor_arms(work, overlay))
        try:
            models = {name: _prepare(name, arm, work) for name, arm in arms.items()}
            results = alternate(list(arms), lambda name: _run(name, arms[name], work, models[name], args.partition),
                                args.rounds)
        finally:
            for arm in arms.values():
                if arm.tree != ROOT:
                    subprocess.run(["git", "worktree", "remove", "--force", str(arm.tree)], cwd=ROOT,
                                   capture_output=True)
    print(f"`make demo`'s pipeline commands, partition {args.partition}, {os.cpu_count()} CPUs, OMP_WAIT_POLICY "
          f"{args.omp_wait_policy or 'as each code sets it'}{', with an overlay (a smoke test)' if overlay else ''}  "
          f"({rounds_note(results)})")
    if args.compare == "code":
        print("Each arm ran its own code and its own demo profile (assets_config/demo.yaml at that commit): "
              "the demo as users ran it then and now, not one workload on two codebases.")
    print(markdown_table(results, {name: arm.label for name, arm in arms.items()}, FIGURES, baseline=baseline,
                         first_column="run", ratio_label="ratio baseline / ours"))
    for name, runs in results.items():
        for number, run in enumerate(runs, start=1):
            print(f"{name}, round {number}: {run.get('headline') or '(no headline)'}")


if __name__ == "__main__":
    main()
