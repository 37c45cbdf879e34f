"""Sandboxed test runs per second, serial and concurrent, against a bare ``subprocess.run`` of the
same programs.

Three programs stand in for solutions: one that prints its input reversed, one that counts primes
(about 50 ms of CPU), one that sorts numbers read from stdin. Each arm runs the same list of runs,
side by side in this invocation, the arms alternating over ``--rounds`` rounds (benchmarks/arms.py;
``--repeats`` is its old name) so that drift of the machine's speed lands on every arm; the script
prints per arm the median and min-max of runs per second and milliseconds per run, and the ratios
of medians against the bare runs.

    .venv/bin/python benchmarks/sandbox_throughput.py [--runs 48] [--rounds 3] [--concurrency 4]

Full measurement (as in docs/benchmarks.md; about a minute on 2 idle cores):

    .venv/bin/python benchmarks/sandbox_throughput.py --runs 24 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arms import Figure, add_rounds_argument, alternate, markdown_table, rounds_note  # noqa: E402

from crv_dagster.sandbox import Limits, Sandbox, namespaces_available  # noqa: E402

FIGURES = [Figure("runs_per_s", "runs/s", higher_is_better=True), Figure("ms_per_run", "ms per run")]

PROGRAMS = {
    "echo": ("print(input()[::-1])\n", "hello sandbox\n"),
    "primes": ("n = 30000\nsieve = [True] * n\ncount = 0\nfor i in range(2, n):\n    if sieve[i]:\n"
               "        count += 1\n        for j in range(i * i, n, i):\n            sieve[j] = False\nprint(count)\n", ""),
    "sort": ("import sys\nprint(*sorted(map(int, sys.stdin.read().split())))\n",
             " ".join(str((i * 7919) % 1000) for i in range(2000)) + "\n"),
}


def _bare(runs: list[str], scratch: Path) -> None:
    for name in runs:
        source, stdin = PROGRAMS[name]
        path = scratch / f"{name}.py"
        path.write_text(source)
        out = subprocess.run([sys.executable, "-I", "-B", str(path)], input=stdin, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def _sandboxed(sandbox: Sandbox, runs: list[str]) -> None:
    def one(name: str) -> None:
        source, stdin = PROGRAMS[name]
        result = sandbox.run_python(source, stdin=stdin)
        assert result.status == "ok", result

    with ThreadPoolExecutor(max_workers=sandbox.concurrency) as pool:
        list(pool.map(one, runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=48)
    add_rounds_argument(parser)
    parser.add_argument("--repeats", dest="rounds", type=int, default=argparse.SUPPRESS, help="the old name of --rounds")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    runs = [list(PROGRAMS)[i % len(PROGRAMS)] for i in range(args.runs)]
    limits = Limits()
    isolation = "namespaces" if namespaces_available() else "limits"
    labels = {
        "bare": "bare subprocess.run, serial (baseline)",
        "limits": "sandbox limits only, serial",
        "isolated": f"sandbox {isolation}, serial",
        "concurrent": f"sandbox {isolation}, {args.concurrency} at once",
    }
    with tempfile.TemporaryDirectory() as scratch:
        arms = {
            "bare": lambda: _bare(runs, Path(scratch)),
            "limits": lambda: _sandboxed(Sandbox(limits, "limits", 1), runs),
            "isolated": lambda: _sandboxed(Sandbox(limits, isolation, 1), runs),
            "concurrent": lambda: _sandboxed(Sandbox(limits, isolation, args.concurrency), runs),
        }

        def one(arm: str) -> dict:
            started = time.perf_counter()
            arms[arm]()
            seconds = time.perf_counter() - started
            return {"runs_per_s": args.runs / seconds, "ms_per_run": 1000 * seconds / args.runs}

        results = alternate(list(arms), one, args.rounds)
    print(f"{args.runs} runs per arm ({', '.join(PROGRAMS)}), {os.cpu_count()} CPUs  ({rounds_note(results)})")
    print(markdown_table(results, labels, FIGURES, baseline="bare", ratio_label="vs bare"))


if __name__ == "__main__":
    main()
