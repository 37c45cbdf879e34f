"""CogPO training: our trainer (reference log-probs precomputed once) against a baseline that
keeps a reference model in memory and runs it at every step.

Both runs train the same model on the same pairs with the same settings, each in a fresh child
process so peak memory (max RSS) is measured separately; this script runs them side by side
and prints seconds per step, peak memory and the ratios.

    .venv/bin/python benchmarks/cogpo_training.py [--model demo|tiny] [--steps 6] [--pairs 16]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _pairs(tokenizer, n: int):
    from crv_dagster.data.arith import arith_verified_set
    from crv_dagster.preference.pairs import build_pairs, chat_prompt_renderer, incorrect_by_perturbation

    verified = arith_verified_set(n, seed=7, dataset="bench")
    wrong, _ = incorrect_by_perturbation(verified, seed=0)
    pairs, _ = build_pairs(verified, wrong, {"small_gap": 1.0, "medium_gap": 0.75, "large_gap": 0.5},
                           chat_prompt_renderer(tokenizer))
    return pairs


def _child(mode: str, model_path: str, steps: int, n_pairs: int, threads: int) -> dict:
    """One training run; prints a JSON line with its timings."""
    import copy
    import tempfile

    import torch
    from transformers import TrainerCallback
    from trl import DPOConfig

    from crv_dagster.training.cogpo import BetaCollator, CogPOTrainer, pair_dataset
    from crv_dagster.models.loading import load_student

    torch.set_num_threads(threads)
    model, tokenizer = load_student(model_path)
    pairs = _pairs(tokenizer, n_pairs)
    step_times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            step_times.append(time.perf_counter() - self.start)

    precompute = mode == "precomputed"
    with tempfile.TemporaryDirectory() as scratch:
        args = DPOConfig(output_dir=scratch, max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-6,
                         max_length=512, bf16=False, gradient_checkpointing=False, use_cpu=True, report_to="none",
                         save_strategy="no", disable_tqdm=True, logging_steps=1000, seed=0,
                         precompute_ref_log_probs=precompute)
        start = time.perf_counter()
        trainer = CogPOTrainer(
            model=model, ref_model=None if precompute else copy.deepcopy(model), args=args,
            train_dataset=pair_dataset(pairs, list(pairs["beta"])), processing_class=tokenizer,
            data_collator=BetaCollator(pad_token_id=tokenizer.pad_token_id, max_length=512), callbacks=[Timer()],
        )
        setup_s = time.perf_counter() - start  # includes the one reference pass when precomputing
        trainer.train()
    steady = step_times[1:] or step_times  # the first step pays for lazy initialisation
    return {"mode": mode, "pairs": len(pairs), "steps": len(step_times), "setup_s": setup_s,
            "s_per_step": sum(steady) / len(steady), "total_s": setup_s + sum(step_times)}


def _run_child(mode: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--model", args.model, "--steps", str(args.steps),
           "--pairs", str(args.pairs), "--threads", str(args.threads)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{out.stderr[-3000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # RUSAGE_CHILDREN keeps the largest child so far: run the smaller one first (see main).
    result["peak_rss_mib"] = max(peak_kib, before) / 1024
    return result


def _model_path(choice: str) -> str:
    from crv_dagster.config import CONFIG_DIR, TinyModel, load_profile_file
    from crv_dagster.models.located import student_base_model
    from crv_dagster.models.store import resolve_model

    if choice == "demo":
        return student_base_model(load_profile_file(CONFIG_DIR / "demo.yaml"), "smollm2-135m")
    if choice == "tiny":
        root = Path(os.environ.get("CRV_MODELS_DIR", Path(__file__).resolve().parent.parent / "artifacts" / "bench"))
        return resolve_model("bench-tiny", TinyModel(source="tiny", hidden_size=64, num_layers=2, num_heads=4), root)
    return choice  # a path to an HF folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo", help="demo (SmolLM2-135M), tiny, or an HF folder")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--pairs", type=int, default=16, help="problems; one large-gap pair each")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is stable on a shared 2-core box)")
    parser.add_argument("--child", choices=["precomputed", "reference_model"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.model, args.steps, args.pairs, args.threads)))
        return
    args.model = _model_path(args.model)
    # Ours first: ru_maxrss of children is a running maximum, so the larger run must come second.
    ours = _run_child("precomputed", args)
    baseline = _run_child("reference_model", args)
    print(f"model: {args.model}  pairs: {ours['pairs']}  steps: {ours['steps']}  threads: {args.threads}")
    print(f"{'run':<34}{'s/step':>10}{'setup s':>10}{'total s':>10}{'peak RSS MiB':>15}")
    for name, r in (("ours: reference precomputed once", ours), ("baseline: reference model each step", baseline)):
        print(f"{name:<34}{r['s_per_step']:>10.2f}{r['setup_s']:>10.1f}{r['total_s']:>10.1f}{r['peak_rss_mib']:>15.0f}")
    print(f"ratio baseline/ours: time per step {baseline['s_per_step'] / ours['s_per_step']:.2f}x, "
          f"peak memory {baseline['peak_rss_mib'] / ours['peak_rss_mib']:.2f}x")


if __name__ == "__main__":
    main()
