"""Code versions and data versions, so that Dagster can tell what is out of date and why.

An asset's **code version** is a hash of what its output depends on besides its inputs: the slice
of the profile it reads, the text of the prompt files it renders, the identities of the models it
calls (their profile entries: Hub name and revision, package and file, tiny-model spec) and the
package version. Change one prompt and only the asset that renders it gets a new code version;
Dagster then shows it, and everything downstream, as stale.

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

from crv_dagster.config import STUDENT, Profile
from crv_dagster.llm.identity import weights_digest

HASH_CHARS = 16


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:HASH_CHARS]


@lru_cache(maxsize=1)
def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crv-dagster")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+source"


def _prompt_text(name: str) -> str:
    from crv_dagster.prompts import PROMPTS_DIR

    path = Path(name) if Path(name).is_absolute() else PROMPTS_DIR / name
    return path.read_text() if path.is_file() else f"<missing {path}>"


def _backend(profile: Profile, key: str | None) -> dict | None:
    """A backend entry and the identity of the model it serves."""
    if key is None or key not in profile.backends:
        return None
    cfg = profile.backends[key]
    model = profile.models.get(cfg.model) if cfg.model != STUDENT else STUDENT
    return {"backend": cfg.model_dump(mode="json"),
            "model": model.model_dump(mode="json") if hasattr(model, "model_dump") else model}


def _students(profile: Profile) -> dict:
    return {size: {"parameters": cfg.parameters, "model": profile.models[cfg.model].model_dump(mode="json")}
            for size, cfg in profile.model_sizes.items()}


def asset_dependencies(profile: Profile, asset: str) -> dict[str, Any]:
    """What ``asset``'s output depends on besides its inputs, as plain data (the code version's basis)."""
    crv, training, pairs = profile.crv, profile.training, profile.training.pairs
    teacher_used = any(d.cot_source == "teacher" for d in profile.datasets.values())
    if asset == "problems":
        return {"datasets": {n: d.model_dump(mode="json") for n, d in profile.datasets.items()}}
    if asset == "raw_cots":
        return {"cot_source": {n: d.cot_source for n, d in profile.datasets.items()},
                "cot": profile.cot.model_dump(mode="json"),
                "teacher": profile.teacher.model_dump(mode="json") if teacher_used else None,
                "teacher_backend": _backend(profile, profile.teacher.backend) if teacher_used else None,
                "prompts": {"teacher": _prompt_text(profile.teacher.prompt)} if teacher_used else {}}
    if asset == "critiques":
        return {"critic": crv.critic.model_dump(mode="json"), "agent": _backend(profile, crv.agent_backend),
                "students": {s: c.parameters for s, c in profile.model_sizes.items()},
                "prompts": {"critic": _prompt_text(crv.critic.prompt)}}
    if asset == "rewritten_cots":
        judge = crv.verifier.llm_judge
        return {"rethinker": crv.rethinker.model_dump(mode="json"), "verifier": crv.verifier.model_dump(mode="json"),
                "max_attempts": crv.max_attempts, "agent": _backend(profile, crv.agent_backend),
                "judge": _backend(profile, crv.verifier.judge_backend or crv.agent_backend) if judge else None,
                "students": _students(profile),  # the student's tokenizer measures expansions
                "prompts": {"expand": _prompt_text(crv.rethinker.expand_prompt),
                            "simplify": _prompt_text(crv.rethinker.simplify_prompt),
                            **({"judge": _prompt_text(crv.verifier.judge_prompt)} if judge else {})}}
    if asset == "verified_set":
        return {"unrewritten": crv.unrewritten}
    if asset == "preference_pairs":
        sources = pairs.incorrect_sources
        return {"pairs": pairs.model_dump(mode="json"), "students": _students(profile),
                "student_backend": _backend(profile, pairs.student_backend) if "student" in sources else None,
                "inject_backend": (_backend(profile, pairs.inject_backend or crv.agent_backend)
                                   if "inject" in sources else None),
                "prompts": {"inject": _prompt_text(pairs.inject_prompt)} if "inject" in sources else {}}
    if asset == "sft_model":
        return {"lora": training.lora.model_dump(mode="json"), "by_size": _training_by_size(profile),
                "sft": training.sft.model_dump(mode="json"), "torch_threads": training.torch_threads,
                "sft_baselines": training.sft_baselines, "seeds": profile.seeds, "students": _students(profile)}
    if asset == "cogpo_model":
        return {"lora": training.lora.model_dump(mode="json"), "by_size": _training_by_size(profile),
                "cogpo": training.cogpo.model_dump(mode="json"), "torch_threads": training.torch_threads,
                "seeds": profile.seeds}
    if asset == "eval_scores":
        return {"evaluation": profile.evaluation.model_dump(mode="json"), "seeds": profile.seeds,
                "backend": _backend(profile, profile.evaluation.backend), "students": _students(profile),
                "eval_fraction": {n: d.eval_fraction for n, d in profile.datasets.items()}}
    if asset == "results":
        return {"students": {s: c.parameters for s, c in profile.model_sizes.items()}}
    raise KeyError(f"no version recipe for asset '{asset}'")


def _training_by_size(profile: Profile) -> dict:
    """Per student size: full or LoRA, and the process count, which sets the global batch. Where the
    processes run (local or a pod) and how they share the weights (DDP, ZeRO-3) do not change what
    is trained, so they are left out."""
    by_size = {}
    for size in profile.model_sizes:
        training = profile.training_for(size)
        by_size[size] = {"finetuning": training.finetuning, "num_processes": training.launch.num_processes}
    return by_size


def code_version(profile: Profile, asset: str) -> str:
    return _digest({"asset": asset, "package": package_version(), "depends_on": asset_dependencies(profile, asset)})


# Set on a frame by the asset that just hashed it, so the IO manager need not hash it again.
TABLE_VERSION_ATTR = "crv.table_version"


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
    return _digest([[row.method, row.seed, weights_digest(row.path)] for row in manifest.itertuples()])
