"""The data stage: ``problems`` and ``raw_cots``."""

from dataclasses import replace

import dagster as dg
import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.data.decontaminate import mark_contaminated
from crv_dagster.data.sources import build_problems, read_source
from crv_dagster.data.teacher import cots_from_dataset, cots_from_teacher, trace_stats
from crv_dagster.evaluation.benchmarks import decontamination_references
from crv_dagster.factory import build_backend, default_sampling, solution_checker
from crv_dagster.models.located import student_text_limit
from crv_dagster.orchestration.metadata import counts, markdown_table
from crv_dagster.orchestration.resources import ProfileResource
from crv_dagster.orchestration.stage import Stage, StageResult, table_stage
from crv_dagster.orchestration.tracking import MlflowTracking
from crv_dagster.orchestration.types import (
    problems_schema,
    raw_cots_schema,
    table_asset_args,
)
from crv_dagster.prompts import TEACHER_FIELDS, TEACHER_OPTIONAL, load_prompt
from crv_dagster.versions import AssetReads, backend_identity, prompt_text, students
from crv_dagster.vocabulary import CONTAMINATED

GROUP = "data"


def _teacher_reads(profile: Profile) -> dict:
    used = any(d.cot_source == "teacher" for d in profile.datasets.values())
    return {"cot_source": {n: d.cot_source for n, d in profile.datasets.items()},
            "cot": profile.cot.model_dump(mode="json"),
            "teacher": profile.teacher.model_dump(mode="json") if used else None,
            "teacher_backend": backend_identity(profile, profile.teacher.backend) if used else None,
            "prompts": {"teacher": prompt_text(profile.teacher.prompt)} if used else {}}


READS = {
    "problems": AssetReads(
        modules=(__name__, "crv_dagster.data.sources", "crv_dagster.data.decontaminate",
                 "crv_dagster.evaluation.benchmarks", "crv_dagster.models.located"),
        # The benchmarks its training problems must not overlap, and the student whose context
        # length limits a question.
        profile=lambda p: {"datasets": {n: d.model_dump(mode="json") for n, d in p.datasets.items()},
                           "decontamination": p.decontamination.model_dump(mode="json"),
                           "benchmarks": {n: b.model_dump(mode="json") for n, b in p.evaluation.benchmarks.items()},
                           "students": students(p)}),
    "raw_cots": AssetReads(modules=(__name__, "crv_dagster.data.teacher", "crv_dagster.factory"),
                           profile=_teacher_reads),
}


def _problems(stage: Stage) -> StageResult:
    cfg, dataset = stage.cfg, stage.key.dataset
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
    return StageResult(frame, stats, {
        "source": rows.origin,
        "contaminated_by_benchmark": dg.MetadataValue.json(dict(contaminated)),
        "contaminated_rows": markdown_table(frame[frame["split"] == CONTAMINATED],
                                            ["problem_id", "source_row", "contaminated_with", "question"], rows=20),
        "rejected_by_reason": counts(rejected["reason"]) if len(rejected) else dg.MetadataValue.json({}),
        "rejected_rows": markdown_table(rejected, rows=20),
        "sample": markdown_table(frame, ["problem_id", "split", "question", "answer"]),
    }, {"source": rows.origin, "answer_format": dataset_cfg.answer_format,
        "eval_fraction": dataset_cfg.eval_fraction, "split_seed": dataset_cfg.split_seed,
        "decontamination_ngram": cfg.decontamination.ngram})


def _contamination_check(frame: pd.DataFrame, cfg: Profile) -> list[dg.AssetCheckResult]:
    found = frame[frame["split"] == CONTAMINATED]
    by_benchmark = found["contaminated_with"].str.split(":", n=1).str[0].value_counts().to_dict()
    return [dg.AssetCheckResult(
        check_name="no_contamination", passed=found.empty, severity=dg.AssetCheckSeverity.WARN,
        description=None if found.empty else (
            f"{len(found)} training problem(s) overlap problems this profile scores on ({by_benchmark}); they are "
            "kept out of training (split 'contaminated'). Check the training source for copied benchmark problems"),
        metadata={"num_contaminated": len(found), "by_benchmark": dg.MetadataValue.json(by_benchmark)},
    )]


