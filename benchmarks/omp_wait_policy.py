"""OpenMP's wait policy and CPU generation: SmolLM2-135M generating with torch's default 2 threads
under OMP_WAIT_POLICY=ACTIVE (what libgomp does when the variable is unset: threads spin while they
wait) against PASSIVE (they sleep; what ``crv_dagster/__init__.py`` sets), alone and beside a
second process doing the same, as when a test run or another partition shares the cores.

Each measurement is a fresh child process (the policy is read when OpenMP starts); the four
(policy, alone or beside) arms alternate over ``--rounds`` rounds (benchmarks/arms.py; ``--runs``
is its old name), and the script prints each arm's median and min-max and the ratio of medians
ACTIVE / PASSIVE.

    .venv/bin/python benchmarks/omp_wait_policy.py [--rounds 3] [--tokens 32] [--batch 8]

Full measurement (a few minutes on 2 otherwise idle cores; an ACTIVE run beside another process
can take two minutes, as docs/benchmarks.md's 128.9 s shows):

    .venv/bin/python benchmarks/omp_wait_policy.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arms import Figure, add_rounds_argument, alternate, markdown_table, rounds_note  # noqa: E402

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
    add_rounds_argument(parser)
    parser.add_argument("--runs", dest="rounds", type=int, default=argparse.SUPPRESS, help="the old name of --rounds")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    path = _model()
    places = {"alone": "alone", "beside": "beside a second generating process"}

    def one(arm: str) -> dict:
        policy, place = arm.split("/")
        return {"seconds": _measure(policy, path, args.tokens, args.batch, place == "beside")}

    started = time.time()
    results = alternate([f"{policy}/{place}" for place in places for policy in ("ACTIVE", "PASSIVE")], one,
                        args.rounds)
    print(f"SmolLM2-135M, {args.batch} prompts x {args.tokens} new tokens, torch's default threads "
          f"({time.time() - started:.0f} s in all; {rounds_note(results)})")
    for place, where in places.items():
        labels = {f"{policy}/{place}": (where, policy) for policy in ("ACTIVE", "PASSIVE")}
        print(markdown_table(results, labels, [Figure("seconds", "seconds", ".2f")], baseline=f"ACTIVE/{place}",
                             first_column=("where", "OMP_WAIT_POLICY"), ratio_label="ratio ACTIVE / PASSIVE") + "\n")


if __name__ == "__main__":
    main()
