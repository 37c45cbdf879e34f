"""The CRV stage: ``critiques``, ``rewritten_cots`` and ``verified_set``."""

import json

import dagster as dg
import pandas as pd

from crv_dagster.agents import crv
from crv_dagster.config import Profile
from crv_dagster.factory import (
    build_backend,
    build_critic,
    build_rethinker,
    build_verifier,
    resolve_profile_model,
    solution_checker,
)
from crv_dagster.orchestration.memo import reused_table, table_output
from crv_dagster.orchestration.metadata import image, markdown_table
from crv_dagster.orchestration.partitions import partition_of
from crv_dagster.orchestration.resources import ProfileResource
from crv_dagster.orchestration.tracking import MlflowTracking
from crv_dagster.orchestration.types import (
    critiques_schema,
    rewritten_cots_schema,
    table_asset_args,
    verified_set_schema,
)
from crv_dagster.plots import length_histogram
from crv_dagster.versions import AssetReads, backend_identity, prompt_text, students
from crv_dagster.vocabulary import SUITED, UNSUITED_ORIGINAL

GROUP = "crv"
_CODE = (__name__, "crv_dagster.agents.crv", "crv_dagster.factory")


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
    "critiques": AssetReads(_CODE, lambda p: {
        "critic": p.crv.critic.model_dump(mode="json"), "agent": backend_identity(p, p.crv.agent_backend),
        "students": {s: c.parameters for s, c in p.model_sizes.items()},
        "prompts": {"critic": prompt_text(p.crv.critic.prompt)}}),
    "rewritten_cots": AssetReads(_CODE, _rewrite_reads),
    "verified_set": AssetReads((__name__, "crv_dagster.agents.crv"), lambda p: {"unrewritten": p.crv.unrewritten}),
}


def _student_tokenizer(cfg, model_size: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_profile_model(cfg, cfg.model_sizes[model_size].model))


def _token_lengths(tokenizer, texts) -> list[int]:
    texts = [t for t in texts if isinstance(t, str)]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []


def _unparsed_check(frame: pd.DataFrame, cfg) -> dg.AssetCheckResult:
    labels, unreadable = crv.label_counts(frame), crv.unreadable_counts(frame)
    share = labels["unparsed"] / len(frame) if len(frame) else 0.0
    limit = cfg.crv.max_unparsed_share
    return dg.AssetCheckResult(
        check_name="unparsed_share_ok", passed=bool(share <= limit),
        severity=dg.AssetCheckSeverity.WARN,
        description=None if share <= limit else (
            f"{share:.0%} of the Critic's replies gave no label ({unreadable}); with truncated or "
            f"unfinished thinking, raise crv.critic.max_new_tokens ({cfg.crv.critic.max_new_tokens})"),
        metadata={"unparsed_share": share, "limit": limit, "unreadable_replies": dg.MetadataValue.json(unreadable)},
    )


def _sft_rows_check(frame: pd.DataFrame) -> dg.AssetCheckResult:
    suited = int((frame["role"] == SUITED).sum())
    return dg.AssetCheckResult(check_name="has_sft_rows", passed=suited > 0, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"num_suited": suited})


