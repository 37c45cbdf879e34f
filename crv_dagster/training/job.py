"""The training of one asset materialisation as a process tree of its own.

``sft_model`` and ``cogpo_model`` write a ``TrainingJob`` (the training settings and one
``RunSpec`` per method and seed) to a JSON file and launch

    python -m crv_dagster.training.job JOB.json                         # one process
    accelerate launch --config_file F --num_processes N -m crv_dagster.training.job JOB.json

through Dagster Pipes (``orchestration.pipes_launch``). Every rank runs the same runs in the same order;
the main process logs the curves into each run's MLflow run, writes the checkpoints, and reports
every finished run back to Dagster (a Pipes custom message: the run's ``TrainingResult`` as JSON,
less its curves and reference log-probs, and the checkpoint path). Launched by hand, outside
Dagster, the results are printed instead.

A finished run leaves ``training_result.json`` in its checkpoint: the full result as JSON, with the
digest of everything it was trained from; a relaunch of the same job (after a crash) skips those runs and trains the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal

import pandas as pd
from pydantic import BaseModel

from crv_dagster.config import TrainingConfig
from crv_dagster.llm.identity import weights_digest
from crv_dagster.training.common import CHECKPOINT_MARK
from crv_dagster.training.result import ReferenceLogps, TrainingResult

RESULT_FILE = "training_result.json"
# The pid of the Dagster step that launched the job: when it is gone (killed, even with SIGKILL),
# the training processes stop too instead of holding the GPUs for a run nobody waits on.
LAUNCHER_PID_ENV = "CRV_LAUNCHER_PID"
# What a Pipes message carries per finished run: the result (TrainingResult.to_json) less the
# reference log-probs (one per pair, needed only by the child for the next method) and the curves.
MESSAGE_KIND = "crv.training_run"


class RunSpec(BaseModel):
    """One training run: a method and a seed, from ``base_model`` on the table at ``data``."""

    kind: Literal["sft", "preference"]
    method: str
    seed: int
    base_model: str = ""  # the student (sft) or the SFT checkpoint (preference)
    data: str  # parquet: SFT examples (question, answer, cot) or preference pairs
    out_dir: str
    mlflow_run_id: str | None = None
    digest: str = ""  # of what the run is trained from; a finished run with the same digest is kept


class TrainingJob(BaseModel):
    training: TrainingConfig
    runs: list[RunSpec]
    work_dir: str  # seen by every rank: the pairs datasets and TRL's reference caches
    tracking_uri: str | None = None

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2))
        return path

    @classmethod
    def read(cls, path: Path) -> "TrainingJob":
        try:
            return cls.model_validate_json(Path(path).read_text())
        except FileNotFoundError:
            raise SystemExit(f"{path}: training job file not found") from None
        except ValueError as err:
            raise SystemExit(f"{path}: not a training job: {err}") from None


def model_digest(path: str) -> str:
    """What identifies a base model: a checkpoint trained here by the digest it was trained from
    (so a retrained SFT model is a new base), anything else by its path or Hub name."""
    result = Path(path) / RESULT_FILE
    if result.is_file():
        return json.loads(result.read_text()).get("digest", "") or path
    return path


def run_digest(kind: str, method: str, seed: int, base_model: str, data: pd.DataFrame | str,
               training: TrainingConfig) -> str:
    """What a run is trained from: the base model, the data, the settings and the code that trains
    (this job and every package module it imports: an edit to the trainer retrains). ``data`` is the
    table, or its ``versions.table_version`` when the caller has it already."""
    from crv_dagster.code_digest import code_digest
    from crv_dagster.versions import package_version, table_version

    data_version = data if isinstance(data, str) else table_version(data)
    payload = json.dumps([kind, method, seed, model_digest(base_model), data_version,
                          training.model_dump(mode="json"), package_version(),
                          code_digest(["crv_dagster.training.job"])],  # not __name__: "__main__" when run
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def earlier_result(spec: RunSpec) -> tuple[TrainingResult | None, str]:
    """The result of an earlier launch of exactly this run, and why it cannot be kept when it cannot:
    a run is kept only when its inputs' digest is this run's and its checkpoint's weights are still
    the ones it wrote (a truncated or replaced weight file is retrained, never kept). The reason is
    empty where there is no earlier run."""
    out = Path(spec.out_dir)
    if not spec.digest or not (out / RESULT_FILE).is_file():
        return None, ""
    if not (out / CHECKPOINT_MARK).is_file():
        return None, f"{out}: the checkpoint was never completed"
    try:
        stored = json.loads((out / RESULT_FILE).read_text())
    except ValueError:
        return None, f"{out / RESULT_FILE}: unreadable"
    if stored.get("digest") != spec.digest:
        return None, "trained from other inputs, settings or code"
    try:
        weights = weights_digest(out)
    except OSError as err:
        return None, f"{out}: the checkpoint's weights cannot be read ({err})"
    if stored.get("weights") != weights:
        return None, f"{out}: the checkpoint's weights are not the ones this run wrote (damaged or replaced)"
    try:
        return TrainingResult.from_json(stored["result"]), ""
    except (KeyError, TypeError, ValueError) as err:
        return None, f"{out / RESULT_FILE}: not a result this version reads ({err!r})"


def stored_result(out_dir: str | Path) -> TrainingResult:
    """The full result a finished run wrote beside its checkpoint (its curves included)."""
    path = Path(out_dir) / RESULT_FILE
    try:
        return TrainingResult.from_json(json.loads(path.read_text())["result"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RuntimeError(f"{path}: the training job reported this run but its result file cannot be read "
                           f"({err}); materialise the asset again to retrain it") from err


def _write_result(spec: RunSpec, result: TrainingResult) -> None:
    path = Path(spec.out_dir) / RESULT_FILE
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps({"digest": spec.digest, "weights": weights_digest(spec.out_dir),
                               "result": result.to_json()}))
    tmp.rename(path)


# --------------------------------------------------------------------------- reporting


class _PrintReporter:
    """Outside Dagster: progress and results on stdout."""

    def info(self, message: str) -> None:
        print(message, flush=True)

    def report(self, payload: dict) -> None:
        print(json.dumps({"kind": MESSAGE_KIND, **payload}, default=str), flush=True)


class _PipesReporter:
    def __init__(self, pipes):
        self.pipes = pipes

    def info(self, message: str) -> None:
        self.pipes.log.info(message)

    def report(self, payload: dict) -> None:
        self.pipes.report_custom_message({"kind": MESSAGE_KIND, **payload})


class _Silent:
    def info(self, message: str) -> None:
        pass

    def report(self, payload: dict) -> None:
        pass


@contextmanager
def reporter(is_main: bool) -> Iterator[Any]:
    """Pipes on the main process of a launch started by Dagster; nothing on the other ranks."""
    if not is_main:
        yield _Silent()
        return
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if not PipesEnvVarParamsLoader().is_dagster_pipes_process():
        yield _PrintReporter()
        return
    with open_dagster_pipes() as pipes:
        yield _PipesReporter(pipes)


def _tracked_run(tracking_uri: str | None, run_id: str | None):
    from crv_dagster.mlflow_run import TrackedRun

    return TrackedRun.attach(tracking_uri, run_id) if tracking_uri and run_id else None


# --------------------------------------------------------------------------- the runs


def _state():
    """accelerate's process state, made as the trainers make it (``use_cpu`` without a GPU): made
    otherwise first, a CPU launch would report one process per rank until the trainer starts."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def run_job(job: TrainingJob) -> list[TrainingResult]:
    """Every run of ``job``, in order, on this process (one rank of the launch)."""
    from crv_dagster.training.cogpo import train_preference
    from crv_dagster.training.sft import train_sft
    from crv_dagster.methods import is_reference_method

    state = _state()
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != state.num_processes:
        # Each process would train alone on its share of the data and overwrite the others' checkpoints.
        raise RuntimeError(f"launched as {launched} processes, but they did not join one process group "
                           f"({state.num_processes} found): on a machine without GPUs use accelerate/ddp_cpu.yaml")
    work = Path(job.work_dir)
    results = []
    # Reference log-probs depend on the SFT checkpoint and the pairs: computed by the first method
    # that has a reference, then handed to the others.
    references: dict[tuple[str, str], ReferenceLogps | None] = {}
    with reporter(state.is_main_process) as report:
        for index, spec in enumerate(job.runs):
            where = (spec.base_model, spec.data)
            done, why_not = earlier_result(spec)
            if done is not None:
                report.info(f"{spec.method} (seed {spec.seed}): already trained by an earlier launch, kept")
                reused = True
                result = done
            else:
                if why_not:
                    report.info(f"{spec.method} (seed {spec.seed}): an earlier checkpoint is not kept: {why_not}")
                reused = False
                report.info(f"{spec.method} (seed {spec.seed}) from {spec.base_model} on "
                            f"{state.num_processes} process(es)")
                data = pd.read_parquet(spec.data)
                run = _tracked_run(job.tracking_uri, spec.mlflow_run_id) if state.is_main_process else None
                out_dir = Path(spec.out_dir)
                if spec.kind == "sft":
                    result = train_sft(spec.base_model, data, out_dir, job.training, seed=spec.seed,
                                       method=spec.method, run=run)
                else:
                    given = references.get(where)
                    result = train_preference(spec.base_model, data, out_dir, job.training, method=spec.method,
                                              seed=spec.seed, run=run, reference=given,
                                              work_dir=work / f"{index:02d}-{spec.method}-seed{spec.seed}")
                    # The reference pass this run paid for itself (None: it had one handed over, or none).
                    computed = result.reference is not None and given is None
                    result.reference_computed_s = result.reference.seconds if computed else None
                result.processes = state.num_processes
                if state.is_main_process:
                    _write_result(spec, result)
            if spec.kind == "preference" and is_reference_method(spec.method) and where not in references:
                references[where] = result.reference
            results.append(result)
            # The message stays small: Dagster reads the messages file line by line while it is
            # written, and a long line written in several pieces can be read half written. The
            # curves (the long part) are read from the result file by the asset.
            report.report({"index": index, "method": spec.method, "seed": spec.seed, "checkpoint": spec.out_dir,
                           "reused": reused, "result": result.to_json(reference=False, history=False)})
        state.wait_for_everyone()
    return results


def exit_with_launcher(poll_s: float = 2.0) -> None:
    """Stop this process when the process named by ``CRV_LAUNCHER_PID`` is gone (set by the
    Dagster step that launched the job; absent when the job is run by hand)."""
    import signal
    import threading
    import time

    pid = int(os.environ.get(LAUNCHER_PID_ENV) or 0)
    if pid <= 0:
        return

    def alive() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by another user
            return True
        return True

    def watch() -> None:
        while alive():
            time.sleep(poll_s)
        print(f"crv-dagster: the launching process {pid} is gone; stopping training process {os.getpid()}",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        os._exit(1)

    threading.Thread(target=watch, name="crv-exit-with-launcher", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m crv_dagster.training.job JOB.json  (or under accelerate launch)")
    job = TrainingJob.read(Path(argv[0]))
    exit_with_launcher()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not os.environ.get("CRV_VERBOSE"):
        import warnings

        # Every rank would print the libraries' deprecation notices about their own internals
        # into the step's log; the step process silences them the same way (orchestration.console).
        for category in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.filterwarnings("ignore", category=category)
    run_job(job)
    import torch.distributed as dist

    # Leave the process group cleanly: torch warns (and some launchers hang) otherwise.
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
