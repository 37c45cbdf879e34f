"""Preference methods from one SFT checkpoint: reference log-probs computed once and shared, against
computing them again for every method.

CogPO, DPO, DPO with the mean CogPO beta and IPO all score the pairs against the same reference
model (the SFT checkpoint), so its log-probs need one forward pass over the pairs, not one per
method. Both arms train the same methods on the same pairs with the same settings, each run in a
fresh child process, the arms alternating over ``--rounds`` rounds (benchmarks/arms.py); the
script prints per arm the median and min-max of the wall time and of the time spent in reference
passes, and the ratios of medians.

    .venv/bin/python benchmarks/shared_reference.py [--model demo|tiny] [--pairs 32] [--steps 2] [--rounds 3]

Full measurement (SmolLM2-135M as in docs/benchmarks.md; about 22 minutes on 2 idle cores: six
runs of 3-4 minutes):

    .venv/bin/python benchmarks/shared_reference.py --pairs 16 --steps 2 --rounds 3
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from arms import Figure, add_rounds_argument, alternate, markdown_table, rounds_note, run_child  # noqa: E402

METHODS = ["cogpo", "dpo", "dpo_mean_beta", "ipo"]
ARMS = {"per_method": "baseline: a reference pass for every method", "shared": "ours: one reference pass, shared"}
FIGURES = [Figure("total_s", "total s"), Figure("reference_s", "reference passes s")]


def _child(arm: str, model_path: str, n_pairs: int, steps: int, threads: int) -> dict:
    from cogpo_training import _pairs
    from transformers import AutoTokenizer

    from crv_dagster.config import CONFIG_DIR, load_profile_file
    from crv_dagster.training.cogpo import train_preference

    training = load_profile_file(CONFIG_DIR / "demo.yaml").training
    training = training.model_copy(update={
        "torch_threads": threads,
        "cogpo": training.cogpo.model_copy(update={"max_steps": steps, "per_device_train_batch_size": 4})})
    pairs = _pairs(AutoTokenizer.from_pretrained(model_path), n_pairs)
    reference, reference_s, per_method = None, 0.0, {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        for method in METHODS:
            began = time.perf_counter()
            result = train_preference(model_path, pairs, Path(out) / method, training, method=method,
                                      reference=reference if arm == "shared" else None)
            per_method[method] = time.perf_counter() - began
            if result.reference is not reference:  # this method computed its own reference pass
                reference_s += result.reference.seconds
            if arm == "shared":
                reference = result.reference
    return {"arm": arm, "pairs": len(pairs), "total_s": time.perf_counter() - start, "reference_s": reference_s,
            "per_method_s": per_method}


def _run_child(arm: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", arm, "--model", args.model, "--pairs", str(args.pairs),
           "--steps", str(args.steps), "--threads", str(args.threads)]
    return run_child(cmd, what=f"{arm} run").last_json()


def main() -> None:
    from cogpo_training import _model_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo", help="demo (SmolLM2-135M), tiny, or an HF folder")
    parser.add_argument("--pairs", type=int, default=32, help="problems; one large-gap pair each")
    parser.add_argument("--steps", type=int, default=2, help="training steps per method")
    parser.add_argument("--threads", type=int, default=2)
    add_rounds_argument(parser)
    parser.add_argument("--child", choices=list(ARMS))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.model, args.pairs, args.steps, args.threads)))
        return
    args.model = _model_path(args.model)
    runs = alternate(list(ARMS), lambda arm: _run_child(arm, args), args.rounds)
    print(f"model: {args.model}  pairs: {runs['shared'][0]['pairs']}  methods: {', '.join(METHODS)}  "
          f"steps per method: {args.steps}  threads: {args.threads}  ({rounds_note(runs)})")
    print(markdown_table(runs, ARMS, FIGURES, baseline="per_method", ratio_label="ratio baseline / ours"))


if __name__ == "__main__":
    main()
