"""The training job in one process against two data-parallel processes (DDP over gloo), on the CPU.

Both arms run the same job (SFT, then CogPO from that checkpoint) on the same data with the same
global batch, launched exactly as the assets launch it (``training.launch_command.launch_command``): one
process with all the machine's threads, or ``accelerate launch`` of two processes with one thread
each (accelerate/ddp_cpu.yaml). Arms alternate over ``--rounds`` rounds (benchmarks/arms.py); the
script prints per arm the median and min-max of the wall time of a launch (start-up included) and
of the time inside the trainers, and the ratios of medians. On a CPU this measures what data
parallelism costs or saves against intra-op threads; on GPUs the same job scales out.

    .venv/bin/python benchmarks/training_processes.py [--model demo|tiny] [--pairs 32] [--steps 4] [--rounds 3]

Full measurement (SmolLM2-135M as in docs/benchmarks.md; about 20 minutes on 2 idle cores: six
launches of 3-4 minutes):

    .venv/bin/python benchmarks/training_processes.py --model demo --pairs 32 --steps 4 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from arms import Figure, add_rounds_argument, alternate, markdown_table, rounds_note  # noqa: E402

ARMS = {"one": "baseline: 1 process, 2 threads", "two": "ours: 2 processes (DDP, gloo), 1 thread each"}
FIGURES = [Figure("wall_s", "launch s (start-up included)"), Figure("train_s", "in the trainers s")]


def _job(root: Path, model: str, pairs, examples, processes: int, steps: int, global_batch: int) -> Path:
    from crv_dagster.config import CONFIG_DIR, load_profile_file
    from crv_dagster.training.job import RunSpec, TrainingJob

    training = load_profile_file(CONFIG_DIR / "demo.yaml").training
    per_device = global_batch // processes
    settings = {"per_device_train_batch_size": per_device, "max_steps": steps, "gradient_accumulation_steps": 1}
    training = training.model_copy(update={
        "torch_threads": 2 // processes,
        "sft": training.sft.model_copy(update=settings), "cogpo": training.cogpo.model_copy(update=settings)})
    examples.to_parquet(root / "sft.parquet")
    pairs.to_parquet(root / "pairs.parquet")
    runs = [RunSpec(kind="sft", method="sft", seed=0, base_model=model, data=str(root / "sft.parquet"),
                    out_dir=str(root / "sft")),
            RunSpec(kind="preference", method="cogpo", seed=0, base_model=str(root / "sft"),
                    data=str(root / "pairs.parquet"), out_dir=str(root / "cogpo"))]
    return TrainingJob(training=training, runs=runs, work_dir=str(root / "work")).write(root / "job.json")


def _launch(arm: str, model: str, pairs, examples, steps: int, global_batch: int) -> dict:
    from crv_dagster.config import CONFIG_DIR, PROJECT_ROOT, LaunchConfig
    from crv_dagster.training.launch_command import free_port, launch_command

    launch = (LaunchConfig() if arm == "one"
              else LaunchConfig(num_processes=2, accelerate_config="accelerate/ddp_cpu.yaml"))
    with tempfile.TemporaryDirectory() as tmp:
        job = _job(Path(tmp), model, pairs, examples, launch.num_processes, steps, global_batch)
        start = time.perf_counter()
        done = subprocess.run(launch_command(launch, job, CONFIG_DIR, port=free_port()), cwd=PROJECT_ROOT,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{arm}: the launch failed:\n{done.stderr[-3000:]}")
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"kind"')]
    train = sum(r["result"]["train_runtime_s"] for r in reports)
    return {"arm": arm, "wall_s": wall, "train_s": train,
            "loss_last": {r["method"]: r["result"]["loss"]["last"] for r in reports}}


def main() -> None:
    import pandas as pd
    from cogpo_training import _model_path, _pairs
    from transformers import AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo", help="demo (SmolLM2-135M), tiny, or an HF folder")
    parser.add_argument("--pairs", type=int, default=32, help="problems: one SFT CoT and one pair each")
    parser.add_argument("--steps", type=int, default=4, help="training steps of SFT and of CogPO")
    parser.add_argument("--batch", type=int, default=4, help="global batch (split over the processes)")
    add_rounds_argument(parser)
    args = parser.parse_args()
    model = _model_path(args.model)
    pairs = _pairs(AutoTokenizer.from_pretrained(model), args.pairs)
    examples = pd.DataFrame({"question": pairs["question"], "answer": pairs["answer"], "cot": pairs["chosen"]})
    runs = alternate(list(ARMS), lambda arm: _launch(arm, model, pairs, examples, args.steps, args.batch), args.rounds)
    print(f"model: {model}  pairs: {len(pairs)}  steps: {args.steps} SFT + {args.steps} CogPO  "
          f"global batch: {args.batch}  ({rounds_note(runs)})")
    print(markdown_table(runs, ARMS, FIGURES, baseline="one", ratio_label="ratio baseline / ours"))
    print("last losses, first run of each arm:", {arm: rs[0]["loss_last"] for arm, rs in runs.items()})


if __name__ == "__main__":
    main()
