"""CogPO training: our trainer (reference log-probs precomputed once) against a baseline that
keeps a reference model in memory and runs it at every step.

Both runs train the same model on the same pairs with the same settings, each in a fresh child
process so peak memory (its own max RSS) is measured separately; the arms alternate over
``--rounds`` rounds (benchmarks/arms.py) and the script prints, per arm, the median and min-max of
seconds per step, setup, total and peak memory, and the ratios of medians.

    .venv/bin/python benchmarks/cogpo_training.py [--model demo|tiny] [--steps 6] [--pairs 16] [--rounds 3]

Full measurement (``make bench`` runs it with these defaults; about 25 minutes on 2 idle cores:
six runs of 3-4 minutes):

    .venv/bin/python benchmarks/cogpo_training.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from arms import Figure, add_rounds_argument, alternate, markdown_table, rounds_note, run_child  # noqa: E402

ARMS = {"precomputed": "ours: reference precomputed once", "reference_model": "baseline: reference model at every step"}
FIGURES = [Figure("s_per_step", "s/step", ".2f"), Figure("setup_s", "setup s"), Figure("total_s", "total s"),
           Figure("peak_rss_mib", "peak RSS MiB", ".0f")]


def _pairs(tokenizer, n: int):
    from known_data import arith_verified_set
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
    child = run_child(cmd, what=f"{mode} run")
    return {**child.last_json(), "peak_rss_mib": child.max_rss_mib}


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
    add_rounds_argument(parser)
    parser.add_argument("--child", choices=list(ARMS))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.model, args.steps, args.pairs, args.threads)))
        return
    args.model = _model_path(args.model)
    runs = alternate(list(ARMS), lambda mode: _run_child(mode, args), args.rounds)
    first = runs["precomputed"][0]
    print(f"model: {args.model}  pairs: {first['pairs']}  steps: {first['steps']}  threads: {args.threads}  "
          f"({rounds_note(runs)})")
    print(markdown_table(runs, ARMS, FIGURES, baseline="reference_model", first_column="run",
                         ratio_label="ratio baseline / ours"))


if __name__ == "__main__":
    main()
