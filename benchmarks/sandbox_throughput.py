"""Sandboxed test runs per second, serial and concurrent, against a bare ``subprocess.run`` of the
same programs.

Three programs stand in for solutions: one that prints its input reversed, one that counts primes
(about 50 ms of CPU), one that sorts numbers read from stdin. Each arm runs the same list of runs,
side by side in this invocation, arms interleaved over the repeats so that drift of the machine's
speed lands on every arm.

    .venv/bin/python benchmarks/sandbox_throughput.py [--runs 48] [--repeats 3] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from crv_dagster.sandbox import Limits, Sandbox, namespaces_available

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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    runs = [list(PROGRAMS)[i % len(PROGRAMS)] for i in range(args.runs)]
    limits = Limits()
    isolation = "namespaces" if namespaces_available() else "limits"
    arms = {
        "bare subprocess.run, serial (baseline)": lambda scratch: _bare(runs, scratch),
        "sandbox limits only, serial": lambda _: _sandboxed(Sandbox(limits, "limits", 1), runs),
        f"sandbox {isolation}, serial": lambda _: _sandboxed(Sandbox(limits, isolation, 1), runs),
        f"sandbox {isolation}, {args.concurrency} at once": lambda _: _sandboxed(
            Sandbox(limits, isolation, args.concurrency), runs),
    }
    seconds = {name: [] for name in arms}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.repeats):
            for name, arm in arms.items():
                started = time.perf_counter()
                arm(Path(scratch))
                seconds[name].append(time.perf_counter() - started)
    baseline = statistics.median(seconds[next(iter(arms))])
    print(f"{args.runs} runs per arm ({', '.join(PROGRAMS)}), median of {args.repeats} repeats, "
          f"{os.cpu_count()} CPUs")
    print(f"{'arm':<44}{'runs/s':>8}{'ms/run':>9}{'time vs baseline':>18}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:<44}{args.runs / median:>8.1f}{1000 * median / args.runs:>9.1f}{median / baseline:>17.2f}x")


if __name__ == "__main__":
    main()
