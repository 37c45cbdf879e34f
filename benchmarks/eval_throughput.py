"""Evaluation throughput, today's code against a previous commit: the base student answering the same
held-out arithmetic problems through the project's evaluation path, under each code's demo protocol.

Each run is a fresh child process that imports the package from one tree (the tree first on
PYTHONPATH, its root the working directory, an empty artifacts root so the response cache starts
empty) and does what ``eval_scores`` does for one model: ``factory.build_backend`` of the demo
profile's evaluation backend on SmolLM2-135M as the project converts it, then
``evaluation.scoring.generate_answers`` on the problems under
``evaluation.protocol_for(heldout_name("arith"))``. The problems are ``--problems`` fresh ones from
the built-in ``arith`` generator (``--seed``), the same for both arms; greedy, one sample each.

The previous code is ``--baseline-ref`` checked out into a temporary ``git worktree``; both arms run
in this interpreter's virtual environment. Each arm keeps its own demo profile (batch size, token
budget, stop_at_answer), so the ratio is what a user of the demo sees: at the default ref, 9d8be54
(the parent of issue 32's first commit, as in demo_rerun.py), the evaluation had batches of 8 and
160 new tokens with no stop at the answer, in float32; today it has one batch of 40 and 128 tokens,
each reply ending at its boxed answer if it writes one, with bfloat16 weights where the CPU
multiplies bf16 natively (``dtype: auto``). The previous code also lacks the passive OpenMP wait
(2f9c87b): beside another busy process its generation slows many times over (likely why a smoke
run of 4 problems, one batch in each arm, beside a long experiment, gave 2.7 tokens/s against
20.1), so measure on otherwise idle cores, or pass ``--omp-wait-policy PASSIVE`` to give both arms
the same policy. The functions called exist with the same signatures at both commits (checked with
``git show 9d8be54:crv_dagster/...``); the child reports which tree it imported.

The arms alternate over ``--rounds`` rounds (benchmarks/arms.py); per arm the script prints the
median and min-max of problems per second and completion tokens per second of generation (model
loading apart), the load time, the tokens produced and the accuracy, and the ratios of medians.

    .venv/bin/python benchmarks/eval_throughput.py [--problems 40] [--rounds 3] [--baseline-ref REF]

Full measurement (the demo's 40 held-out problems; on 2 otherwise idle cores about 15 minutes:
six children of 1-4 minutes, the previous code's the longer):

    .venv/bin/python benchmarks/eval_throughput.py --problems 40 --rounds 3
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arms import Figure, add_rounds_argument, alternate, markdown_table, rounds_note, run_child  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BASELINE_REF = "9d8be54"
SIZE = "smollm2-135m"
FIGURES = [Figure("problems_per_s", "problems/s", ".3f", higher_is_better=True),
           Figure("tokens_per_s", "tokens/s", higher_is_better=True),
           Figure("generate_s", "generation s"), Figure("load_s", "load s"),
           Figure("tokens", "tokens", ".0f", compared=False), Figure("accuracy", "accuracy %", ".1f", compared=False)]


def _child(problems: int, seed: int) -> dict:
    """One scoring run with whichever crv_dagster is first on the path; prints nothing else to stdout."""
    import pandas as pd

    import crv_dagster
    from crv_dagster.config import load_profile_file, profile_path
    from crv_dagster.data.arith import generate_arith
    from crv_dagster.evaluation.benchmarks import heldout_name
    from crv_dagster.evaluation.scoring import generate_answers
    from crv_dagster.factory import build_backend
    from crv_dagster.models.located import student_base_model

    cfg = load_profile_file(profile_path("demo"))
    benchmark = heldout_name("arith")
    protocol = cfg.evaluation.protocol_for(benchmark)
    frame = pd.DataFrame([{"problem_id": f"p{i}", "question": p.question, "answer": p.answer}
                          for i, p in enumerate(generate_arith(problems, seed=seed))])
    started = time.perf_counter()
    with build_backend(cfg, cfg.evaluation.backend, model_path=student_base_model(cfg, SIZE)) as backend:
        loaded = time.perf_counter()
        details = generate_answers(backend, "base", benchmark, frame, protocol)
        done = time.perf_counter()
    tokens = int(details["response_tokens"].sum())
    return {"package": str(Path(crv_dagster.__file__).parent), "protocol": protocol.model_dump(),
            "batch_size": cfg.backends[cfg.evaluation.backend].batch_size, "problems": len(frame),
            "load_s": loaded - started, "generate_s": done - loaded, "tokens": tokens,
            "problems_per_s": len(frame) / (done - loaded), "tokens_per_s": tokens / (done - loaded),
            "accuracy": 100 * float(details["correct"].mean()),
            "finish_reasons": details["finish_reason"].value_counts().to_dict()}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def _models(tree: Path, models: Path) -> None:
    """The student as that tree converts it, made before any timing."""
    env = {**os.environ, "PYTHONPATH": str(tree), "CRV_MODELS_DIR": str(models), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "crv_dagster.models", "demo", SIZE], env=env, cwd=tree, check=True,
                   capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=40, help="held-out problems (the demo scores 40)")
    parser.add_argument("--seed", type=int, default=1000, help="the arith generator's seed for the problems")
    parser.add_argument("--baseline-ref", default=BASELINE_REF, help=f"the previous code (default {BASELINE_REF})")
    parser.add_argument("--omp-wait-policy", choices=["PASSIVE", "ACTIVE"],
                        help="OMP_WAIT_POLICY for both arms (default: unset, each code as it is)")
    add_rounds_argument(parser)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.problems, args.seed)))
        return
    commit = _git("rev-parse", "--short", f"{args.baseline_ref}^{{commit}}")
    head = _git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if _git("status", "--porcelain",
                                                                                   "--untracked-files=no") else "")
    with tempfile.TemporaryDirectory(prefix="eval-throughput-") as tmp:
        work = Path(tmp)
        trees = {"previous": work / f"tree-{commit}", "today": ROOT}
        labels = {"previous": f"baseline: {commit}, its demo protocol", "today": f"ours: {head}, its demo protocol"}
        _git("worktree", "add", "--detach", str(trees["previous"]), commit)
        try:
            for name, tree in trees.items():
                _models(tree, work / f"models-{name}")

            def one(name: str) -> dict:
                with tempfile.TemporaryDirectory(dir=work) as artifacts:  # an empty response cache every run
                    env = {**os.environ, "PYTHONPATH": str(trees[name]), "CRV_MODELS_DIR": str(work / f"models-{name}"),
                           "CRV_ARTIFACTS_ROOT": artifacts, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                           **({"OMP_WAIT_POLICY": args.omp_wait_policy} if args.omp_wait_policy else {})}
                    result = run_child([sys.executable, __file__, "--child", "--problems", str(args.problems),
                                        "--seed", str(args.seed)], env=env, cwd=trees[name], what=name).last_json()
                if not Path(result["package"]).resolve().is_relative_to(trees[name].resolve()):
                    raise SystemExit(f"{name}: imported {result['package']}, not the tree {trees[name]}")
                return result

            results = alternate(list(trees), one, args.rounds)
        finally:
            _git("worktree", "remove", "--force", str(trees["previous"]))
    print(f"SmolLM2-135M (base), {args.problems} arith problems (seed {args.seed}), greedy, one sample, "
          f"{os.cpu_count()} CPUs, OMP_WAIT_POLICY {args.omp_wait_policy or 'as each code sets it'}  "
          f"({rounds_note(results)})")
    for name, runs in results.items():
        first = runs[0]
        print(f"  {name}: batch {first['batch_size']}, max_new_tokens {first['protocol']['max_new_tokens']}, "
              f"stop_at_answer {first['protocol'].get('stop_at_answer', 'absent (no such option)')}, "
              f"finish reasons {first['finish_reasons']}")
    print("Each arm ran its own code under its own demo profile's evaluation protocol: the ratio includes "
          "the protocol's changes (stop at the answer, token budget, batch size), as a user of the demo sees it.")
    print(markdown_table(results, labels, FIGURES, baseline="previous", ratio_label="ratio against baseline"))


if __name__ == "__main__":
    main()
