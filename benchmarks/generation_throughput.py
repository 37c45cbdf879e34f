"""Generation throughput of the agent backends: the same agent prompts through transformers one at a
time, transformers batched, and vLLM's offline engine, side by side in one invocation.

The vLLM backend hands each reply over as its request finishes (it drives the engine step by step
in its child process); the last arm is one whole ``LLM.chat`` call in this process, which hands
nothing over until the end: the cost of keeping finished replies is the ratio of the two.

The prompts are the Rethinker's expansion prompt over built-in `arith` CoTs (what the agents spend
their time on), greedy, with one token budget for every arm. Throughput is completion tokens per
second of generation (model loading and engine start-up are reported apart). The arms alternate
over ``--rounds`` rounds (benchmarks/arms.py), each run starting its backend afresh, and the script
prints per arm the median and min-max of each figure and the ratios of medians against the first
arm; ``--arms`` picks some of them (the transformers arms run without vLLM). vLLM needs its own
environment, so the full benchmark runs in .venv-vllm:

    make bench-generation        # or: CRV_VLLM_MODEL=DIR .venv-vllm/bin/python benchmarks/generation_throughput.py

Full measurement (about 30 minutes on 2 idle cores, most of it the one-at-a-time baseline's three
runs of 6-7 minutes; not yet run with rounds: the whole-call arm starts vLLM's engine in this
process once per round):

    CRV_VLLM_MODEL=DIR .venv-vllm/bin/python benchmarks/generation_throughput.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arms import Figure, add_rounds_argument, alternate, markdown_table, rounds_note  # noqa: E402
from arms import median as median_of  # noqa: E402

from crv_dagster.agents.rethinker import Rethinker, RewriteTask, load_rethinker_prompts  # noqa: E402
from crv_dagster.data.arith import generate_arith  # noqa: E402
from crv_dagster.llm.base import ChatRequest, SamplingParams  # noqa: E402

FIGURES = [Figure("startup_s", "start-up s"), Figure("generate_s", "generation s"), Figure("tokens", "tokens", ".0f", compared=False),
           Figure("tokens_per_s", "tokens/s", higher_is_better=True)]
ARM_KEYS = ("one_at_a_time", "batched", "vllm", "vllm_whole_call")


def agent_requests(n: int, max_new_tokens: int) -> list[ChatRequest]:
    """The Rethinker's own expansion requests (its prompt and layout rules) over built-in CoTs."""
    prompts = load_rethinker_prompts("rethink_expand.txt", "rethink_simplify.txt")
    rethinker = Rethinker(None, prompts, SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))
    return [rethinker.request(RewriteTask(p.question, p.answer, p.cot, "expand"), "135M", attempt=1)
            for p in generate_arith(n, seed=7)]


class WholeChatCall:
    """vLLM's ``LLM.chat`` on every request at once, in this process: no reply before the last."""

    def __init__(self, model: str, dtype: str):
        from vllm import LLM

        self.llm = LLM(model=model, dtype=dtype, max_model_len=2048, enforce_eager=True)

    def generate(self, requests):
        from vllm import SamplingParams as VllmSampling

        from crv_dagster.llm.base import Completion

        params = [VllmSampling(max_tokens=r.params.max_new_tokens, temperature=r.params.temperature) for r in requests]
        outputs = self.llm.chat([r.message_dicts() for r in requests], params, use_tqdm=False)
        return [Completion(o.outputs[0].text, o.outputs[0].finish_reason or "stop", len(o.prompt_token_ids),
                           len(o.outputs[0].token_ids)) for o in outputs]

    def close(self):
        from crv_dagster.llm.vllm_backend import _shutdown

        _shutdown(self.llm)


def timed(make_backend, requests) -> dict:
    started = time.perf_counter()
    backend = make_backend()
    ready = time.perf_counter()
    completions = backend.generate(requests)
    done = time.perf_counter()
    close = getattr(backend, "close", None)
    if close:
        close()
    tokens = sum(c.completion_tokens for c in completions)
    return {"startup_s": ready - started, "generate_s": done - ready, "tokens": tokens,
            "tokens_per_s": tokens / (done - ready), "finished": sum(c.finish_reason == "stop" for c in completions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("CRV_VLLM_MODEL"), help="a safetensors model folder")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--arms", default=",".join(ARM_KEYS),
                        help=f"comma-separated, of {', '.join(ARM_KEYS)} (the first is the baseline)")
    add_rounds_argument(parser)
    args = parser.parse_args()
    if not args.model:
        parser.error("--model (or CRV_VLLM_MODEL) must name a safetensors model folder")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # see ../shared/notes/vllm-cpu.md
    from crv_dagster.llm.transformers_backend import TransformersBackend
    from crv_dagster.llm.vllm_backend import VllmBackend

    requests = agent_requests(args.prompts, args.max_new_tokens)
    makers = {
        "one_at_a_time": lambda: TransformersBackend(args.model, batch_size=1, dtype=args.dtype),
        "batched": lambda: TransformersBackend(args.model, batch_size=args.batch_size, dtype=args.dtype),
        "vllm": lambda: VllmBackend(args.model, dtype=args.dtype, max_model_len=2048, enforce_eager=True),
        "vllm_whole_call": lambda: WholeChatCall(args.model, args.dtype),
    }
    labels = {
        "one_at_a_time": "transformers, one at a time (baseline)",
        "batched": f"transformers, batches of {args.batch_size}",
        "vllm": "vLLM offline engine (replies as they finish)",
        "vllm_whole_call": "vLLM, one whole LLM.chat call",
    }
    chosen = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    if unknown := set(chosen) - set(makers):
        parser.error(f"--arms: unknown {sorted(unknown)}; choose from {', '.join(ARM_KEYS)}")
    results = alternate(chosen, lambda arm: timed(makers[arm], requests), args.rounds)
    print(f"{args.prompts} Rethinker prompts, greedy, max_new_tokens {args.max_new_tokens}, {args.dtype}, "
          f"{os.cpu_count()} CPUs  ({rounds_note(results)})")
    print(markdown_table(results, {arm: labels[arm] for arm in chosen}, FIGURES, baseline=chosen[0]))
    if {"vllm", "vllm_whole_call"} <= set(chosen):
        rate = {arm: median_of(results[arm], "tokens_per_s") for arm in ("vllm", "vllm_whole_call")}
        print(f"replies as they finish / one whole call: {rate['vllm'] / rate['vllm_whole_call']:.2f}x throughput "
              "(medians)")


if __name__ == "__main__":
    main()
