"""Generation throughput of the agent backends: the same agent prompts through transformers one at a
time, transformers batched, and vLLM's offline engine, side by side in one invocation.

The vLLM backend hands each reply over as its request finishes (it drives the engine step by step
in its child process); the last arm is one whole ``LLM.chat`` call in this process, which hands
nothing over until the end: the cost of keeping finished replies is the ratio of the two.

The prompts are the Rethinker's expansion prompt over built-in `arith` CoTs (what the agents spend
their time on), greedy, with one token budget for every arm. Throughput is completion tokens per
second of generation (model loading and engine start-up are reported apart). vLLM needs its own
environment, so this runs in .venv-vllm:

    make bench-generation        # or: CRV_VLLM_MODEL=DIR .venv-vllm/bin/python benchmarks/generation_throughput.py
"""

from __future__ import annotations

import argparse
import os
import time

from crv_dagster.agents.rethinker import Rethinker, RewriteTask, load_rethinker_prompts
from crv_dagster.data.arith import generate_arith
from crv_dagster.llm.base import ChatRequest, SamplingParams


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
            "finished": sum(c.finish_reason == "stop" for c in completions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("CRV_VLLM_MODEL"), help="a safetensors model folder")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    if not args.model:
        parser.error("--model (or CRV_VLLM_MODEL) must name a safetensors model folder")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # see ../shared/notes/vllm-cpu.md
    from crv_dagster.llm.transformers_backend import TransformersBackend
    from crv_dagster.llm.vllm_backend import VllmBackend

    requests = agent_requests(args.prompts, args.max_new_tokens)
    arms = {
        "transformers, one at a time (baseline)": lambda: TransformersBackend(args.model, batch_size=1, dtype=args.dtype),
        f"transformers, batches of {args.batch_size}": lambda: TransformersBackend(
            args.model, batch_size=args.batch_size, dtype=args.dtype),
        "vLLM offline engine (replies as they finish)": lambda: VllmBackend(
            args.model, dtype=args.dtype, max_model_len=2048, enforce_eager=True),
        "vLLM, one whole LLM.chat call": lambda: WholeChatCall(args.model, args.dtype),
    }
    results = {name: timed(make, requests) for name, make in arms.items()}
    base = results[next(iter(arms))]
    base_rate = base["tokens"] / base["generate_s"]
    print(f"{args.prompts} Rethinker prompts, greedy, max_new_tokens {args.max_new_tokens}, {args.dtype}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'arm':<46}{'start s':>8}{'gen s':>8}{'tokens':>8}{'tok/s':>8}{'vs baseline':>13}")
    for name, r in results.items():
        rate = r["tokens"] / r["generate_s"]
        print(f"{name:<46}{r['startup_s']:>8.1f}{r['generate_s']:>8.1f}{r['tokens']:>8}{rate:>8.1f}"
              f"{rate / base_rate:>12.2f}x")
    ours = results["vLLM offline engine (replies as they finish)"]
    whole = results["vLLM, one whole LLM.chat call"]
    print(f"replies as they finish / one whole call: "
          f"{(ours['tokens'] / ours['generate_s']) / (whole['tokens'] / whole['generate_s']):.2f}x throughput")


if __name__ == "__main__":
    main()
