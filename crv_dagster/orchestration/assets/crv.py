"""The CRV stage: ``critiques``, ``rewritten_cots`` and ``verified_set``."""

import json
import re

import dagster as dg
import pandas as pd

from crv_dagster.agents import crv
from crv_dagster.agents.critic import StudentCritic
from crv_dagster.agents.roles import describe_agents
from crv_dagster.agents.student_view import label_agreement, labels_by_solves, student_nll, student_solves
from crv_dagster.config import Profile
from crv_dagster.factory import (
    build_backend,
    build_critic,
    build_rethinker,
    build_verifier,
    code_sandbox,
    solution_checker,
)
from crv_dagster.models.located import student_base_model, student_token_counter
from crv_dagster.orchestration.metadata import image, markdown_table
from crv_dagster.orchestration.resources import ProfileResource
from crv_dagster.orchestration.stage import Stage, StageResult, table_stage
from crv_dagster.orchestration.tracking import MlflowTracking
from crv_dagster.orchestration.types import (
    critiques_schema,
    rewritten_cots_schema,
    table_asset_args,
    verified_set_schema,
)
from crv_dagster.plots import length_histogram
from crv_dagster.versions import AssetReads, backend_identity, prompt_text, students
from crv_dagster.vocabulary import PROVENANCES, SUITED, UNSUITED_ORIGINAL

GROUP = "crv"
_CODE = (__name__, "crv_dagster.agents.crv", "crv_dagster.factory", "crv_dagster.agents.student_view")


def _rewrite_reads(profile: Profile) -> dict:
    crv, judge = profile.crv, profile.crv.verifier.llm_judge
    return {"rethinker": crv.rethinker.model_dump(mode="json"), "verifier": crv.verifier.model_dump(mode="json"),
            "max_attempts": crv.max_attempts, "agent": backend_identity(profile, crv.agent_backend),
            "judge": backend_identity(profile, crv.verifier.judge_backend or crv.agent_backend) if judge else None,
            "students": students(profile),  # the student's tokenizer measures expansions
            "prompts": {"expand": prompt_text(crv.rethinker.expand_prompt),
                        "simplify": prompt_text(crv.rethinker.simplify_prompt),
                        **({"judge": prompt_text(crv.verifier.judge_prompt)} if judge else {})}}


READS = {
    "critiques": AssetReads((*_CODE, "crv_dagster.evaluation.scoring"), lambda p: {
        "critic": p.crv.critic.model_dump(mode="json"), "agent": backend_identity(p, p.crv.agent_backend),
        # the base student asked each problem (student_solves)
        "evaluation": (backend_identity(p, p.evaluation.backend), p.evaluation.protocol.model_dump(mode="json"),
                       p.seeds[0], p.sandbox.model_dump(mode="json")) if p.evaluation.backend else None,
        "students": students(p), "nll_max_tokens": p.training.sft.max_length,  # the student measures the CoTs
        "prompts": {"critic": prompt_text(p.crv.critic.prompt)}}),
    "rewritten_cots": AssetReads(_CODE, _rewrite_reads),
    "verified_set": AssetReads((__name__, "crv_dagster.agents.crv"),
                               lambda p: {"unrewritten": p.crv.unrewritten, "rescued": p.crv.rescued}),
}


def _unparsed_check(frame: pd.DataFrame, cfg) -> list[dg.AssetCheckResult]:
    labels, unreadable = crv.label_counts(frame), crv.unreadable_counts(frame)
    share = labels["unparsed"] / len(frame) if len(frame) else 0.0
    limit = cfg.crv.max_unparsed_share
    return [dg.AssetCheckResult(
        check_name="unparsed_share_ok", passed=bool(share <= limit),
        severity=dg.AssetCheckSeverity.WARN,
        description=None if share <= limit else (
            f"{share:.0%} of the Critic's replies gave no label ({unreadable}); with truncated or "
            f"unfinished thinking, raise crv.critic.max_new_tokens ({cfg.crv.critic.max_new_tokens})"),
        metadata={"unparsed_share": share, "limit": limit, "unreadable_replies": dg.MetadataValue.json(unreadable)},
    )]


