"""Plots for asset metadata and MLflow, rendered to PNG bytes (no display needed)."""

from __future__ import annotations

import io
from typing import Sequence


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    plt = _figure()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def length_histogram(before: Sequence[int], after: Sequence[int], title: str) -> bytes:
    """Overlaid histograms of CoT lengths (tokens) before and after rewriting."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=110)
    values = list(before) + list(after)
    bins = min(20, max(5, len(set(values)))) if values else 5
    if before:
        ax.hist(before, bins=bins, alpha=0.55, label=f"original (mean {sum(before) / len(before):.0f})")
    if after:
        ax.hist(after, bins=bins, alpha=0.55, label=f"rewritten (mean {sum(after) / len(after):.0f})")
    ax.set_xlabel("chain-of-thought length (student tokens)")
    ax.set_ylabel("CoTs")
    ax.set_title(title, fontsize=10)
    if before or after:
        ax.legend(fontsize=8)
    return figure_png(fig)
