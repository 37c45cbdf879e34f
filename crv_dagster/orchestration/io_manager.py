"""Dagster's IO manager for the pipeline's tables: DataFrames as Parquet files (see ``storage.py``).

It writes every table the pipeline stores: each asset's own, and the tables a stage returns beside
it (``StageResult.tables``: eval_scores' per-problem details), which travel on the asset's frame
(``TABLES_BESIDE_ATTR``) so that the asset keeps one output and its Dagster type.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

from crv_dagster.storage import read_table, table_path, write_table
from crv_dagster.versions import TABLE_VERSION_ATTR, TABLES_BESIDE_ATTR, table_version


def _holds(path: Path, version: str) -> bool:
    if not path.exists():
        return False
    try:
        return table_version(pd.read_parquet(path)) == version
    except (OSError, ValueError):
        return False


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores DataFrame outputs as Parquet under ``base_dir``."""

    base_dir: str

    def _path(self, context) -> Path:
        key = context.partition_key if context.has_partition_key else None
        return table_path(self.base_dir, context.asset_key.path[-1], key)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: ParquetIOManager stores DataFrames, got {type(obj).__name__}")
        path = self._path(context)
        # The version the asset computed and the tables beside it travel on the frame; neither is
        # stored with the table.
        version = obj.attrs.pop(TABLE_VERSION_ATTR, None) or table_version(obj)
        beside = obj.attrs.pop(TABLES_BESIDE_ATTR, {})
        if not _holds(path, version):  # a reused result is left as it is, byte for byte
            write_table(obj, path)
        key = context.partition_key if context.has_partition_key else None
        for name, table in beside.items():
            write_table(table, table_path(self.base_dir, name, key))
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        if not context.has_asset_partitions:
            return self._read(self._path(context), context, "(unpartitioned)")
        # The upstream partitions this input maps to: the same key, or, through a partition
        # mapping (results <- eval_scores of every size), several; then one table of them all.
        asset = context.asset_key.path[-1]
        keys = sorted(context.asset_partition_keys)
        if len(keys) == 1:
            return self._read(table_path(self.base_dir, asset, keys[0]), context, keys[0])
        # A comparison across sizes reads the sizes materialised so far: a new size is a backfill away.
        stored = [key for key in keys if table_path(self.base_dir, asset, key).exists()]
        if not stored:
            return self._read(table_path(self.base_dir, asset, keys[0]), context, keys[0])  # names what is missing
        if missing := sorted(set(keys) - set(stored)):
            context.log.warning(f"{context.asset_key.to_user_string()}: partitions {missing} are not materialised "
                                "yet; comparing the others (backfill them to include them)")
        return pd.concat([self._read(table_path(self.base_dir, asset, key), context, key) for key in stored],
                         ignore_index=True)

    def _read(self, path: Path, context: dg.InputContext, where: str) -> pd.DataFrame:
        if not path.exists():
            asset = context.asset_key.to_user_string()
            raise FileNotFoundError(
                f"{path}: no stored table for asset '{asset}', partition '{where}'; materialize it first "
                f"(e.g. --select '{asset},...')"
            )
        return read_table(path, f"asset '{context.asset_key.to_user_string()}', partition '{where}'")
