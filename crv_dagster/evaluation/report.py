"""The results table in the paper's shape and the accuracy-vs-size plot.

Rows are methods, columns benchmarks, one block per model size; the plot has one line per
method across sizes. Both read scores pooled over seeds (``aggregate.pool_seeds``); accuracy is
stored as a fraction and shown here in %.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

import crv_dagster.methods as registry
from crv_dagster.evaluation.aggregate import benchmark_average, difference
from crv_dagster.methods import COGPO

SIGNIFICANT = 0.05
# Significance is marked on the p-values adjusted for the number of comparisons the table makes.
ADJUSTED = f"p_vs_{COGPO}_holm"
DIFFERENCE = f"diff_vs_{COGPO}"


def method_rank(method: str) -> float:
    """Where a method's row goes: in the registry's order (``methods.report_order``: baselines first,
    a family member where its family is, CogPO last, the row every other is compared with); an
    unknown name after everything."""
    order = registry.report_order()
    if method in order:
        return order.index(method)
    family = next((f for f in registry.FAMILIES.values() if method.startswith(f.prefix) and f.build(method)), None)
    return order.index(family.prefix) if family is not None else len(order)


def method_name(method: str) -> str:
    """A method's row label: its registry entry's display name."""
    entry = registry.method(method)
    return entry.display if entry is not None else method


def parameter_count(size: str) -> float:
    """'1.5B' -> 1.5e9, '135M' -> 1.35e8; unknown forms sort last."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMBT])\s*", size.upper())
    if not match:
        return float("inf")
    return float(match.group(1)) * {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[match.group(2)]


def _cell(accuracy: float, low: float | None, high: float | None, p: float | None = None) -> str:
    interval = f" ({100 * low:.1f}–{100 * high:.1f})" if low is not None and pd.notna(low) else ""
    mark = "†" if p is not None and pd.notna(p) and p < SIGNIFICANT else ""
    return f"{100 * accuracy:.1f}{interval}{mark}"


def results_markdown(scores: pd.DataFrame, sizes: dict[str, str]) -> str:
    """``scores`` pooled over seeds: model_size, method, benchmark, accuracy, ci_low, ci_high (and
    p_vs_cogpo, num_seeds, problem_scores); ``sizes`` maps size keys to '1.5B'. Cells are accuracy
    in % with the 95% interval in brackets, † where the test against CogPO gives p < 0.05 after Holm;
    below, each method's difference from CogPO with its interval."""
    if scores.empty:
        return "_(no scores yet)_"
    benchmarks = list(dict.fromkeys(scores["benchmark"]))
    accounted = "data_completion_tokens" in scores
    priced = accounted and scores["cost"].notna().any()
    extra = (["data tokens", "training"] if accounted else []) + (["cost"] if priced else [])
    lines = ["| model size | method | " + " | ".join([*benchmarks, "average", *extra]) + " |",
             "|---|---|" + "---:|" * (len(benchmarks) + 1 + len(extra))]
    ordered_sizes = sorted(scores["model_size"].unique(), key=lambda s: parameter_count(sizes.get(s, s)))
    for size in ordered_sizes:
        block = scores[scores["model_size"] == size]
        for i, method in enumerate(sorted(block["method"].unique(), key=method_rank)):
            rows = block[block["method"] == method]
            cells = []
            for bench in benchmarks:
                hit = rows[rows["benchmark"] == bench]
                cells.append(_cell(hit["accuracy"].iloc[0], hit["ci_low"].iloc[0], hit["ci_high"].iloc[0],
                                   hit[ADJUSTED].iloc[0] if ADJUSTED in hit else None)
                             if len(hit) else "–")
            if "problem_scores" in rows:
                average = _cell(*benchmark_average(rows))
            else:
                average = f"{100 * rows['accuracy'].mean():.1f}"
            label = f"{size} ({sizes.get(size, '?')})" if i == 0 else ""
            costs = _costs(rows.iloc[0], priced) if accounted else []
            lines.append(f"| {label} | {method_name(method)} | " + " | ".join([*cells, average, *costs]) + " |")
    seeds = int(scores["num_seeds"].max()) if "num_seeds" in scores else 1
    lines.append("")
    lines.append(f"Accuracy in %, pass@1, mean over {seeds} seed{'s' if seeds > 1 else ''}; in brackets the 95% "
                 "interval over problems and training seeds (over problems alone for a method with one seed); "
                 "† p < 0.05 against SFT + CogPO after Holm's adjustment for every comparison in this table "
                 "(p_vs_cogpo_holm)."
                 + (" Data tokens: prompt and completion tokens of the model calls that made the data the model "
                    "was trained on; training: device time, the SFT run it started from included"
                    + ("; cost at evaluation.prices." if priced else ".") if accounted else ""))
    if DIFFERENCE in scores:
        lines += ["", differences_markdown(scores)]
    return "\n".join(lines)


def _compared_as_note(compared_as: pd.Series) -> str:
    if (compared_as == "checkpoints").any():
        return (" Where a trained method has one seed, its comparison is between two checkpoints, not two "
                "methods: how much another training seed would move it is not in the interval or the p-value.")
    return " Training seeds are counted in every interval and p-value (compared as methods)."


def _differences_table(rows: list[tuple], header: str) -> list[str]:
    """Markdown rows of differences in points: (size, benchmark, comparison, difference, low, high,
    p, Holm's p), † where Holm's p < 0.05."""
    lines = [f"| model size | benchmark | {header} | difference (points) | 95% interval | p | p, Holm |",
             "|---|---|---|---:|---:|---:|---:|"]
    for size, benchmark, label, value, low, high, p, holm in rows:
        mark = "†" if holm < SIGNIFICANT else ""
        lines.append(f"| {size} | {benchmark} | {label} | {100 * value:+.1f} | {100 * low:+.1f} to {100 * high:+.1f} | "
                     f"{p:.3f} | {holm:.3f}{mark} |")
    return lines


def differences_markdown(scores: pd.DataFrame) -> str:
    """Each method's difference from CogPO in points, its 95% interval, p and Holm's p."""
    compared = scores[scores[DIFFERENCE].notna()]
    if compared.empty:
        return "_(no comparison with SFT + CogPO: it was not scored)_"
    lines = _differences_table([(r.model_size, r.benchmark, method_name(r.method), r.diff_vs_cogpo, r.diff_vs_cogpo_low,
                                 r.diff_vs_cogpo_high, r.p_vs_cogpo, r.p_vs_cogpo_holm)
                                for r in compared.itertuples()], "method − SFT + CogPO")
    lines += ["", "Differences against SFT + CogPO on the problems both scored: Welch's t, paired on problems, "
                  "with the training-seed variance of both methods (evaluation/statistics.py)."
              + _compared_as_note(compared["compared_as"])]
    return "\n".join(lines)


def _tokens(count: float) -> str:
    return f"{count / 1e6:.2f}M" if count >= 1e6 else f"{count / 1e3:.1f}k" if count >= 1e3 else f"{int(count)}"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def _costs(row, priced: bool) -> list[str]:
    cells = [_tokens(row["data_prompt_tokens"] + row["data_completion_tokens"]), _duration(row["train_device_s"])]
    if priced:
        cells.append("–" if pd.isna(row["cost"]) else f"{row['cost']:.2f}")
    return cells


# The comparisons a reader of any run asks about first: did SFT on CRV's data teach the student
# anything, and what did the preference stage add to that.
HEADLINE_PAIRS = (("sft", "base", "SFT on CRV data against the base student"),
                  (COGPO, "sft", "CogPO against SFT"))


def headline(scores: pd.DataFrame, benchmark: str) -> list[str]:
    """The headline of a results table in words and numbers, one line per model size and
    comparison of ``HEADLINE_PAIRS`` on ``benchmark`` (the dataset's held-out problems; where it
    was not scored, the table's first benchmark): the difference in points with its 95% interval,
    and whether it compares methods or checkpoints."""
    lines = []
    if benchmark not in set(scores["benchmark"]) and len(scores):
        benchmark = scores["benchmark"].iloc[0]
    where = "held-out problems" if benchmark.endswith("_heldout") else f"problems of {benchmark}"
    rows = scores[scores["benchmark"] == benchmark]
    for size, block in rows.groupby("model_size", sort=False):
        by_method = {r["method"]: r for _, r in block.iterrows()}
        for ours, theirs, label in HEADLINE_PAIRS:
            if ours not in by_method or theirs not in by_method:
                continue
            estimate, count = difference(by_method[ours], by_method[theirs])
            excludes = "excludes" if estimate.low > 0 or estimate.high < 0 else "includes"
            lines.append(f"{label} ({size}): {100 * estimate.value:+.1f} points on {count} {where}, "
                         f"95% interval {100 * estimate.low:+.1f} to {100 * estimate.high:+.1f} ({excludes} zero"
                         + ("" if estimate.counts_seeds else "; one seed: two checkpoints compared") + ").")
    return lines


def primary_markdown(comparisons: pd.DataFrame) -> str:
    """The primary comparison as a table: difference in points with its interval, p, and Holm's over the family."""
    if comparisons.empty:
        return "_(the primary comparison has no scores yet)_"
    lines = _differences_table([(r.model_size, r.benchmark, f"{method_name(r.method)} vs {method_name(r.against)}",
                                 r.difference, r.ci_low, r.ci_high, r.p_value, r.p_holm)
                                for r in comparisons.itertuples()], "comparison")
    lines += ["", f"The primary comparison named by the profile (evaluation.primary), tested on its own: Welch's t "
                  f"paired on problems, training seeds counted, Holm-adjusted over the {len(comparisons)} comparisons "
                  f"above; † adjusted p < 0.05." + _compared_as_note(comparisons["compared_as"])]
    return "\n".join(lines)


def _offset_from_tick(ax, fig) -> float:
    """How far the farthest point lies from its nearest size tick, as a share of the axis' width."""
    fig.canvas.draw()
    ticks = ax.transData.transform([(t, 0) for t in ax.get_xticks()])[:, 0]
    width = ax.bbox.width
    points = [ax.transData.transform((x, 0))[0] for line in ax.lines for x in line.get_xdata()]
    return round(float(max((min(abs(p - t) for t in ticks) for p in points), default=0.0) / width), 3)


def accuracy_plot(scores: pd.DataFrame, sizes: dict[str, str], note: list[str] | None = None) -> tuple[bytes, dict]:
    """Mean accuracy over benchmarks against model size, one line per method, with 95% interval
    bars: the PNG, and its axes as drawn (the size ticks, the accuracy range), for the asset to show.
    ``note`` (the ``headline`` lines) is printed under the plot."""
    from crv_dagster.plots import _figure, figure_png

    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.0, 3.8), dpi=110)
    points = []
    for (size, method), rows in scores.groupby(["model_size", "method"]):
        mean, low, high = (benchmark_average(rows) if "problem_scores" in rows
                           else (rows["accuracy"].mean(), float("nan"), float("nan")))
        points.append({"model_size": size, "method": method, "accuracy": mean, "low": low, "high": high,
                       "params": parameter_count(sizes.get(size, size))})
    frame = pd.DataFrame(points)
    # A log axis of parameters where there are sizes to spread; else one slot per size, so that a
    # single size's methods sit around its tick (on a linear axis of one value, the dodge below
    # became the whole axis and put the methods at its edges).
    numeric = frame["params"].ne(float("inf")).all() and frame["params"].nunique() > 1
    slots = {size: i for i, size in enumerate(frame.drop_duplicates("model_size").sort_values("params")["model_size"])}
    methods = sorted(frame["method"].unique(), key=method_rank)
    for i, method in enumerate(methods):
        line = frame[frame["method"] == method].sort_values("params")
        # Methods side by side at each size, so that their bars do not hide each other.
        dodge = 0.06 * (i - (len(methods) - 1) / 2)
        x = (line["params"].to_numpy() * 10 ** dodge if numeric
             else line["model_size"].map(slots).to_numpy(dtype=float) + dodge)
        accuracy = line["accuracy"].to_numpy(dtype=float)
        # An interval never reaches below 0% or above 100%.
        low = np.clip(np.nan_to_num(line["low"].to_numpy(dtype=float), nan=accuracy), 0.0, 1.0)
        high = np.clip(np.nan_to_num(line["high"].to_numpy(dtype=float), nan=accuracy), 0.0, 1.0)
        errors = [100 * np.maximum(accuracy - low, 0.0), 100 * np.maximum(high - accuracy, 0.0)]
        # Drawn over the axes' frame: a point at 0% is not hidden under the x axis.
        ax.errorbar(x, 100 * accuracy, yerr=errors, marker="o", capsize=3, clip_on=False, zorder=3,
                    label=method_name(method))
    # The sizes are the axis: one tick per student, named as the profile names it.
    ticks = frame.drop_duplicates("model_size").sort_values("params")
    labels = [f"{s}\n({sizes.get(s, '?')})" for s in ticks["model_size"]]
    if numeric:
        ax.set_xscale("log")
        ax.set_xticks(ticks["params"].to_numpy(), labels)
        ax.minorticks_off()
    else:
        ax.set_xticks(list(slots.values()), labels)
        ax.set_xlim(-0.5, len(slots) - 0.5)
    # A margin below 0 and above 100, so that points there stand clear of the frame.
    ax.set_ylim(-4, 104)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("student parameters")
    ax.set_ylabel("accuracy (%), mean over benchmarks")
    ax.set_title("Accuracy against model size (bars: 95% intervals, problems and seeds)", fontsize=9)
    ax.legend(fontsize=7)
    if note:
        # The headline under the axes, so the plot says in numbers what its bars show.
        fig.set_size_inches(6.0, 3.8 + 0.22 * len(note))
        fig.text(0.01, 0.01, "\n".join(note), fontsize=6.5, va="bottom", ha="left", wrap=True)
        fig.subplots_adjust(bottom=0.18 + 0.06 * len(note))
    axes = {"x_ticks": [t.get_text() for t in ax.get_xticklabels()], "x_label": ax.get_xlabel(),
            "y_range": [float(v) for v in ax.get_ylim()], "lines": len(methods),
            "max_offset_from_tick": _offset_from_tick(ax, fig), "note": list(note or [])}
    return figure_png(fig), axes
