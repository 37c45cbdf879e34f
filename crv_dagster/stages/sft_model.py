"""``sft_model``: the student fine-tuned (TRL SFT, loss on the CoT only) on the verified,
student-suited CoTs, and on the SFT baselines the profile lists; once per seed."""

from __future__ import annotations

import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.models.located import student_base_model
from crv_dagster.stages.base import FilePath, Json, Stage, StageResult, run_links
from crv_dagster.stages.display import markdown_table
from crv_dagster.stages.trained import launch_metadata, training_reads, write_card
from crv_dagster.training import plan
from crv_dagster.training.launch import launch_training
from crv_dagster.methods import SFT, SFT_RAW_MATCHED
from crv_dagster.vocabulary import RESCUED, SUITED


def reads(profile: Profile) -> dict:
    return training_reads(profile, "sft")


_MATCHED_ON = ("the row count alone: as many correct raw CoTs as sft has rows (a seeded draw per training seed), so "
               "equal examples and optimizer steps; not the same problems, lengths or labels, and none of sft's "
               "rescued rows (a wrong teacher CoT rewritten with the reference answer) has a counterpart in its pool")


def run(stage: Stage, raw_cots: pd.DataFrame, critiques: pd.DataFrame, verified_set: pd.DataFrame) -> StageResult:
    cfg, key = stage.profile, stage.key
    training = cfg.training_for(key.model_size)
    base = student_base_model(cfg, key.model_size)
    planned, skipped = plan.sft_runs(cfg, key.dataset, key.model_size, base, verified_set, raw_cots, critiques)
    for method, reason in skipped.items():  # a baseline with no data must not cost the CRV model
        stage.log.warning(f"{method} not trained: {reason}")
    rows, links, examples = [], {}, {}
    with launch_training(stage, "sft_model", training, planned) as launched:
        for item in launched:
            item.run.log_metrics(plan.length_counts(item.result))
            stage.log.info(plan.describe_result(item.planned, item.result))
            rows.append(plan.manifest_row(item.planned, training.finetuning, item.result))
            write_card(stage, item, rows[-1])
            examples.setdefault(f"{item.planned.method}_num_examples", item.result.num_examples)
            links[f"{item.planned.method}/seed-{item.planned.seed}"] = item.run.url
    manifest = pd.DataFrame(rows)
    main = manifest[manifest["method"] == SFT].iloc[0]
    first = next(item for item in launched if item.planned.method == SFT)
    suited = verified_set[verified_set["role"] == SUITED]
    matched = ({"sft_raw_matched_is_matched_on": _MATCHED_ON} if SFT_RAW_MATCHED in cfg.training.sft_baselines else {})
    return StageResult(frame=manifest, metrics={
        "num_examples": int(main["num_examples"]), "steps": int(main["steps"]), **plan.length_counts(first.result),
        **{k: float(main[k]) for k in ("loss_first", "loss_last") if pd.notna(main[k])}, **examples,
        # SFT rows whose teacher CoT was wrong: no raw baseline has them.
        "sft_rows_rescued": int((suited["provenance"] == RESCUED).sum()),
    }, metadata={
        **matched,
        "checkpoint": FilePath(main["path"]),
        **run_links(links), **launch_metadata(training, launched),
        "seeds": Json(list(cfg.seeds)),
        "not_trained": Json(skipped),
        "checkpoints": markdown_table(manifest, ["method", "seed", "num_examples", "steps", "loss_first", "loss_last"],
                                      rows=40),
    }, link=first.run.url)
