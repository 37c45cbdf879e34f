"""Code versions and data versions, so that Dagster can tell what is out of date and why.

An asset's **code version** (``stages/code_versions.py``) is a hash of what its output depends on
besides its inputs: the code it runs (its stage module, ``crv_dagster.stages.<asset>``, and every
package module it imports, at any depth: ``code_digest``), the slice of the profile it reads (the
stage's ``reads``, built with the helpers here: the text of the prompt files it renders and the
identities of the models it calls, their profile entries: Hub name and revision, package and file,
tiny-model spec), and the package version. Edit a module the Critic's replies are read with, or
one prompt, and only the assets that use it get a new code version; Dagster then shows them
*Unsynced* ("code version changed"), and everything downstream as stale.

A **data version** is a hash of an output's content: a table's values, column names and types;
for a model asset, also the bytes of its checkpoints' weights. An asset whose code version and
inputs' data versions equal those of its last materialisation can reuse that result.

A Hub model without a pinned ``revision`` can change on the Hub without changing its identity
here: pin revisions for experiments that must not drift.
"""

from __future__ import annotations

import hashlib
import io
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.llm.identity import weights_digest
from crv_dagster.vocabulary import STUDENT

HASH_CHARS = 16


def digest_of(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:HASH_CHARS]


@lru_cache(maxsize=1)
def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crv-dagster")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+source"


def prompt_text(name: str) -> str:
    from crv_dagster.prompts import PROMPTS_DIR

    path = Path(name) if Path(name).is_absolute() else PROMPTS_DIR / name
    return path.read_text() if path.is_file() else f"<missing {path}>"


def backend_identity(profile: Profile, key: str | None) -> dict | None:
    """A backend entry and the identity of the model it serves."""
    if key is None or key not in profile.backends:
        return None
    cfg = profile.backends[key]
    model = profile.models.get(cfg.model) if cfg.model != STUDENT else STUDENT
    return {"backend": cfg.model_dump(mode="json"),
            "model": model.model_dump(mode="json") if hasattr(model, "model_dump") else model}


def students(profile: Profile) -> dict:
    """Each student size as the agents are told it and the model it is."""
    return {size: {"parameters": cfg.parameters, "model": profile.models[cfg.model].model_dump(mode="json")}
            for size, cfg in profile.model_sizes.items()}


def training_by_size(profile: Profile) -> dict:
    """Per student size: full or LoRA, and the process count, which sets the global batch. Where the
    processes run (local or a pod) and how they share the weights (DDP, ZeRO-3) do not change what
    is trained, so they are left out."""
    by_size = {}
    for size in profile.model_sizes:
        training = profile.training_for(size)
        by_size[size] = {"finetuning": training.finetuning, "num_processes": training.launch.num_processes}
    return by_size


# Set on a frame by the asset that just hashed it, so the IO manager need not hash it again.
TABLE_VERSION_ATTR = "crv.table_version"
# Set on a frame by the asset whose stage returned tables to store beside it (StageResult.tables).
TABLES_BESIDE_ATTR = "crv.tables_beside"


def table_version(frame: pd.DataFrame) -> str:
    """A hash of a table's content as stored: values, column names and types (not the row index).

    The frame goes through Parquet in memory first, so a table hashes the same before it is
    written and after it is read back (object columns of None, ints held as objects, ...).
    """
    stored = pd.read_parquet(io.BytesIO(frame.to_parquet(index=False)))
    digest = hashlib.sha256()
    digest.update(json.dumps([[str(c), str(t)] for c, t in stored.dtypes.items()]).encode())
    if len(stored):
        digest.update(pd.util.hash_pandas_object(stored, index=False).values.tobytes())
    return digest.hexdigest()[:HASH_CHARS]


def manifest_version(manifest: pd.DataFrame) -> str:
    """A model asset's data version: each method's weights, not its timings."""
    return digest_of([[row.method, row.seed, weights_digest(row.path)] for row in manifest.itertuples()])
