"""GPU check: a few SFT and preference steps through the project's training job on CUDA.

What nothing on a CPU can show: bf16 mixed precision, gradient checkpointing and the CogPO trainer
(per-pair betas, the shared reference pass) on a GPU. Two tiny random-weight students (Qwen2 and
Llama layouts) each get SFT, then CogPO and DPO from that checkpoint, through
``crv_dagster.training.job.run_job``, the code ``sft_model`` and ``cogpo_model`` launch. The
script reports the peak GPU memory, checks every logged loss is finite, reloads every checkpoint
and runs a forward pass on it, and exits 1 if a check fails.

    python benchmarks/gpu_check.py [--out DIR] [--steps 4]

Without CUDA it runs the same on the CPU (float32 weights; bf16 mixed precision only where the
CPU multiplies bf16 natively, as the trainers do there), which is how the test suite keeps it
working.

On a GPU machine that has PyTorch and nothing else of the project, bring the rest as wheels,
made here with ``pip wheel --no-deps -w wheels . && pip download -d wheels -c constraints.txt
transformers trl peft accelerate datasets pandas pyarrow pandera pydantic pyyaml dagster-pipes``
(those pull their own dependencies: tokenizers, safetensors, huggingface_hub, ...), then there
``pip install --no-index --find-links wheels crv-dagster`` and ``python benchmarks/gpu_check.py``.
It takes a few minutes; the figures go to ``DIR/gpu_check.json`` and standard output.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STUDENTS = {"tiny-qwen2": {"architecture": "qwen2", "hidden_size": 128, "num_layers": 2, "num_heads": 4, "seed": 0},
            "tiny-llama": {"architecture": "llama", "hidden_size": 128, "num_layers": 2, "num_heads": 4, "seed": 1}}


def _data(tokenizer, n: int):
    """SFT examples and preference pairs (the dataset's CoTs against perturbed wrong ones)."""
    from known_data import arith_verified_set
    from crv_dagster.preference.pairs import build_pairs, chat_prompt_renderer, incorrect_by_perturbation

    verified = arith_verified_set(n, seed=3, dataset="gpu_check")
    wrong, _ = incorrect_by_perturbation(verified, seed=0)
    pairs, _ = build_pairs(verified, wrong, {"small_gap": 1.0, "medium_gap": 0.75, "large_gap": 0.5},
                           chat_prompt_renderer(tokenizer))
    return verified[["question", "answer", "cot"]], pairs


def _training(steps: int, on_gpu: bool):
    from crv_dagster.config import TrainingConfig

    common = {"max_steps": steps, "per_device_train_batch_size": 2, "learning_rate": 1e-4, "max_length": 512,
              "warmup_ratio": 0.0, "bf16": True, "gradient_checkpointing": True,
              "torch_dtype": "bfloat16" if on_gpu else "float32"}
    return TrainingConfig(finetuning="full", sft=common, cogpo=common)


def _reloads(path: str, on_gpu: bool) -> dict:
    """The checkpoint loads, and a forward pass on it gives finite logits."""
    import torch

    from crv_dagster.models.loading import load_student

    model, tokenizer = load_student(path)
    device = "cuda" if on_gpu else "cpu"
    model.to(device).eval()
    ids = tokenizer("What is 2 + 3?", return_tensors="pt").to(device)
    with torch.no_grad():
        logits = model(**ids).logits
    return {"dtype": str(next(model.parameters()).dtype), "finite_logits": bool(torch.isfinite(logits).all())}


def _finite_losses(result) -> bool:
    values = [v for point in result.history for k, v in point.items() if k.endswith("/loss")]
    return bool(values) and all(math.isfinite(v) for v in values)


def run(out: Path, steps: int) -> dict:
    import torch
    from transformers import AutoTokenizer

    from crv_dagster.config import TinyModel
    from crv_dagster.models.loading import bf16_device
    from crv_dagster.models.tiny import build_tiny_model
    from crv_dagster.training.job import RunSpec, TrainingJob, run_job

    on_gpu = torch.cuda.is_available()
    report = {"device": torch.cuda.get_device_name(0) if on_gpu else "cpu", "torch": torch.__version__,
              "bf16": bf16_device(), "gradient_checkpointing": True,  # mixed precision as the trainers apply it
              "steps": steps, "students": {}}
    training = _training(steps, on_gpu)
    for name, spec in STUDENTS.items():
        started = time.perf_counter()
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        student = str(build_tiny_model(TinyModel(source="tiny", **spec), out / "models" / name))
        sft_rows, pairs = _data(AutoTokenizer.from_pretrained(student), 16)
        folder = out / "runs" / name
        folder.mkdir(parents=True, exist_ok=True)
        sft_rows.to_parquet(folder / "sft.parquet", index=False)
        pairs.to_parquet(folder / "pairs.parquet", index=False)
        sft_dir = str(folder / "sft")
        runs = [RunSpec(kind="sft", method="sft", seed=0, base_model=student, data=str(folder / "sft.parquet"),
                        out_dir=sft_dir)]
        runs += [RunSpec(kind="preference", method=method, seed=0, base_model=sft_dir,
                         data=str(folder / "pairs.parquet"), out_dir=str(folder / method)) for method in ("cogpo", "dpo")]
        results = run_job(TrainingJob(training=training, runs=runs, work_dir=str(folder / "work")))
        report["students"][name] = {
            "seconds": round(time.perf_counter() - started, 1),
            "peak_gpu_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if on_gpu else None,
            "runs": {spec.method: {"steps": result.steps, "loss": result.loss,
                                   "finite_losses": _finite_losses(result),
                                   "loss_by_kind_after": result.loss_by_kind_after or None,
                                   "checkpoint": _reloads(spec.out_dir, on_gpu)}
                     for spec, result in zip(runs, results)},
        }
    report["peak_host_memory_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["passed"] = all(r["steps"] == steps and r["finite_losses"] and r["checkpoint"]["finite_logits"]
                           for student in report["students"].values() for r in student["runs"].values())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="where models, checkpoints and gpu_check.json go (default: a "
                                                 "temporary folder)")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per run")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    out.mkdir(parents=True, exist_ok=True)
    report = run(out, args.steps)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
