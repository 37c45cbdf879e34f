"""Planning the training runs of one partition, and summarising what they gave.

``sft_model`` trains one run per SFT method and seed, ``cogpo_model`` one per preference method and
seed; this module decides which runs those are, from what data and which checkpoint, where each
checkpoint goes, and turns the training job's reports into the manifest rows and the numbers the
assets show. Nothing here starts a process or talks to Dagster: the launch is ``training/launch.py``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.methods import EXAMPLE_COLUMNS, SFT, preference_method, sft_method
from crv_dagster.training.result import TrainingResult


@dataclass
class PlannedRun:
    """One run of a launch before it starts: what to train, and what MLflow should show of it."""

    kind: str  # "sft" or "preference"
    method: str
    seed: int
    base_model: str
    data: pd.DataFrame
    out_dir: Path
    params: dict = field(default_factory=dict)


def sft_examples(method: str, verified: pd.DataFrame, raw_cots: pd.DataFrame | None = None,
                 critiques: pd.DataFrame | None = None, seed: int = 0) -> pd.DataFrame:
    """The (question, answer, cot) rows that ``method`` fine-tunes on (its registry entry's data);
    empty when there are none. ``seed`` draws the matched control's subset (one subset per training seed)."""
    rows = sft_method(method).data(verified, raw_cots, critiques, seed)
    return rows[EXAMPLE_COLUMNS].reset_index(drop=True)


def checkpoint_dir(cfg: Profile, asset: str, dataset: str, model_size: str, method: str, seed: int) -> Path:
    return cfg.artifacts_dir / "checkpoints" / asset / dataset / model_size / method / f"seed-{seed}"


def sft_runs(cfg: Profile, dataset: str, model_size: str, base_model: str, verified: pd.DataFrame,
             raw_cots: pd.DataFrame, critiques: pd.DataFrame) -> tuple[list[PlannedRun], dict[str, str]]:
    """SFT and each baseline of the profile, once per seed; a baseline with no data is left out
    (with its reason in the second value) rather than costing the CRV model."""
    training = cfg.training_for(model_size)
    planned, skipped = [], {}
    for method in [SFT, *cfg.training.sft_baselines]:
        if sft_examples(method, verified, raw_cots, critiques).empty:
            if method == SFT:
                raise ValueError(f"{SFT}: no CoTs to fine-tune on (verified_set has no suited CoT)")
            skipped[method] = sft_method(method).empty_reason
            continue
        for seed in cfg.seeds:
            params = {"base_model": base_model, "finetuning": training.finetuning, "seed": seed,
                      **{f"sft.{k}": v for k, v in training.sft.model_dump().items()},
                      **({f"lora.{k}": v for k, v in training.lora.model_dump().items()}
                         if training.finetuning == "lora" else {})}
            planned.append(PlannedRun("sft", method, seed, base_model,
                                      sft_examples(method, verified, raw_cots, critiques, seed=seed),
                                      checkpoint_dir(cfg, "sft_model", dataset, model_size, method, seed), params))
    return planned, skipped


def sft_checkpoint(sft_manifest: pd.DataFrame, seed: int, method: str = SFT) -> str:
    hit = sft_manifest[(sft_manifest["method"] == method) & (sft_manifest["seed"] == seed)]
    if hit.empty:
        raise ValueError(f"sft_model has no '{method}' checkpoint for seed {seed} (it has "
                         f"{sorted(zip(sft_manifest['method'], sft_manifest['seed']))}): materialise sft_model again")
    return str(hit["path"].iloc[0])


def preference_runs(cfg: Profile, dataset: str, model_size: str, sft_manifest: pd.DataFrame,
                    pairs: pd.DataFrame) -> tuple[list[PlannedRun], dict[str, str]]:
    """CogPO and each preference baseline of the profile, once per seed, on the same pairs; and the
    methods left out with the reason (a left-out pair kind that leaves no pairs).

    Every method starts from the seed's checkpoint of its entry's ``start`` (``sft``, or ``sft_raw``
    for CogPO from the raw-CoT checkpoint) and trains on the pairs less the kind its entry leaves
    out. The job computes the reference log-probs with the first method that needs them and
    hands them to the others on the same checkpoint and pairs; ``cogpo_without_<kind>`` trains on the
    other kinds' pairs, so it has a reference pass of its own."""
    if pairs.empty:
        raise ValueError("preference_pairs is empty: nothing to train on (see its refused_by_reason metadata)")
    training = cfg.training_for(model_size)
    data, skipped = {}, {}
    for method in cfg.training.preference_methods():
        kind = preference_method(method).left_out
        data[method] = pairs if kind is None else pairs[pairs["pair_type"] != kind].reset_index(drop=True)
        if data[method].empty:
            skipped[method] = f"every pair is {kind}: nothing is left to train on"
    planned = []
    for seed in cfg.seeds:
        for method in [m for m in cfg.training.preference_methods() if m not in skipped]:
            entry = preference_method(method)
            start = sft_checkpoint(sft_manifest, seed, entry.start)
            params = {"sft_model": start, "method": method, "seed": seed, "finetuning": training.finetuning,
                      **{f"cogpo.{k}": v for k, v in training.cogpo.model_dump().items()},
                      **{f"{entry.settings}.{k}": v for k, v in getattr(training, entry.settings).model_dump().items()},
                      **{f"beta_{t}": v for t, v in cfg.training.pairs.betas.model_dump().items()},
                      **{f"pairs_{t}": n for t, n in data[method]["pair_type"].value_counts().items()}}
            planned.append(PlannedRun("preference", method, seed, start, data[method],
                                      checkpoint_dir(cfg, "cogpo_model", dataset, model_size, method, seed), params))
    return planned, skipped


def manifest_row(run: PlannedRun, finetuning: str, result: TrainingResult) -> dict:
    """A trained run as a row of the model manifest (``model_manifest_schema``)."""
    return {"method": run.method, "seed": run.seed, "path": str(run.out_dir), "parent": run.base_model,
            "finetuning": finetuning, "num_examples": result.num_examples, "steps": result.steps,
            "loss_first": result.loss.get("first"), "loss_last": result.loss.get("last"),
            "train_runtime_s": result.train_runtime_s}


def length_counts(result: TrainingResult) -> dict[str, int]:
    """What the job reports of the examples it dropped or cut to fit max_length (``LENGTH_KEYS``)."""
    return result.length_counts()


def preference_metrics(result: TrainingResult) -> dict[str, float]:
    """A preference run's numbers for its MLflow run: what max_length did, and the loss per pair
    kind before and after training."""
    return {**length_counts(result),
            **{f"loss_by_kind/{k}/before": v for k, v in result.loss_by_kind_before.items()},
            **{f"loss_by_kind/{k}/after": v for k, v in result.loss_by_kind_after.items()}}


def preference_summary(method: str, row: dict, result: TrainingResult) -> dict[str, Any]:
    """What the asset's metadata shows of one preference method (its first seed): losses, the
    last logged reward margin and accuracy, the loss per pair kind, the betas that reached it."""
    last = next((h for h in reversed(result.history) if f"{method}/rewards/margins" in h), {})
    out = {f"{method}_loss_first": row["loss_first"], f"{method}_loss_last": row["loss_last"],
           **{f"{method}_{k}": v for k, v in length_counts(result).items()},
           f"{method}_reward_margin": last.get(f"{method}/rewards/margins"),
           f"{method}_reward_accuracy": last.get(f"{method}/rewards/accuracies")}
    if result.loss_by_kind_after:
        out[f"{method}_loss_by_kind"] = {"before": result.loss_by_kind_before,
                                         "after": result.loss_by_kind_after}
    if result.betas_by_rank:  # how often each pair beta reached the loss in each process
        out[f"{method}_betas_by_rank"] = [{str(b): n for b, n in counts.items()} for counts in result.betas_by_rank]
    return {k: v for k, v in out.items() if v is not None}


def describe_result(run: PlannedRun, result: TrainingResult) -> str:
    """One log line for a finished run."""
    text = f"{run.method} (seed {run.seed}): {result.steps} steps, loss {result.loss}"
    if result.loss_by_kind_after:
        text += f", per pair kind {result.loss_by_kind_before} -> {result.loss_by_kind_after}"
    if run.kind == "sft":
        text += f"; over max_length: {length_counts(result)}"
    return text
