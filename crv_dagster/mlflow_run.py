"""One MLflow run, written to through a client: what the Dagster layer and the training job share.

No Dagster here: the training job (``training.job``) logs its curves into the run that the asset
opened, from another process, possibly another machine.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping


_ready_stores: set[Path] = set()
_ready_lock = threading.Lock()


def ensure_sqlite_store(db: Path) -> None:
    """Create (or migrate) an MLflow SQLite store once, under a file lock.

    MLflow creates its tables with alembic when a client first opens an empty file; two processes
    doing that at once (two partitions of a backfill on a fresh artifacts root) collide in alembic.
    The lock makes the first one create it and the others find it ready.
    """
    import fcntl

    from mlflow.tracking import MlflowClient

    db = db.resolve()
    with _ready_lock:
        if db in _ready_stores:
            return
        db.parent.mkdir(parents=True, exist_ok=True)
        with open(db.with_name(db.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                MlflowClient(tracking_uri=f"sqlite:///{db.as_posix()}").search_experiments(max_results=1)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        _ready_stores.add(db)


@dataclass
class TrackedRun:
    client: Any
    run_id: str
    experiment_id: str
    url: str

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, step) for k, v in metrics.items()
                 if v is not None and not (isinstance(v, float) and math.isnan(v))]
        for start in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[start : start + 500])

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_image_bytes(self, png: bytes, artifact_file: str) -> None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_bytes(png)
            self.client.log_artifact(self.run_id, str(path), str(Path(artifact_file).parent) if "/" in artifact_file else None)

    @classmethod
    def attach(cls, tracking_uri: str, run_id: str) -> "TrackedRun":
        """A run opened elsewhere (by the asset), to log into from this process."""
        from mlflow.tracking import MlflowClient

        return cls(MlflowClient(tracking_uri=tracking_uri), run_id, "", "")
