"""What an asset reads of Dagster's records of another asset."""

from __future__ import annotations

import dagster as dg


def latest_metadata(context: dg.AssetExecutionContext, asset: str) -> dict:
    """The metadata values of ``asset``'s latest materialisation in this partition ({} when none)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[context.partition_key]), limit=1).records
    if not records:
        return {}
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
