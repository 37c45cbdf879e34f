"""benchmarks/arms.py: the rotation that alternates a benchmark's arms, its median/min-max table,
and the child's own peak memory (not the running maximum over every child)."""

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from arms import Figure, alternate, markdown_table, rotations  # noqa: E402


def test_rounds_rotate_so_no_arm_always_runs_first():
    assert rotations(["a", "b"], 3) == [["a", "b"], ["b", "a"], ["a", "b"]]
    assert [order[0] for order in rotations(["a", "b", "c"], 3)] == ["a", "b", "c"]
    seen = []
    results = alternate(["a", "b"], lambda arm: seen.append(arm) or {"s": len(seen)}, rounds=3, progress=False)
    assert seen == ["a", "b", "b", "a", "a", "b"]
    assert [r["s"] for r in results["b"]] == [2, 3, 6]


def test_table_gives_median_spread_and_oriented_ratios():
    results = {"base": [{"s": 4.0, "rate": 1.0}, {"s": 6.0, "rate": 1.0}, {"s": 5.0, "rate": 3.0}],
               "ours": [{"s": 2.0, "rate": 2.0}, {"s": 3.0, "rate": 2.0}, {"s": 2.5, "rate": 2.0}]}
    table = markdown_table(results, {"base": "baseline", "ours": "ours"},
                           [Figure("s", "s"), Figure("rate", "runs/s", higher_is_better=True)], baseline="base")
    lines = table.splitlines()
    assert lines[0] == "| arm | s median | min-max | runs/s median | min-max |"
    assert lines[2] == "| baseline | 5.0 | 4.0-6.0 | 1.0 | 1.0-3.0 |"
    assert lines[4] == "| **ratio vs baseline** | **2.00x** |  | **2.00x** |  |"  # 5/2.5 and 2/1


def test_child_peak_memory_is_its_own():
    # From a small parent, as the benchmark scripts are: Linux carries the parent's high-water mark
    # over a fork into the child's, so a parent holding a model (a full test run: torch and
    # transformers loaded) would lift every child's figure to its own size.
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from arms import run_child\n"
        "big = run_child([sys.executable, '-c', \"x = bytearray(200 * 2**20); x[::4096] = b'1' * len(x[::4096])\"])\n"
        "small = run_child([sys.executable, '-c', 'pass'])\n"
        "print(big.max_rss_mib, small.max_rss_mib)\n")
    out = subprocess.run([sys.executable, "-c", script, str(BENCHMARKS)], capture_output=True, text=True, check=True)
    big, small = map(float, out.stdout.split())
    assert big > 200 > small


def test_demo_benchmark_keeps_the_summary_headline():
    from demo_rerun import _headline

    summary = ("\nResults on arith, profile 'demo':\n\n  SFT on CRV data against the base student: +25.0 points\n"
               "  CogPO against SFT: +0.0 points\n\n| model size | method |\n|---|---|\n")
    assert _headline(summary) == "SFT on CRV data against the base student: +25.0 points CogPO against SFT: +0.0 points"
    assert _headline("| a |\n|---|\n") == ""
