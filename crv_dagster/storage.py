"""Tables as Parquet files, one per asset and partition: ``<base>/<asset>/<dataset>/<size>.parquet``.

(Dagster's IO manager over these files is ``orchestration/io_manager.py``.)

Plain files a researcher can open with pandas, DuckDB or a notebook, written atomically so a
crash never leaves half a file behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def table_path(base_dir: str | Path, asset: str, partition_key: str | None) -> Path:
    base = Path(base_dir) / asset
    if partition_key is None:
        return base.with_suffix(".parquet")
    keys = getattr(partition_key, "keys_by_dimension", None)
    parts = [keys[k] for k in sorted(keys)] if keys else str(partition_key).split("|")
    return base.joinpath(*parts[:-1], f"{parts[-1]}.parquet")


class StoredTableError(ValueError):
    """A stored table that exists but cannot be read."""


def read_table(path: Path, what: str = "") -> pd.DataFrame:
    """A stored table; a damaged file is an error naming it and what to do (``what``: the asset
    and partition it holds, as the error should name them)."""
    try:
        return pd.read_parquet(path)
    except (FileNotFoundError, PermissionError):
        raise
    except (OSError, ValueError) as err:
        holds = f" ({what})" if what else ""
        raise StoredTableError(f"{path}: the stored table{holds} cannot be read: {err}. Delete the file and "
                               "materialize its asset again; nothing else is lost") from err


def write_table(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
