"""``problems``: one dataset's problems with reference answers, split into train and eval (seeded);
training problems that overlap an evaluation problem are set aside as 'contaminated'."""

from __future__ import annotations

import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.data.decontaminate import mark_contaminated
from crv_dagster.data.sources import build_problems, read_source
from crv_dagster.evaluation.benchmarks import decontamination_references
from crv_dagster.models.located import student_text_limit
from crv_dagster.stages.base import CheckResult, Json, Stage, StageResult
from crv_dagster.stages.display import counts, markdown_table
from crv_dagster.versions import students
from crv_dagster.vocabulary import CONTAMINATED

CHECKS = {"no_contamination": "no training problem overlaps a problem the profile scores on"}


def reads(profile: Profile) -> dict:
    # The benchmarks its training problems must not overlap, and the student whose context length
    # limits a question.
    return {"datasets": {n: d.model_dump(mode="json") for n, d in profile.datasets.items()},
            "decontamination": profile.decontamination.model_dump(mode="json"),
            "benchmarks": {n: b.model_dump(mode="json") for n, b in profile.evaluation.benchmarks.items()},
            "students": students(profile)}


def run(stage: Stage) -> StageResult:
    cfg, dataset = stage.profile, stage.key.dataset
    dataset_cfg = cfg.datasets[dataset]
    rows = build_problems(dataset, dataset_cfg, read_source(dataset_cfg), cfg.decontamination,
                          student_text_limit(cfg, dataset, stage.key.model_size))
    rejected = rows.rejected
    frame, contaminated = mark_contaminated(rows.accepted, decontamination_references(cfg, dataset, rows.accepted),
                                            cfg.decontamination)
    split_counts = frame["split"].value_counts()
    duplicates = int(rejected["reason"].str.startswith("duplicate of").sum()) if len(rejected) else 0
    stats = {"num_problems": len(frame), "num_train": int(split_counts.get("train", 0)),
             "num_eval": int(split_counts.get("eval", 0)), "num_contaminated": int(split_counts.get(CONTAMINATED, 0)),
             "num_duplicates": duplicates, "num_rejected": len(rejected)}
    stage.log.info(f"{rows.origin}: {stats['num_train']} train and {stats['num_eval']} eval problems")
    if contaminated:
        stage.log.warning(f"{stats['num_contaminated']} training problem(s) overlap problems they would be scored on "
                          f"({dict(contaminated)}): split 'contaminated', never trained on")
    if len(rejected):
        stage.run.log_text(rejected.to_csv(index=False), "rejected_rows.csv")
        stage.log.warning(f"{rows.origin}: {len(rejected)} row(s) rejected: {rejected['reason'].value_counts().to_dict()}")
    return StageResult(frame=frame, metrics=stats, metadata={
        "source": rows.origin,
        "contaminated_by_benchmark": Json(dict(contaminated)),
        "contaminated_rows": markdown_table(frame[frame["split"] == CONTAMINATED],
                                            ["problem_id", "source_row", "contaminated_with", "question"], rows=20),
        "rejected_by_reason": counts(rejected["reason"]) if len(rejected) else Json({}),
        "rejected_rows": markdown_table(rejected, rows=20),
        "sample": markdown_table(frame, ["problem_id", "split", "question", "answer"]),
    }, params={"source": rows.origin, "answer_format": dataset_cfg.answer_format,
               "eval_fraction": dataset_cfg.eval_fraction, "split_seed": dataset_cfg.split_seed,
               "decontamination_ngram": cfg.decontamination.ngram})


def check(frame: pd.DataFrame, profile: Profile) -> list[CheckResult]:
    found = frame[frame["split"] == CONTAMINATED]
    by_benchmark = found["contaminated_with"].str.split(":", n=1).str[0].value_counts().to_dict()
    return [CheckResult(
        name="no_contamination", passed=found.empty,
        description=None if found.empty else (
            f"{len(found)} training problem(s) overlap problems this profile scores on ({by_benchmark}); they are "
            "kept out of training (split 'contaminated'). Check the training source for copied benchmark problems"),
        metadata={"num_contaminated": len(found), "by_benchmark": Json(by_benchmark)},
    )]