def _sft_rows_check(frame: pd.DataFrame, cfg) -> list[dg.AssetCheckResult]:
    suited = int((frame["role"] == SUITED).sum())
    return [dg.AssetCheckResult(check_name="has_sft_rows", passed=suited > 0, severity=dg.AssetCheckSeverity.WARN,
                                metadata={"num_suited": suited})]


def _solves(stage: Stage, student: str, judged: pd.DataFrame, problems: pd.DataFrame) -> tuple[list | None, dict]:
    """Whether the base student solves each judged problem, and its generation's token counts; None
    where the profile has no evaluation backend or turns the measurement off."""
    cfg = stage.cfg
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


def _fenced(text: str, max_chars: int) -> str:
    text = text if len(text) <= max_chars else text[: max_chars - 1] + "…"
    # A fence longer than any run of backticks inside, so a CoT's own code block stays inside it.
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{fence}text\n{text}\n{fence}"


def side_by_side(frame: pd.DataFrame, passed: int = 2, per_reason: int = 1, max_chars: int = 1500) -> str:
    """Originals and their rewrites, one after the other in fenced blocks (line breaks as written):
    a few that verified and, for every reason a rewrite was dropped, its first example, with the
    text of the attempt that failed so."""
    rewrites = frame[frame["action"].isin(["expand", "simplify"])]
    if rewrites.empty:
        return "_(no CoT was rewritten)_"
    samples = []  # (heading, original, (attempt, text) pairs)
    for row in rewrites[rewrites["passed"]].head(passed).itertuples():
        samples.append((f"{row.problem_id} · {row.action} · verified on attempt {row.final_attempt}",
                        row.original_cot, [(row.final_attempt, row.rewritten_cot)]))
    shown: dict[str, int] = {}
    for row in rewrites[~rewrites["passed"]].itertuples():
        for verdict in json.loads(row.verdicts):
            reason = verdict["reason"]
            if shown.get(reason, 0) >= per_reason:
                continue
            shown[reason] = shown.get(reason, 0) + 1
            samples.append((f"{row.problem_id} · {row.action} · attempt {verdict['attempt']} dropped: {reason}",
                            row.original_cot, [(verdict["attempt"], verdict.get("text", ""))]))
    counts = crv.refine_stats(frame, int(frame["attempts"].max() or 1))["drop_reasons"]
    out = [f"{int(rewrites['passed'].sum())} of {len(rewrites)} rewrites verified; dropped by reason: "
           f"{counts or 'none'}. Below: up to {passed} verified, and one failed attempt per reason."]
    for heading, original, attempts in samples:
        out.append(f"#### {heading}\n\nOriginal:\n\n{_fenced(original, max_chars)}")
        for attempt, text in attempts:
            out.append(f"Rewrite (attempt {attempt}):\n\n{_fenced(text or '(no text)', max_chars)}")
    return "\n\n".join(out)


