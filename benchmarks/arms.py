"""Arms run alternately over several rounds, summarised as median and spread.

A benchmark that runs each arm once is at the mercy of this shared machine: the CogPO training
benchmark measured 1.32x, 1.49x and 1.17x per step in three single runs. Here every arm runs once
per round; round ``r`` starts with arm ``r mod n`` and keeps the order after it (two arms: AB BA AB),
so no arm always runs first (cold file caches) or always right after a given other arm. Each figure
is reported per arm as its median over the rounds and its spread as min-max (with three to five
rounds an interquartile range says no more than the extremes do), and each arm's medians as a
ratio against the baseline arm's.

Child processes: ``run_child`` waits for its child with ``os.wait4``, which gives that child's
own peak resident memory. ``RUSAGE_CHILDREN`` is a running maximum over every child so far, which
forced the old scripts to run the smaller arm first and cannot work once arms alternate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One measured figure of a run: its key in the run's dict, its column label, how it prints,
    and which way is better (the ratio is oriented so that above 1 means better than the baseline);
    ``compared``: False for a figure that is a check, not a cost (tokens produced), so no ratio."""
    key: str
    label: str
    fmt: str = ".1f"
    higher_is_better: bool = False
    compared: bool = True


def add_rounds_argument(parser: argparse.ArgumentParser, default: int = 3) -> None:
    parser.add_argument("--rounds", type=int, default=default,
                        help=f"rounds; every arm runs once per round, order rotating (default {default}; "
                             "at least 3 for a spread worth reading)")


def rotations(arms: Sequence[str], rounds: int) -> list[list[str]]:
    """Each round's order: round r starts at arm r mod n."""
    arms = list(arms)
    return [arms[r % len(arms):] + arms[:r % len(arms)] for r in range(rounds)]


def alternate(arms: Sequence[str], run: Callable[[str], dict], rounds: int,
              progress: bool = True) -> dict[str, list[dict]]:
    """``run(arm)`` once per arm per round, in rotating order; each arm's results in round order."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    started = time.perf_counter()
    for number, order in enumerate(rotations(arms, rounds), start=1):
        for arm in order:
            result = run(arm)
            results[arm].append(result)
            if progress:  # on stderr, so that stdout holds only the table; the figures survive a later failure
                figures = {k: round(v, 3) for k, v in result.items() if isinstance(v, (int, float))}
                print(f"[round {number}/{rounds}] {arm} done ({time.perf_counter() - started:.0f} s in all): {figures}",
                      file=sys.stderr, flush=True)
    return results


def values(runs: Sequence[dict], key: str) -> list[float]:
    return [float(r[key]) for r in runs if r.get(key) is not None]


def median(runs: Sequence[dict], key: str) -> float | None:
    found = values(runs, key)
    return statistics.median(found) if found else None


def ratio(baseline: float | None, arm: float | None, figure: Figure) -> float | None:
    """Above 1: the arm is better than the baseline (baseline/arm for times and memory, arm/baseline
    for rates)."""
    if not baseline or not arm:
        return None
    return arm / baseline if figure.higher_is_better else baseline / arm


def markdown_table(results: Mapping[str, Sequence[dict]], labels: Mapping[str, str | tuple[str, ...]],
                   figures: Sequence[Figure], baseline: str | None, first_column: str | tuple[str, ...] = "arm",
                   ratio_label: str = "ratio vs baseline") -> str:
    """Per arm (in ``labels``' order) each figure's median and min-max over its runs, then a bold row
    per other arm with the ratios of medians against ``baseline`` (None: no ratio rows). A label may
    be a tuple of cells (e.g. dtype and arm) under as many ``first_column`` headers; a ratio row
    repeats all but the last of its arm's cells."""
    heads = (first_column,) if isinstance(first_column, str) else tuple(first_column)
    header = [*heads] + [part for f in figures for part in (f"{f.label} median", "min-max")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(heads) + "---:|" * (2 * len(figures))]
    for arm, label in labels.items():
        cells = [label] if isinstance(label, str) else list(label)
        for f in figures:
            found = values(results[arm], f.key)
            cells += ([format(statistics.median(found), f.fmt), f"{min(found):{f.fmt}}-{max(found):{f.fmt}}"]
                      if found else ["-", ""])
        lines.append("| " + " | ".join(cells) + " |")
    if baseline is not None:
        for arm, label in labels.items():
            if arm == baseline:
                continue
            name = f"{ratio_label}: {arm}" if len(labels) > 2 else ratio_label
            cells = ([] if isinstance(label, str) else list(label[:-1])) + [f"**{name}**"]
            for f in figures:
                r = ratio(median(results[baseline], f.key), median(results[arm], f.key), f) if f.compared else None
                cells += [f"**{r:.2f}x**" if r is not None else "", ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rounds_note(results: Mapping[str, Sequence[dict]]) -> str:
    n = min(len(runs) for runs in results.values())
    note = (f"{n} runs per arm, arms alternating (each round's order rotated); median and min-max; "
            "ratios are of medians, above 1 = better than the baseline")
    return note + (" (fewer than 3 runs: the spread says little)" if n < 3 else "")


@dataclass
class Child:
    stdout: str
    stderr: str
    returncode: int
    wall_s: float
    max_rss_mib: float  # the child's own peak resident memory (and its waited-for descendants')

    def last_json(self) -> dict:
        """The JSON object on the child's last line of output (the benchmarks' child protocol)."""
        return json.loads(self.stdout.strip().splitlines()[-1])


def run_child(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None,
              what: str = "child") -> Child:
    """Run ``cmd`` to its end; raise with its output's tail if it fails. Its peak memory is the
    child's own, provided this process is small: Linux counts the image a child was forked from in
    its high-water mark, so the benchmarks' parents load no model."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=None if env is None else dict(env), cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        child = Child(out.read().decode(errors="replace"), err.read().decode(errors="replace"), proc.returncode, wall,
                      usage.ru_maxrss / 1024)  # Linux reports ru_maxrss in KiB
    if child.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {child.returncode}):\n{child.stdout[-2000:]}{child.stderr[-3000:]}")
    return child
