"""``raw_cots``: the teacher's chain of thought for each training problem, graded against the reference."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.data.teacher import cots_from_dataset, cots_from_teacher, trace_stats
from crv_dagster.factory import build_backend, default_sampling, solution_checker
from crv_dagster.prompts import TEACHER_FIELDS, TEACHER_OPTIONAL, load_prompt
from crv_dagster.stages.base import Json, Stage, StageResult
from crv_dagster.stages.display import markdown_table
from crv_dagster.versions import backend_identity, prompt_text


def reads(profile: Profile) -> dict:
    used = any(d.cot_source == "teacher" for d in profile.datasets.values())
    return {"cot_source": {n: d.cot_source for n, d in profile.datasets.items()},
            "cot": profile.cot.model_dump(mode="json"),
            "teacher": profile.teacher.model_dump(mode="json") if used else None,
            "teacher_backend": backend_identity(profile, profile.teacher.backend) if used else None,
            "prompts": {"teacher": prompt_text(profile.teacher.prompt)} if used else {}}


def run(stage: Stage, problems: pd.DataFrame) -> StageResult:
    return cots_of(stage, problems[problems["split"] == "train"])


def cots_of(stage: Stage, train: pd.DataFrame) -> StageResult:
    """The teacher's CoTs for the problems in ``train`` (the training split, or heldout_pairs' sample)."""
    cfg, dataset = stage.profile, stage.key.dataset
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
    return StageResult(frame=frame, metrics=stats, metadata={
        "cot_source": dataset_cfg.cot_source,
        "cot_trace": cfg.cot.trace,
        "cot_status": Json(frame["cot_status"].value_counts().to_dict()),
        "sample": markdown_table(frame, ["problem_id", "answer", "extracted_answer", "is_correct", "cot"]),
    }, params={"cot_source": dataset_cfg.cot_source, "cot_trace": cfg.cot.trace,
               "teacher_model": frame["teacher_model"].iloc[0] if len(frame) else ""})