def critiques_stage(stage: Stage, raw_cots: pd.DataFrame, problems: pd.DataFrame) -> StageResult:
    cfg = stage.cfg
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
    return StageResult(frame, {
        "num_critiques": len(frame), "unparsed_share": round(unparsed_share, 4),
        "num_cots_not_judged": len(raw_cots) - len(frame), **{f"label_{k}": v for k, v in labels.items()},
        **{f"unreadable_{k}": v for k, v in unreadable.items()}, **agent_stats, **student_stats,
        "student_solves_share": float(frame["student_solves"].mean()) if frame["student_solves"].notna().any() else None,
        "mean_student_nll": float(frame["student_nll"].mean()) if frame["student_nll"].notna().any() else None,
        "label_nll_spearman": agreement["spearman"],
    }, {
        "agents": describe_agents(cfg),
        "label_distribution": dg.MetadataValue.json(labels),
        "labels_by_student_nll_tercile": dg.MetadataValue.json(agreement["by_nll_tercile"]),
        "labels_by_student_solves": dg.MetadataValue.json(by_solves),
        "unreadable_replies": dg.MetadataValue.json(unreadable),
        "sample": markdown_table(frame, ["problem_id", "label", "attempts", "reply", "cot"]),
    }, {"student_size": student_size, "critic_kind": cfg.crv.critic.kind, "critic_prompt": cfg.crv.critic.prompt,
        "critic_max_retries": cfg.crv.critic.max_retries, "agent_model": frame["agent_model"].iloc[0] if len(frame) else ""})


def rewritten_cots_stage(stage: Stage, problems: pd.DataFrame, critiques: pd.DataFrame) -> StageResult:
    cfg, key = stage.cfg, stage.key
    student_size = cfg.model_sizes[key.model_size].parameters
    # A code CoT's rewrite is verified by running its problem's tests.
    checker = solution_checker(cfg, problems[problems["problem_id"].isin(critiques["problem_id"])])
    count_tokens = student_token_counter(cfg, key.model_size)  # how rewrites are measured
    with build_backend(cfg, cfg.crv.agent_backend) as backend, build_verifier(cfg, backend, checker) as verifier:
        rethinker = build_rethinker(cfg, backend)
        n_rewrite = int(critiques["label"].isin(["easy", "hard"]).sum())
        stage.log.info(f"rethinker {backend.model_id}: {n_rewrite} CoTs to rewrite, "
                       f"up to {cfg.crv.max_attempts} attempts each")
        frame = crv.refine(critiques, rethinker, verifier, student_size, cfg.crv.max_attempts, count_tokens)
        # A judge on a backend of its own is counted as its own role; on the agents' backend its
        # calls are in the agent's counts already.
        judge_stats = verifier.judge_backend.stats.as_metadata("judge") if verifier.owns_judge_backend else {}
    stats = crv.refine_stats(frame, cfg.crv.max_attempts)
    stage.log.info(f"actions {stats['actions']}; pass rate by attempt {stats['pass_rate_by_attempt']}; "
                   f"dropped {stats['drop_reasons']}")
    lengths, before, after = crv.rewrite_lengths(frame, count_tokens)
    png = length_histogram(before, after, f"CoT length, {key.dataset} / {key.model_size}")
    stage.run.log_image_bytes(png, "cot_lengths.png")
    stage.run.log_text(json.dumps(stats, indent=2), "crv_stats.json")
    return StageResult(frame, {
        "num_problems": len(frame), "num_passed": int(frame["passed"].sum()),
        "num_dropped": stats["num_dropped"], "rewrite_pass_rate": stats["rewrite_pass_rate"],
        "num_rescued": stats["num_rescued"],
        **{f"action_{k}": v for k, v in stats["actions"].items()},
        **{f"pass_rate_{k}": v for k, v in stats["pass_rate_by_attempt"].items()},
        **{f"drop_{k.replace(':', '_')}": v for k, v in stats["drop_reasons"].items()},
        **lengths, **backend.stats.as_metadata("agent"), **judge_stats,
    }, {
        "actions": dg.MetadataValue.json(stats["actions"]),
        "pass_rate_by_attempt": dg.MetadataValue.json(stats["pass_rate_by_attempt"]),
        "drop_reasons": dg.MetadataValue.json(stats["drop_reasons"]),
        "cot_lengths_tokens": image(png, "CoT lengths in student tokens, before and after"),
        "agents": describe_agents(cfg),
        "side_by_side": dg.MetadataValue.md(side_by_side(frame)),
    }, {"max_attempts": cfg.crv.max_attempts, "llm_judge": cfg.crv.verifier.llm_judge,
        "expand_prompt": cfg.crv.rethinker.expand_prompt, "simplify_prompt": cfg.crv.rethinker.simplify_prompt})


