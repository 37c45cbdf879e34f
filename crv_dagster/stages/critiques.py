"""``critiques``: the Critic's label for each raw CoT (easy / medium / hard) from the student's
perspective, with the student's own NLL of the CoT and whether it solves the problem."""

from __future__ import annotations

import pandas as pd

from crv_dagster.agents import crv
from crv_dagster.agents.critic import StudentCritic
from crv_dagster.agents.roles import describe_agents
from crv_dagster.agents.student_view import label_agreement, labels_by_solves, student_nll, student_solves
from crv_dagster.config import Profile
from crv_dagster.factory import build_backend, build_critic, code_sandbox
from crv_dagster.models.located import student_base_model
from crv_dagster.stages.base import CheckResult, Json, Stage, StageResult
from crv_dagster.stages.display import text_samples
from crv_dagster.versions import backend_identity, prompt_text, students

CHECKS = {"unparsed_share_ok": "Few enough Critic replies could not be read as a label."}


def reads(profile: Profile) -> dict:
    p = profile
    return {
        "critic": p.crv.critic.model_dump(mode="json"), "agent": backend_identity(p, p.crv.agent_backend),
        # the base student asked each problem (student_solves)
        "evaluation": (backend_identity(p, p.evaluation.backend), p.evaluation.protocol.model_dump(mode="json"),
                       p.seeds[0], p.sandbox.model_dump(mode="json")) if p.evaluation.backend else None,
        "students": students(p), "nll_max_tokens": p.training.sft.max_length,  # the student measures the CoTs
        "prompts": {"critic": prompt_text(p.crv.critic.prompt)}}


def _solves(stage: Stage, student: str, judged: pd.DataFrame, problems: pd.DataFrame) -> tuple[list | None, dict]:
    """Whether the base student solves each judged problem, and its generation's token counts; None
    where the profile has no evaluation backend or turns the measurement off."""
    cfg = stage.profile
    if cfg.evaluation.backend is None or not cfg.crv.critic.student_solves or judged.empty:
        return None, {}
    asked = judged[["problem_id", "question", "answer"]].merge(
        problems[["problem_id", "choices", "tests"]], on="problem_id", how="left")
    if asked["tests"].isna().all():
        asked = asked.drop(columns="tests")  # no code problem: no sandbox needed
    sandbox = code_sandbox(cfg.sandbox) if "tests" in asked else None
    with build_backend(cfg, cfg.evaluation.backend, model_path=student) as backend:
        stage.log.info(f"the base student on the {len(asked)} judged problems ({cfg.evaluation.protocol.samples} "
                       "sample(s) each)")
        solves = student_solves(backend, asked, cfg.evaluation.protocol, cfg.seeds[0], sandbox)
    return solves, backend.stats.as_metadata("student")


def run(stage: Stage, problems: pd.DataFrame, raw_cots: pd.DataFrame) -> StageResult:
    cfg = stage.profile
    student_size = cfg.model_sizes[stage.key.model_size].parameters
    # The student's own NLL of every CoT it could be trained on, and whether it solves the problem:
    # the checks on any Critic; the NLL is the student Critic's only input.
    judged = crv.judgeable(raw_cots)
    student = student_base_model(cfg, stage.key.model_size)
    nll = student_nll(student, list(zip(judged["question"], judged["answer"], judged["cot"])),
                      max_tokens=cfg.training.sft.max_length)
    solves, student_stats = _solves(stage, student, judged, problems)
    agent_stats: dict = {}
    if cfg.crv.critic.kind == "student":
        stage.log.info(f"student critic: {len(judged)} CoTs labelled by the NLL terciles of {student}")
        frame = crv.critique(raw_cots, StudentCritic(nll, student), student_size, nll, solves)
    else:
        with build_backend(cfg, cfg.crv.agent_backend) as backend:
            critic = build_critic(cfg, backend)
            stage.log.info(f"critic {backend.model_id}: {len(raw_cots)} CoTs, student {student_size}")
            frame = crv.critique(raw_cots, critic, student_size, nll, solves)
        agent_stats = backend.stats.as_metadata("agent")
    agreement = label_agreement(frame["label"], frame["student_nll"])
    by_solves = labels_by_solves(frame["label"], frame["student_solves"])
    stage.log.info(f"the Critic's labels against the student's NLL: {agreement}; against whether it solves the "
                   f"problem: {by_solves or 'not measured'}")
    labels, unreadable = crv.label_counts(frame), crv.unreadable_counts(frame)
    unparsed_share = labels["unparsed"] / len(frame) if len(frame) else 0.0
    stage.log.info(f"labels: {labels}; unread Critic replies by reason: {unreadable}")
    if unparsed_share > cfg.crv.max_unparsed_share:
        stage.log.warning(
            f"{unparsed_share:.0%} of CoTs got no label (limit {cfg.crv.max_unparsed_share:.0%}); unread replies "
            f"{unreadable}. Truncated or unfinished thinking means crv.critic.max_new_tokens "
            f"({cfg.crv.critic.max_new_tokens}) is too small for this agent.")
    return StageResult(frame=frame, metrics={
        "num_critiques": len(frame), "unparsed_share": round(unparsed_share, 4),
        "num_cots_not_judged": len(raw_cots) - len(frame), **{f"label_{k}": v for k, v in labels.items()},
        **{f"unreadable_{k}": v for k, v in unreadable.items()}, **agent_stats, **student_stats,
        "student_solves_share": float(frame["student_solves"].mean()) if frame["student_solves"].notna().any() else None,
        "mean_student_nll": float(frame["student_nll"].mean()) if frame["student_nll"].notna().any() else None,
        "label_nll_spearman": agreement["spearman"],
    }, metadata={
        "agents": describe_agents(cfg),
        "label_distribution": Json(labels),
        "labels_by_student_nll_tercile": Json(agreement["by_nll_tercile"]),
        "labels_by_student_solves": Json(by_solves),
        "unreadable_replies": Json(unreadable),
        "sample": text_samples(frame, ["problem_id", "label", "attempts"], ["reply", "cot"]),
    }, params={"student_size": student_size, "critic_kind": cfg.crv.critic.kind, "critic_prompt": cfg.crv.critic.prompt,
               "critic_max_retries": cfg.crv.critic.max_retries,
               "agent_model": frame["agent_model"].iloc[0] if len(frame) else ""})


def check(frame: pd.DataFrame, profile: Profile) -> list[CheckResult]:
    labels, unreadable = crv.label_counts(frame), crv.unreadable_counts(frame)
    share = labels["unparsed"] / len(frame) if len(frame) else 0.0
    limit = profile.crv.max_unparsed_share
    return [CheckResult(
        name="unparsed_share_ok", passed=bool(share <= limit),
        description=None if share <= limit else (
            f"{share:.0%} of the Critic's replies gave no label ({unreadable}); with truncated or "
            f"unfinished thinking, raise crv.critic.max_new_tokens ({profile.crv.critic.max_new_tokens})"),
        metadata={"unparsed_share": share, "limit": limit, "unreadable_replies": Json(unreadable)},
    )]
