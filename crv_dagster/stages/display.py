"""Tables, counts and plots as metadata a person reads in the Dagster UI."""

from __future__ import annotations

import base64
import re
from typing import Sequence

import pandas as pd

from crv_dagster.stages.base import Json, Markdown


def _cell(value: object, max_chars: int) -> str:
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    text = text.replace("\n", "⏎ ").replace("|", "\\|")
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def markdown_table(frame: pd.DataFrame, columns: Sequence[str] | None = None, rows: int = 5,
                   max_chars: int = 160) -> Markdown:
    columns = list(columns or frame.columns)
    if frame.empty:
        return Markdown("_(no rows)_")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.head(rows).iterrows():
        lines.append("| " + " | ".join(_cell(row[c], max_chars) for c in columns) + " |")
    return Markdown("\n".join(lines))


def fenced(text: str, max_chars: int) -> str:
    """``text`` in a fenced block, line breaks as written, cut at ``max_chars``."""
    text = text if len(text) <= max_chars else text[: max_chars - 1] + "…"
    # A fence longer than any run of backticks inside, so a CoT's own code block stays inside it.
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{fence}text\n{text}\n{fence}"


def text_samples(frame: pd.DataFrame, heading: Sequence[str], texts: Sequence[str], rows: int = 3,
                 max_chars: int = 1500) -> Markdown:
    """The first ``rows`` rows, each under a heading of its ``heading`` columns with its ``texts``
    columns in fenced blocks: a CoT or a reply reads as written, where a table cell would fold its
    lines into one."""
    if frame.empty:
        return Markdown("_(no rows)_")
    out = []
    for _, row in frame.head(rows).iterrows():
        out.append("#### " + " · ".join(f"{c} {row[c]}" for c in heading))
        for column in texts:
            value = row[column]
            text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
            out.append(f"{column}:\n\n{fenced(text or '(empty)', max_chars)}")
    return Markdown("\n\n".join(out))


def counts(series: pd.Series) -> Json:
    return Json({str(k): int(v) for k, v in series.value_counts().sort_index().items()})


def image(png: bytes, alt: str = "plot") -> Markdown:
    """A PNG shown inline in the Dagster UI (as a Markdown data URI)."""
    return Markdown(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")