def build_crv_assets(partitions: dg.PartitionsDefinition, profile_: Profile) -> list[dg.AssetsDefinition]:
    tables_dir = profile_.artifacts_dir / "tables"

    @dg.asset(
        **table_asset_args(profile_, "critiques", critiques_schema, READS["critiques"]),
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"pandas", "parquet"},
        pool="gpu",
        check_specs=[dg.AssetCheckSpec("unparsed_share_ok", asset="critiques",
                                       description="Few enough Critic replies could not be read as a label.")],
        description="The Critic's label for each raw CoT (easy / medium / hard) from the student's perspective.",
    )
    def critiques(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                  raw_cots: pd.DataFrame):
        cfg = profile.profile
        if (reused := reused_table(context, tables_dir)) is not None:
            yield reused
            yield _unparsed_check(reused.value, cfg)
            return
        key = partition_of(context)
        student_size = cfg.model_sizes[key.model_size].parameters
        with mlflow.asset_run(context, cfg) as run:
            with build_backend(cfg, cfg.crv.agent_backend) as backend:
                critic = build_critic(cfg, backend)
                context.log.info(f"critic {backend.model_id}: {len(raw_cots)} CoTs, student {student_size}")
                frame = crv.critique(raw_cots, critic, student_size)
            labels = crv.label_counts(frame)
            unreadable = crv.unreadable_counts(frame)
            unparsed_share = labels["unparsed"] / len(frame) if len(frame) else 0.0
            stats = {"num_critiques": len(frame), "unparsed_share": round(unparsed_share, 4),
                     "num_cots_not_judged": len(raw_cots) - len(frame),
                     **{f"label_{k}": v for k, v in labels.items()},
                     **{f"unreadable_{k}": v for k, v in unreadable.items()}, **backend.stats.as_metadata("agent")}
            context.log.info(f"labels: {labels}; unread Critic replies by reason: {unreadable}")
            if unparsed_share > cfg.crv.max_unparsed_share:
                context.log.warning(
                    f"{unparsed_share:.0%} of CoTs got no label (limit {cfg.crv.max_unparsed_share:.0%}); unread replies "
                    f"{unreadable}. Truncated or unfinished thinking means crv.critic.max_new_tokens "
                    f"({cfg.crv.critic.max_new_tokens}) is too small for this agent.")
            run.log_params({"student_size": student_size, "critic_prompt": cfg.crv.critic.prompt,
                            "critic_max_retries": cfg.crv.critic.max_retries, "agent_model": backend.model_id})
            run.log_metrics(stats)
        yield table_output(frame, {
            **stats,
            "dagster/row_count": len(frame),
            "label_distribution": dg.MetadataValue.json(labels),
            "unreadable_replies": dg.MetadataValue.json(unreadable),
            "sample": markdown_table(frame, ["problem_id", "label", "attempts", "reply", "cot"]),
            "mlflow_run": dg.MetadataValue.url(run.url),
        })
        yield _unparsed_check(frame, cfg)

    @dg.asset(
        **table_asset_args(profile_, "rewritten_cots", rewritten_cots_schema, READS["rewritten_cots"]),
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"pandas", "parquet"},
        pool="gpu",
        description="Easy CoTs expanded, hard ones simplified, medium kept; each rewrite verified (a code CoT by "
                    "running its problem's tests), retried on failure.",
    )
    def rewritten_cots(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                       problems: pd.DataFrame, critiques: pd.DataFrame) -> dg.Output:
        if (reused := reused_table(context, tables_dir)) is not None:
            return reused
        cfg = profile.profile
        key = partition_of(context)
        student_size = cfg.model_sizes[key.model_size].parameters
        with mlflow.asset_run(context, cfg) as run:
            # A code CoT's rewrite is verified by running its problem's tests.
            checker = solution_checker(cfg, problems[problems["problem_id"].isin(critiques["problem_id"])])
            with (build_backend(cfg, cfg.crv.agent_backend) as backend,
                  build_verifier(cfg, backend, checker) as verifier):
                rethinker = build_rethinker(cfg, backend)
                n_rewrite = int(critiques["label"].isin(["easy", "hard"]).sum())
                context.log.info(f"rethinker {backend.model_id}: {n_rewrite} CoTs to rewrite, "
                                 f"up to {cfg.crv.max_attempts} attempts each")
                tokenizer = _student_tokenizer(cfg, key.model_size)
                frame = crv.refine(critiques, rethinker, verifier, student_size, cfg.crv.max_attempts,
                                   count_tokens=lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
            stats = crv.refine_stats(frame, cfg.crv.max_attempts)
            context.log.info(f"actions {stats['actions']}; pass rate by attempt {stats['pass_rate_by_attempt']}; "
                             f"dropped {stats['drop_reasons']}")
            rewritten = frame[frame["passed"] & frame["action"].isin(["expand", "simplify"])]
            before = _token_lengths(tokenizer, rewritten["original_cot"])
            after = _token_lengths(tokenizer, rewritten["rewritten_cot"])
            lengths = {}
            for action in ("expand", "simplify"):
                part = rewritten[rewritten["action"] == action]
                if len(part):
                    lengths[f"{action}_tokens_before"] = float(pd.Series(_token_lengths(tokenizer, part["original_cot"])).mean())
                    lengths[f"{action}_tokens_after"] = float(pd.Series(_token_lengths(tokenizer, part["rewritten_cot"])).mean())
            png = length_histogram(before, after, f"CoT length, {key.dataset} / {key.model_size}")
            flat = {"num_problems": len(frame), "num_passed": int(frame["passed"].sum()),
                    "num_dropped": stats["num_dropped"], "rewrite_pass_rate": stats["rewrite_pass_rate"],
                    **{f"action_{k}": v for k, v in stats["actions"].items()},
                    **{f"pass_rate_{k}": v for k, v in stats["pass_rate_by_attempt"].items()},
                    **{f"drop_{k.replace(':', '_')}": v for k, v in stats["drop_reasons"].items()},
                    **lengths, **backend.stats.as_metadata("agent")}
            run.log_params({"max_attempts": cfg.crv.max_attempts, "llm_judge": cfg.crv.verifier.llm_judge,
                            "expand_prompt": cfg.crv.rethinker.expand_prompt,
                            "simplify_prompt": cfg.crv.rethinker.simplify_prompt})
            run.log_metrics(flat)
            run.log_image_bytes(png, "cot_lengths.png")
            run.log_text(json.dumps(stats, indent=2), "crv_stats.json")
        side_by_side = frame[frame["action"].isin(["expand", "simplify"])]
        return table_output(frame, {
            **{k: v for k, v in flat.items() if v is not None},
            "dagster/row_count": len(frame),
            "actions": dg.MetadataValue.json(stats["actions"]),
            "pass_rate_by_attempt": dg.MetadataValue.json(stats["pass_rate_by_attempt"]),
            "drop_reasons": dg.MetadataValue.json(stats["drop_reasons"]),
            "cot_lengths_tokens": image(png, "CoT lengths in student tokens, before and after"),
            "side_by_side": markdown_table(side_by_side, ["problem_id", "action", "passed", "original_cot", "rewritten_cot"],
                                           rows=4, max_chars=400),
            "mlflow_run": dg.MetadataValue.url(run.url),
        })

    @dg.asset(
        **table_asset_args(profile_, "verified_set", verified_set_schema, READS["verified_set"]),
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"pandas", "parquet"},
        check_specs=[dg.AssetCheckSpec("has_sft_rows", asset="verified_set",
                                       description="At least one student-suited CoT passed verification.")],
        description="The SFT data (verified, student-suited CoTs) plus the correct but unsuited originals.",
    )
    def verified_set(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                     rewritten_cots: pd.DataFrame):
        if (reused := reused_table(context, tables_dir)) is not None:
            yield reused
            yield _sft_rows_check(reused.value)
            return
        cfg = profile.profile
        with mlflow.asset_run(context, cfg) as run:
            frame = crv.verified_set(rewritten_cots, cfg.crv.unrewritten)
            suited = frame[frame["role"] == SUITED]
            stats = {
                "num_rows": len(frame),
                "num_suited": len(suited),
                "num_unsuited_originals": int((frame["role"] == UNSUITED_ORIGINAL).sum()),
                "num_suited_rewritten": int((suited["provenance"] == "rewritten").sum()),
                "num_suited_original": int((suited["provenance"] == "original").sum()),
                **crv.unrewritten_counts(rewritten_cots, cfg.crv.unrewritten),
                "yield": round(len(suited) / len(rewritten_cots), 4) if len(rewritten_cots) else 0.0,
            }
            run.log_metrics(stats)
            run.log_params({"unrewritten": cfg.crv.unrewritten})
            context.log.info(f"{len(suited)} student-suited CoTs for SFT, "
                             f"{stats['num_unsuited_originals']} unsuited originals for CogPO")
        yield table_output(frame, {
            **stats,
            "unrewritten": cfg.crv.unrewritten,
            "dagster/row_count": len(frame),
            "sample": markdown_table(suited, ["problem_id", "provenance", "label", "cot"], max_chars=300),
            "mlflow_run": dg.MetadataValue.url(run.url),
        })
        yield _sft_rows_check(frame)

    return [critiques, rewritten_cots, verified_set]
