"""Preference methods from one SFT checkpoint: reference log-probs computed once and shared, against
computing them again for every method.

CogPO, DPO, DPO with the mean CogPO beta and IPO all score the pairs against the same reference
model (the SFT checkpoint), so its log-probs need one forward pass over the pairs, not one per
method. Both arms train the same methods on the same pairs with the same settings, each arm in a
fresh child process, side by side in this invocation; the script prints wall time per arm, the
time spent in reference passes and the ratios.

    .venv/bin/python benchmarks/shared_reference.py [--model demo|tiny] [--pairs 32] [--steps 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

METHODS = ["cogpo", "dpo", "dpo_mean_beta", "ipo"]


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
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{arm} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from cogpo_training import _model_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo", help="demo (SmolLM2-135M), tiny, or an HF folder")
    parser.add_argument("--pairs", type=int, default=32, help="problems; one large-gap pair each")
    parser.add_argument("--steps", type=int, default=2, help="training steps per method")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=["shared", "per_method"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.model, args.pairs, args.steps, args.threads)))
        return
    args.model = _model_path(args.model)
    # Alternating arms, twice: drift of the machine's speed lands on both.
    runs = [_run_child(arm, args) for _ in range(2) for arm in ("per_method", "shared")]
    by_arm = {arm: [r for r in runs if r["arm"] == arm] for arm in ("per_method", "shared")}
    mean = {arm: {k: sum(r[k] for r in rs) / len(rs) for k in ("total_s", "reference_s")} for arm, rs in by_arm.items()}
    print(f"model: {args.model}  pairs: {runs[0]['pairs']}  methods: {', '.join(METHODS)}  "
          f"steps per method: {args.steps}  threads: {args.threads}  (mean of 2 runs per arm)")
    print(f"{'arm':<44}{'total s':>10}{'reference s':>14}")
    for arm, name in (("per_method", "baseline: reference pass for every method"),
                      ("shared", "ours: one reference pass, shared")):
        print(f"{name:<44}{mean[arm]['total_s']:>10.1f}{mean[arm]['reference_s']:>14.1f}")
    print(f"ratio baseline/ours: total time {mean['per_method']['total_s'] / mean['shared']['total_s']:.2f}x, "
          f"reference time {mean['per_method']['reference_s'] / mean['shared']['reference_s']:.2f}x")


if __name__ == "__main__":
    main()
