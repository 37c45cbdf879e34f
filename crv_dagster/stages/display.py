"""Tables, counts and plots as metadata a person reads in the Dagster UI."""

from __future__ import annotations

import base64
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


def counts(series: pd.Series) -> Json:
    return Json({str(k): int(v) for k, v in series.value_counts().sort_index().items()})


def image(png: bytes, alt: str = "plot") -> Markdown:
    """A PNG shown inline in the Dagster UI (as a Markdown data URI)."""
    return Markdown(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")
