"""Small helpers that turn tables into what a person reads in the Dagster UI."""

from __future__ import annotations

from typing import Sequence

import dagster as dg
import pandas as pd


def _cell(value: object, max_chars: int) -> str:
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    text = text.replace("\n", "⏎ ").replace("|", "\\|")
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def markdown_table(frame: pd.DataFrame, columns: Sequence[str] | None = None, rows: int = 5,
                   max_chars: int = 160) -> dg.MetadataValue:
    columns = list(columns or frame.columns)
    if frame.empty:
        return dg.MetadataValue.md("_(no rows)_")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.head(rows).iterrows():
        lines.append("| " + " | ".join(_cell(row[c], max_chars) for c in columns) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def counts(series: pd.Series) -> dg.MetadataValue:
    return dg.MetadataValue.json({str(k): int(v) for k, v in series.value_counts().sort_index().items()})


def image(png: bytes, alt: str = "plot") -> dg.MetadataValue:
    """A PNG shown inline in the Dagster UI (as a Markdown data URI)."""
    import base64

    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def latest_metadata(context: dg.AssetExecutionContext, asset: str) -> dict:
    """The metadata values of ``asset``'s latest materialisation in this partition ({} when none)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[context.partition_key]), limit=1).records
    if not records:
        return {}
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
