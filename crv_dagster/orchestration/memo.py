"""Reusing an asset's last result when nothing it depends on has changed.

Dagster records, with every materialisation, the asset's code version and the data versions of
the inputs it read (see ``versions.py``). When both equal the current ones and the stored result
is still there, unchanged, the asset returns that result instead of recomputing it: no model
call, no training step. The new materialisation says so in its metadata (``memoized``, and the
run whose result it reuses) and keeps that run's metadata.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import dagster as dg
import pandas as pd
from dagster._core.definitions.data_version import (  # the provenance Dagster itself records
    extract_data_provenance_from_entry,
    extract_data_version_from_entry,
)

from crv_dagster.storage import table_path
from crv_dagster.versions import TABLE_VERSION_ATTR, manifest_version, table_version

_COST_SUFFIXES = ("_new_calls", "_cache_hits", "_new_completion_tokens", "_generation_s", "train_runtime_s")


def _latest(context: dg.AssetExecutionContext, key: dg.AssetKey):
    partition = context.partition_key if context.has_partition_key else None
    return context.instance.get_latest_data_version_record(key, partition_key=partition)


def _unchanged_since(context: dg.AssetExecutionContext):
    """The last materialisation of this asset partition when its code version and every input's
    data version are still the current ones, else None."""
    record = _latest(context, context.asset_key)
    if record is None:
        return None
    provenance = extract_data_provenance_from_entry(record.event_log_entry)
    current_code = context.assets_def.code_versions_by_key.get(context.asset_key)
    if provenance is None or current_code is None or provenance.code_version != current_code:
        return None
    upstream = set(context.assets_def.asset_deps.get(context.asset_key, set()))
    if set(provenance.input_data_versions) != upstream:
        return None
    for key in upstream:
        latest = _latest(context, key)
        version = extract_data_version_from_entry(latest.event_log_entry) if latest is not None else None
        if version is None or provenance.input_data_versions[key].value not in _as_recorded(version.value):
            return None
    return record


def _as_recorded(version: str) -> set[str]:
    """The forms in which Dagster records an input's data version: as it is, or, for a partitioned
    input, the sha256 of the mapped partitions' versions joined (here: the one partition)."""
    return {version, hashlib.sha256(version.encode()).hexdigest()}


def _reuse(context: dg.AssetExecutionContext, load: Callable[[], pd.DataFrame],
           version_of: Callable[[pd.DataFrame], str]) -> dg.Output | None:
    record = _unchanged_since(context)
    if record is None:
        return None
    recorded = extract_data_version_from_entry(record.event_log_entry)
    try:
        stored = load()
        intact = recorded is not None and version_of(stored) == recorded.value
    except (OSError, ValueError):  # the stored result was removed or damaged: recompute
        intact = False
    if not intact:
        return None
    if version_of is table_version:
        stored.attrs[TABLE_VERSION_ATTR] = recorded.value
    context.log.info(f"{context.asset_key.to_user_string()}: code and inputs unchanged since run "
                     f"{record.run_id[:8]}; reusing its result (no model calls, no training)")
    # The earlier run's metadata describes the result; its costs (calls, cache hits, run time) were
    # that run's, not this one's.
    metadata = {k: v for k, v in record.event_log_entry.asset_materialization.metadata.items()
                if k != "path" and not k.endswith(_COST_SUFFIXES)}
    metadata.update(memoized=True, memoized_from_run=record.run_id, model_calls_this_run=0,
                    training_steps_this_run=0)
    return dg.Output(stored, data_version=recorded, metadata=metadata)


def _stored_table(context: dg.AssetExecutionContext, tables_dir) -> Callable[[], pd.DataFrame]:
    path = table_path(tables_dir, context.asset_key.path[-1], context.partition_key if context.has_partition_key else None)
    return lambda: pd.read_parquet(path)


def reused_table(context: dg.AssetExecutionContext, tables_dir) -> dg.Output | None:
    """The stored table, as this materialisation's output, when it may be reused."""
    return _reuse(context, _stored_table(context, tables_dir), table_version)


def reused_models(context: dg.AssetExecutionContext, tables_dir) -> dg.Output | None:
    """The stored manifest, when it may be reused and every checkpoint's weights are unchanged."""
    return _reuse(context, _stored_table(context, tables_dir), manifest_version)


def table_output(frame: pd.DataFrame, metadata: dict) -> dg.Output:
    version = table_version(frame)
    frame.attrs[TABLE_VERSION_ATTR] = version
    return dg.Output(frame, data_version=dg.DataVersion(version), metadata=metadata)


def models_output(manifest: pd.DataFrame, metadata: dict) -> dg.Output:
    return dg.Output(manifest, data_version=dg.DataVersion(manifest_version(manifest)), metadata=metadata)
