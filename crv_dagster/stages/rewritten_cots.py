"""``rewritten_cots``: easy CoTs expanded, hard ones simplified, medium kept; each rewrite verified
(a code CoT by running its problem's tests) and retried on failure."""

from __future__ import annotations

import json

import pandas as pd

from crv_dagster.agents import crv
from crv_dagster.agents.roles import describe_agents
from crv_dagster.config import Profile
from crv_dagster.factory import build_backend, build_rethinker, build_verifier, solution_checker
from crv_dagster.models.located import student_token_counter
from crv_dagster.plots import length_histogram
from crv_dagster.stages.base import Json, Markdown, Stage, StageResult
from crv_dagster.stages.display import fenced, image
from crv_dagster.versions import backend_identity, prompt_text, students


def reads(profile: Profile) -> dict:
    settings, judge = profile.crv, profile.crv.verifier.llm_judge
    return {"rethinker": settings.rethinker.model_dump(mode="json"),
            "verifier": settings.verifier.model_dump(mode="json"),
            "max_attempts": settings.max_attempts, "agent": backend_identity(profile, settings.agent_backend),
            "judge": (backend_identity(profile, settings.verifier.judge_backend or settings.agent_backend)
                      if judge else None),
            "students": students(profile),  # the student's tokenizer measures expansions
            "prompts": {"expand": prompt_text(settings.rethinker.expand_prompt),
                        "simplify": prompt_text(settings.rethinker.simplify_prompt),
                        **({"judge": prompt_text(settings.verifier.judge_prompt)} if judge else {})}}


def run(stage: Stage, problems: pd.DataFrame, critiques: pd.DataFrame) -> StageResult:
    cfg, key = stage.profile, stage.key
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
    return StageResult(frame=frame, metrics={
        "num_problems": len(frame), "num_passed": int(frame["passed"].sum()),
        "num_dropped": stats["num_dropped"], "rewrite_pass_rate": stats["rewrite_pass_rate"],
        "num_rescued": stats["num_rescued"],
        **{f"action_{k}": v for k, v in stats["actions"].items()},
        **{f"pass_rate_{k}": v for k, v in stats["pass_rate_by_attempt"].items()},
        **{f"drop_{k.replace(':', '_')}": v for k, v in stats["drop_reasons"].items()},
        **lengths, **backend.stats.as_metadata("agent"), **judge_stats,
    }, metadata={
        "actions": Json(stats["actions"]),
        "pass_rate_by_attempt": Json(stats["pass_rate_by_attempt"]),
        "drop_reasons": Json(stats["drop_reasons"]),
        "cot_lengths_tokens": image(png, "CoT lengths in student tokens, before and after"),
        "agents": describe_agents(cfg),
        "side_by_side": Markdown(side_by_side(frame)),
    }, params={"max_attempts": cfg.crv.max_attempts, "llm_judge": cfg.crv.verifier.llm_judge,
        "expand_prompt": cfg.crv.rethinker.expand_prompt, "simplify_prompt": cfg.crv.rethinker.simplify_prompt})


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
        out.append(f"#### {heading}\n\nOriginal:\n\n{fenced(original, max_chars)}")
        for attempt, text in attempts:
            out.append(f"Rewrite (attempt {attempt}):\n\n{fenced(text or '(no text)', max_chars)}")
    return "\n\n".join(out)