def verified_set_stage(stage: Stage, rewritten_cots: pd.DataFrame) -> StageResult:
    policy, rescued = stage.cfg.crv.unrewritten, stage.cfg.crv.rescued
    frame = crv.verified_set(rewritten_cots, policy, rescued)
    suited = frame[frame["role"] == SUITED]
    stats = {
        "num_rows": len(frame), "num_suited": len(suited),
        "num_unsuited_originals": int((frame["role"] == UNSUITED_ORIGINAL).sum()),
        **{f"num_suited_{p}": int((suited["provenance"] == p).sum()) for p in PROVENANCES},
        **crv.unrewritten_counts(rewritten_cots, policy),
        **crv.rescued_counts(rewritten_cots, rescued),
        "yield": round(len(suited) / len(rewritten_cots), 4) if len(rewritten_cots) else 0.0,
    }
    stage.log.info(f"{len(suited)} student-suited CoTs for SFT ({stats['num_suited_rescued']} rescued from a wrong "
                   f"answer; {stats['rescued_dropped']} rescued left out), {stats['num_unsuited_originals']} "
                   "unsuited originals for CogPO")
    return StageResult(frame, stats, {
        "unrewritten": policy, "rescued": rescued,
        "sample": markdown_table(suited, ["problem_id", "provenance", "label", "cot"], max_chars=300),
    }, {"unrewritten": policy, "rescued": rescued})


def build_crv_assets(partitions: dg.PartitionsDefinition, profile_: Profile) -> list[dg.AssetsDefinition]:
    # Descriptions name the profile's agents: the demo's are the 135M student itself.
    agents = describe_agents(profile_)

    @dg.asset(
        **table_asset_args(profile_, "critiques", critiques_schema, READS["critiques"]),
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"pandas", "parquet"},
        pool="gpu",
        check_specs=[dg.AssetCheckSpec("unparsed_share_ok", asset="critiques",
                                       description="Few enough Critic replies could not be read as a label.")],
        description="The Critic's label for each raw CoT (easy / medium / hard) from the student's perspective. "
                    + agents,
    )
    def critiques(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                  problems: pd.DataFrame, raw_cots: pd.DataFrame):
        yield from table_stage(context, profile, mlflow, lambda stage: critiques_stage(stage, raw_cots, problems),
                               _unparsed_check)

    @dg.asset(
        **table_asset_args(profile_, "rewritten_cots", rewritten_cots_schema, READS["rewritten_cots"]),
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"pandas", "parquet"},
        pool="gpu",
        description="Easy CoTs expanded, hard ones simplified, medium kept; each rewrite verified (a code CoT by "
                    "running its problem's tests), retried on failure; how many verified is `rewrite_pass_rate`. "
                    + agents,
    )
    def rewritten_cots(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                       problems: pd.DataFrame, critiques: pd.DataFrame):
        yield from table_stage(context, profile, mlflow, lambda stage: rewritten_cots_stage(stage, problems, critiques))

    @dg.asset(
        **table_asset_args(profile_, "verified_set", verified_set_schema, READS["verified_set"]),
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"pandas", "parquet"},
        check_specs=[dg.AssetCheckSpec("has_sft_rows", asset="verified_set",
                                       description="At least one student-suited CoT passed verification.")],
        description="The SFT data (verified, student-suited CoTs; a rewrite of a CoT whose answer was wrong is "
                    "'rescued', kept or left out by crv.rescued) plus the correct but unsuited originals. " + agents,
    )
    def verified_set(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                     rewritten_cots: pd.DataFrame):
        yield from table_stage(context, profile, mlflow, lambda stage: verified_set_stage(stage, rewritten_cots),
                               _sft_rows_check)

    return [critiques, rewritten_cots, verified_set]