def raw_cots_stage(stage: Stage, train: pd.DataFrame) -> StageResult:
    """The teacher's CoTs for the problems in ``train`` (the training split, or heldout_pairs' sample)."""
    cfg, dataset = stage.cfg, stage.key.dataset
    dataset_cfg = cfg.datasets[dataset]
    train = train.reset_index(drop=True)
    checker = solution_checker(cfg, train)
    cache_meta: dict[str, int] = {}
    if dataset_cfg.cot_source == "dataset":
        frame = cots_from_dataset(train, dataset, checker, cfg.cot.trace)
    else:
        prompt = load_prompt(cfg.teacher.prompt, required=TEACHER_FIELDS, optional=TEACHER_OPTIONAL)
        with build_backend(cfg, cfg.teacher.backend) as backend:
            stage.log.info(f"teacher {backend.model_id}: {len(train)} problems")
            params = replace(default_sampling(cfg, cfg.teacher.backend), max_new_tokens=cfg.teacher.max_new_tokens)
            frame = cots_from_teacher(train, backend, prompt, params, checker, cfg.cot.trace)
        cache_meta = backend.stats.as_metadata("teacher")
        stage.log.info(f"teacher cache: {cache_meta}")
    stats = {"num_cots": len(frame),
             "teacher_accuracy": float(frame["is_correct"].mean()) if len(frame) else 0.0,
             "no_answer_share": float(frame["extracted_answer"].isna().mean()) if len(frame) else 0.0,
             "mean_cot_chars": float(frame["cot"].str.len().mean()) if len(frame) else 0.0,
             **trace_stats(frame["cot"]),
             **{f"cot_status_{k}": int(v) for k, v in frame["cot_status"].value_counts().items()},
             **cache_meta}
    stage.log.info(f"{len(frame)} raw CoTs ({dataset_cfg.cot_source}), "
                   f"{stats['teacher_accuracy']:.0%} reach the reference answer")
    return StageResult(frame, stats, {
        "cot_source": dataset_cfg.cot_source,
        "cot_trace": cfg.cot.trace,
        "cot_status": dg.MetadataValue.json(frame["cot_status"].value_counts().to_dict()),
        "sample": markdown_table(frame, ["problem_id", "answer", "extracted_answer", "is_correct", "cot"]),
    }, {"cot_source": dataset_cfg.cot_source, "cot_trace": cfg.cot.trace,
        "teacher_model": frame["teacher_model"].iloc[0] if len(frame) else ""})


def build_data_assets(partitions: dg.PartitionsDefinition, profile_: Profile) -> list[dg.AssetsDefinition]:
    @dg.asset(
        **table_asset_args(profile_, "problems", problems_schema, READS["problems"]),
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"pandas", "parquet"},
        description="Problems of one dataset with reference answers, split into train and eval (seeded); training "
                    "problems that overlap an evaluation problem are set aside as 'contaminated', duplicates dropped.",
        check_specs=[dg.AssetCheckSpec("no_contamination", asset="problems",
                                       description="no training problem overlaps a problem the profile scores on")],
    )
    def problems(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking):
        # Always read again (cheap, and a changed file must be seen); unchanged content keeps its
        # data version, so nothing downstream goes stale.
        yield from table_stage(context, profile, mlflow, _problems, _contamination_check, reuse=False)

    @dg.asset(
        **table_asset_args(profile_, "raw_cots", raw_cots_schema, READS["raw_cots"]),
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"pandas", "parquet"},
        pool="gpu",
        description="The teacher's chain of thought for each training problem, graded against the reference.",
    )
    def raw_cots(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                 problems: pd.DataFrame):
        yield from table_stage(context, profile, mlflow,
                               lambda stage: raw_cots_stage(stage, problems[problems["split"] == "train"]))

    return [problems, raw_cots]
