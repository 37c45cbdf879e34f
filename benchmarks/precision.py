"""Training precision: float32 weights against the profile default (``torch_dtype: auto``, bf16
mixed precision, gradient checkpointing), through the project's own SFT and CogPO code.

On a GPU with bf16, ``auto`` loads bfloat16 weights; on a CPU it stays float32 and only gradient
checkpointing differs. Each run is a fresh child process on the same random-weight Qwen2 model and
the same data, the arms alternating over ``--rounds`` rounds (benchmarks/arms.py); the script
prints the device, the dtype the weights were loaded in, and per arm the median and min-max of
seconds per step, peak memory (GPU: max allocated; CPU: the child's own max RSS), and the ratios of
medians.

    .venv/bin/python benchmarks/precision.py [--hidden 256 --layers 4] [--steps 6] [--rounds 3]

Full measurement (the CPU table of docs/benchmarks.md; a few minutes on 2 idle cores, six children
of about 20-40 s); on a GPU machine ``--hidden 1024 --layers 12`` gives the GPU arm:

    .venv/bin/python benchmarks/precision.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from arms import Figure, add_rounds_argument, alternate, markdown_table, rounds_note, run_child  # noqa: E402

ARMS = {
    "float32": {"torch_dtype": "float32", "bf16": False, "gradient_checkpointing": False},
    "auto_bf16_gc": {"torch_dtype": "auto", "bf16": True, "gradient_checkpointing": True},
}
LABELS = {"float32": "float32, no checkpointing", "auto_bf16_gc": "auto + bf16 + checkpointing"}
FIGURES = [Figure("sft_s_per_step", "SFT s/step", ".3f"), Figure("cogpo_s_per_step", "CogPO s/step", ".3f"),
           Figure("gpu_peak_mib", "GPU peak MiB", ".0f"), Figure("peak_rss_mib", "peak RSS MiB", ".0f")]


def _verified(n: int):
    from known_data import arith_verified_set

    return arith_verified_set(n, seed=3, dataset="bench")


def _child(arm: str, model: str, steps: int, out_dir: str) -> dict:
    import torch
    from transformers import AutoTokenizer, TrainerCallback

    from crv_dagster.config import TrainingConfig
    from crv_dagster.training.cogpo import train_preference
    from crv_dagster.models.loading import load_student
    from crv_dagster.preference.pairs import build_pairs, chat_prompt_renderer, incorrect_by_perturbation
    from crv_dagster.training.plan import sft_examples
    from crv_dagster.training.sft import train_sft

    step_times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            step_times.append(time.perf_counter() - self.start)

    timer = Timer()

    settings = {**ARMS[arm], "max_steps": steps, "per_device_train_batch_size": 4, "max_length": 512,
                "learning_rate": 1e-4, "warmup_ratio": 0.0}
    config = TrainingConfig.model_validate({"sft": settings, "cogpo": {**settings, "learning_rate": 1e-5},
                                            "pairs": {"incorrect_source": "perturb"}})
    loaded, _ = load_student(model, config.sft.torch_dtype)
    dtype = str(next(loaded.parameters()).dtype)
    del loaded
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    verified = _verified(32)
    sft = train_sft(model, sft_examples("sft", verified), Path(out_dir) / "sft", config, callbacks=[timer])
    sft_times, step_times[:] = list(step_times), []
    tokenizer = AutoTokenizer.from_pretrained(model)
    wrong, _ = incorrect_by_perturbation(verified, seed=0)
    pairs, _ = build_pairs(verified, wrong, config.pairs.betas.model_dump(), chat_prompt_renderer(tokenizer))
    cogpo = train_preference(str(Path(out_dir) / "sft"), pairs, Path(out_dir) / "cogpo", config, callbacks=[timer])
    steady = lambda times: sum(times[1:]) / max(1, len(times) - 1)  # noqa: E731 - the first step warms up
    return {
        "arm": arm, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "dtype": dtype, "sft_s_per_step": steady(sft_times), "cogpo_s_per_step": steady(step_times),
        "sft_loss": [sft.loss.get("first"), sft.loss.get("last")],
        "cogpo_loss_by_kind": [cogpo.loss_by_kind_before, cogpo.loss_by_kind_after],
        "gpu_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
    }


def _model(hidden: int, layers: int) -> str:
    from crv_dagster.config import TinyModel
    from crv_dagster.models.store import resolve_model

    root = Path(os.environ.get("CRV_MODELS_DIR", Path(__file__).resolve().parent.parent / "artifacts" / "bench"))
    spec = TinyModel(source="tiny", hidden_size=hidden, num_layers=layers, num_heads=max(4, hidden // 64))
    return resolve_model(f"bench-{hidden}x{layers}", spec, root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    add_rounds_argument(parser)
    parser.add_argument("--child", choices=list(ARMS))
    parser.add_argument("--model")
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as out:
            print(json.dumps(_child(args.child, args.model, args.steps, out)))
        return
    model = _model(args.hidden, args.layers)

    def one(arm: str) -> dict:
        child = run_child([sys.executable, __file__, "--child", arm, "--model", model, "--steps", str(args.steps)],
                          what=arm)
        return {**child.last_json(), "peak_rss_mib": child.max_rss_mib}

    runs = alternate(list(ARMS), one, args.rounds)
    base = runs["float32"][0]
    print(f"model: random Qwen2 hidden {args.hidden} x {args.layers} layers   device: {base['device']}   weights: "
          + ", ".join(f"{arm} {rs[0]['dtype']}" for arm, rs in runs.items()) + f"  ({rounds_note(runs)})")
    print(markdown_table(runs, LABELS, FIGURES, baseline="float32", ratio_label="ratio baseline / paper setting"))
    print(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
