"""The results table in the paper's shape and the accuracy-vs-size plot.

Rows are methods, columns benchmarks, one block per model size; the plot has one line per
method across sizes.
"""

from __future__ import annotations

import re

import pandas as pd

METHOD_ORDER = ["base", "sft", "dpo", "cogpo"]
METHOD_NAMES = {"base": "Base", "sft": "SFT (CRV data)", "dpo": "SFT + DPO", "cogpo": "SFT + CogPO"}


def parameter_count(size: str) -> float:
    """'1.5B' -> 1.5e9, '135M' -> 1.35e8; unknown forms sort last."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMBT])\s*", size.upper())
    if not match:
        return float("inf")
    return float(match.group(1)) * {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[match.group(2)]


def results_markdown(scores: pd.DataFrame, sizes: dict[str, str]) -> str:
    """``scores`` has model_size, method, benchmark, accuracy (and ci_low, ci_high); ``sizes`` maps
    size keys to '1.5B'. Cells are accuracy in % with the 95% interval in brackets."""
    if scores.empty:
        return "_(no scores yet)_"
    benchmarks = list(dict.fromkeys(scores["benchmark"]))
    lines = ["| model size | method | " + " | ".join(benchmarks) + " | average |",
             "|---|---|" + "---:|" * (len(benchmarks) + 1)]
    ordered_sizes = sorted(scores["model_size"].unique(), key=lambda s: parameter_count(sizes.get(s, s)))
    for size in ordered_sizes:
        block = scores[scores["model_size"] == size]
        methods = sorted(block["method"].unique(), key=lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else 99)
        for i, method in enumerate(methods):
            cells = []
            values = []
            for bench in benchmarks:
                hit = block[(block["method"] == method) & (block["benchmark"] == bench)]
                if len(hit):
                    values.append(100 * hit["accuracy"].iloc[0])
                    interval = (f" ({100 * hit['ci_low'].iloc[0]:.1f}–{100 * hit['ci_high'].iloc[0]:.1f})"
                                if "ci_low" in hit and pd.notna(hit["ci_low"].iloc[0]) else "")
                    cells.append(f"{values[-1]:.1f}{interval}")
                else:
                    cells.append("–")
            average = f"{sum(values) / len(values):.1f}" if values else "–"
            label = f"{size} ({sizes.get(size, '?')})" if i == 0 else ""
            lines.append(f"| {label} | {METHOD_NAMES.get(method, method)} | " + " | ".join(cells) + f" | {average} |")
    return "\n".join(lines)


def accuracy_plot(scores: pd.DataFrame, sizes: dict[str, str]) -> bytes:
    """Mean accuracy over benchmarks against model size, one line per method (PNG bytes)."""
    from crv_dagster.plots import _figure, figure_png

    plt = _figure()
    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=110)
    mean = scores.groupby(["model_size", "method"])["accuracy"].mean().reset_index()
    mean["params"] = [parameter_count(sizes.get(s, s)) for s in mean["model_size"]]
    for method in [m for m in METHOD_ORDER if m in set(mean["method"])]:
        line = mean[mean["method"] == method].sort_values("params")
        ax.plot(range(len(line)) if line["params"].eq(float("inf")).any() else line["params"], 100 * line["accuracy"],
                marker="o", label=METHOD_NAMES[method])
    if mean["params"].ne(float("inf")).all() and mean["params"].nunique() > 1:
        ax.set_xscale("log")
    ax.set_xlabel("student parameters")
    ax.set_ylabel("accuracy (%), mean over benchmarks")
    ax.set_title("Accuracy against model size", fontsize=10)
    ax.legend(fontsize=8)
    return figure_png(fig)
