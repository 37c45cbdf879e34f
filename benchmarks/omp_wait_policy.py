"""OpenMP's wait policy and CPU generation: SmolLM2-135M generating with torch's default 2 threads
under OMP_WAIT_POLICY=ACTIVE (what libgomp does when the variable is unset: threads spin while they
wait) against PASSIVE (they sleep; what ``crv_dagster/__init__.py`` sets), alone and beside a
second process doing the same, as when a test run or another partition shares the cores.

Each measurement is a fresh child process (the policy is read when OpenMP starts); the arms
alternate, ``--runs`` times each, and the script prints each arm's median and range.

    .venv/bin/python benchmarks/omp_wait_policy.py [--runs 3] [--tokens 32] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path, tokens, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tok = AutoTokenizer.from_pretrained(path, padding_side="left")
model = AutoModelForCausalLM.from_pretrained(path).eval()
enc = tok(["Tom has 3 apples and buys 5 more. How many apples does he have now?"] * batch,
          return_tensors="pt", padding=True)
with torch.inference_mode():
    model.generate(**enc, max_new_tokens=2, do_sample=False, pad_token_id=tok.eos_token_id)  # warm-up
    started = time.perf_counter()
    model.generate(**enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                   pad_token_id=tok.eos_token_id)
print(json.dumps({"seconds": time.perf_counter() - started, "threads": torch.get_num_threads()}))
"""


def _model() -> str:
    from crv_dagster.config import load_profile_file, profile_path
    from crv_dagster.models.located import resolve_profile_model

    return resolve_profile_model(load_profile_file(profile_path("demo")), "smollm2-135m")


def _measure(policy: str, path: str, tokens: int, batch: int, beside: bool) -> float:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    args = [sys.executable, "-c", CHILD, path, str(tokens), str(batch)]
    children = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
                for _ in range(2 if beside else 1)]
    seconds = [json.loads(c.communicate()[0].strip().splitlines()[-1])["seconds"] for c in children]
    return seconds[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    path = _model()
    results: dict[tuple[str, bool], list[float]] = {}
    started = time.time()
    for _ in range(args.runs):
        for beside in (False, True):
            for policy in ("ACTIVE", "PASSIVE"):
                results.setdefault((policy, beside), []).append(
                    _measure(policy, path, args.tokens, args.batch, beside))
    print(f"SmolLM2-135M, {args.batch} prompts x {args.tokens} new tokens, torch's default threads, "
          f"{args.runs} runs per arm, alternating ({time.time() - started:.0f} s in all)")
    for beside in (False, True):
        where = "beside a second generating process" if beside else "alone"
        medians = {}
        for policy in ("ACTIVE", "PASSIVE"):
            values = results[(policy, beside)]
            medians[policy] = statistics.median(values)
            print(f"  {where:<36} {policy:<8} median {medians[policy]:7.2f} s  "
                  f"(range {min(values):.2f}-{max(values):.2f})")
        print(f"  {where:<36} ratio ACTIVE / PASSIVE: {medians['ACTIVE'] / medians['PASSIVE']:.2f}x")


if __name__ == "__main__":
    main()
