"""Training: ``preference_pairs``, ``sft_model`` and ``cogpo_model``.

Model assets store a small manifest table (path, parent, losses); the weights themselves are
Hugging Face folders under ``<artifacts>/checkpoints/<asset>/<dataset>/<size>/<method>``.
"""

import json
from collections import Counter

import dagster as dg
import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.factory import solution_checker, student_base_model
from crv_dagster.orchestration.pipes_launch import PlannedRun, launch_training
from crv_dagster.orchestration.memo import models_output, reused_models
from crv_dagster.orchestration.metadata import counts, markdown_table
from crv_dagster.orchestration.partitions import partition_of
from crv_dagster.orchestration.resources import ProfileResource
from crv_dagster.orchestration.stage import MLFLOW_LINK, Stage, StageResult, table_stage
from crv_dagster.orchestration.tracking import MlflowTracking
from crv_dagster.orchestration.types import (
    model_manifest_schema,
    preference_pairs_schema,
    table_asset_args,
)
from crv_dagster.training import pairs as pairs_lib
from crv_dagster.training.incorrect import find_incorrect_cots
from crv_dagster.versions import AssetReads, backend_identity, prompt_text, students, training_by_size
from crv_dagster.vocabulary import COGPO, COGPO_FROM_RAW, PAIR_TYPES, SFT, SFT_FILTER, SFT_RAW, SFT_RAW_MATCHED


def _pairs_reads(profile: Profile) -> dict:
    pairs, sources = profile.training.pairs, profile.training.pairs.incorrect_sources
    return {"pairs": pairs.model_dump(mode="json"), "students": students(profile),
            "student_backend": backend_identity(profile, pairs.student_backend) if "student" in sources else None,
            "inject_backend": (backend_identity(profile, pairs.inject_backend or profile.crv.agent_backend)
                               if "inject" in sources else None),
            "prompts": {"inject": prompt_text(pairs.inject_prompt)} if "inject" in sources else {}}


def _trained_reads(stage: str):
    """What a model asset trains with: its stage's settings (``sft`` or ``cogpo``), LoRA, the
    process count per size, threads and seeds."""
    def reads(profile: Profile) -> dict:
        training = profile.training
        out = {"lora": training.lora.model_dump(mode="json"), "by_size": training_by_size(profile),
               stage: getattr(training, stage).model_dump(mode="json"), "torch_threads": training.torch_threads,
               "seeds": profile.seeds}
        if stage == "sft":
            out.update(sft_baselines=training.sft_baselines, students=students(profile))
        return out

    return reads


# The training itself runs in crv_dagster.training.job, launched through orchestration/pipes_launch.py
# with training/launch_command.py's command line; the bodies plan runs with factory's base models.
_JOB = (__name__, "crv_dagster.orchestration.pipes_launch", "crv_dagster.training.job",
        "crv_dagster.training.launch_command", "crv_dagster.training.sft", "crv_dagster.factory")
READS = {
    "preference_pairs": AssetReads(
        (__name__, "crv_dagster.training.pairs", "crv_dagster.training.incorrect", "crv_dagster.factory"),
        _pairs_reads),
    "sft_model": AssetReads(_JOB, _trained_reads("sft")),
    "cogpo_model": AssetReads(_JOB, _trained_reads("cogpo")),
}

# Why an SFT baseline can have nothing to train on.
SFT_EMPTY_REASONS = {SFT_RAW: "no raw CoT reaches the reference answer",
                     SFT_RAW_MATCHED: "no raw CoT reaches the reference answer",
                     SFT_FILTER: "the Critic labelled no correct CoT 'medium'"}

GROUP = "training"
LENGTH_KEYS = ("overlength_dropped", "overlength_truncated", "max_tokens_seen")


def _checkpoint_dir(cfg, asset: str, key, method: str, seed: int):
    return cfg.artifacts_dir / "checkpoints" / asset / key.dataset / key.model_size / method / f"seed-{seed}"


def _manifest_row(method: str, seed: int, path, parent: str, finetuning: str, result: dict) -> dict:
    loss = result.get("loss") or {}
    return {"method": method, "seed": seed, "path": str(path), "parent": parent, "finetuning": finetuning,
            "num_examples": result.get("num_examples", result.get("num_pairs")), "steps": result["steps"],
            "loss_first": loss.get("first"), "loss_last": loss.get("last"),
            "train_runtime_s": result.get("train_runtime_s")}


def _pairs(stage: Stage, problems: pd.DataFrame, verified_set: pd.DataFrame) -> StageResult:
    from transformers import AutoTokenizer  # here, not at the top: importing it takes seconds

    cfg, pairs_cfg = stage.cfg, stage.cfg.training.pairs
    material = pairs_lib.pair_material(verified_set)
    # A code CoT is right or wrong by its problem's tests.
    checker = solution_checker(cfg, problems[problems["problem_id"].isin(material["problem_id"])])
    incorrect, passed_over = find_incorrect_cots(cfg, stage.key.model_size, material, stage.log, checker)
    tokenizer = AutoTokenizer.from_pretrained(student_base_model(cfg, stage.key.model_size))
    frame, refused = pairs_lib.build_pairs(verified_set, incorrect, pairs_cfg.betas.model_dump(),
                                           pairs_lib.chat_prompt_renderer(tokenizer), checker)
    by_type = {t: int((frame["pair_type"] == t).sum()) for t in PAIR_TYPES}
    by_source = Counter(c.source for c in incorrect)
    stage.log.info(f"{len(frame)} pairs {by_type}; refused {dict(refused)}")
    if refused:
        stage.run.log_text(json.dumps(dict(refused), indent=2), "refused_pairs.json")
    return StageResult(frame, {
        "num_pairs": len(frame), **{f"pairs_{t}": n for t, n in by_type.items()},
        "num_refused": sum(refused.values()), "num_incorrect_cots": len(incorrect),
        **{f"incorrect_from_{s}": n for s, n in by_source.items()},
        **{f"passed_over_{s}_{r}": n for s, reasons in passed_over.items() for r, n in reasons.items()},
        "problems_with_incorrect_cot": round(len(incorrect) / len(material), 4) if len(material) else 0.0,
    }, {
        "pairs_by_type": dg.MetadataValue.json(by_type),
        "refused_by_reason": dg.MetadataValue.json(dict(refused)),
        "incorrect_replies_passed_over": dg.MetadataValue.json(passed_over),
        "betas": dg.MetadataValue.json(pairs_cfg.betas.model_dump()),
        "sample": markdown_table(frame, ["pair_type", "beta", "chosen", "rejected"], rows=3, max_chars=300),
    }, {"incorrect_source": ",".join(pairs_cfg.incorrect_sources),
        **{f"beta_{t}": v for t, v in pairs_cfg.betas.model_dump().items()}})


def build_training_assets(partitions: dg.PartitionsDefinition, profile_: Profile) -> list[dg.AssetsDefinition]:
    tables_dir = profile_.artifacts_dir / "tables"

    @dg.asset(
        **table_asset_args(profile_, "preference_pairs", preference_pairs_schema, READS["preference_pairs"]),
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"pandas", "parquet"},
        pool="gpu",
        description="CogPO pairs of three kinds (small, medium, large gap), each with its beta; the chosen CoT is "
                    "checked correct and the rejected one wrong (for code, by running the problem's tests).",
    )
    def preference_pairs(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                         problems: pd.DataFrame, verified_set: pd.DataFrame):
        yield from table_stage(context, profile, mlflow, lambda stage: _pairs(stage, problems, verified_set))

    @dg.asset(
        **table_asset_args(profile_, "sft_model", model_manifest_schema, READS["sft_model"]),
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"pytorch", "huggingface"},
        pool="gpu",
        description="The student fine-tuned (TRL SFT, loss on the CoT only) on the verified, student-suited CoTs "
                    "(sft), and, as the profile lists, on the raw CoTs (sft_raw) and on the Critic's medium CoTs "
                    "without rewriting (sft_filter); once per seed.",
    )
    def sft_model(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                  verified_set: pd.DataFrame, raw_cots: pd.DataFrame, critiques: pd.DataFrame) -> dg.Output:
        from crv_dagster.training.sft import sft_examples

        if (reused := reused_models(context, tables_dir)) is not None:
            return reused
        cfg = profile.profile
        key = partition_of(context)
        training = cfg.training_for(key.model_size)
        base = student_base_model(cfg, key.model_size)
        planned, skipped = [], {}
        for method in [SFT, *cfg.training.sft_baselines]:
            if sft_examples(method, verified_set, raw_cots, critiques).empty:
                if method == SFT:
                    raise ValueError(f"{SFT}: no CoTs to fine-tune on (verified_set has no suited CoT)")
                skipped[method] = SFT_EMPTY_REASONS[method]  # a baseline with no data must not cost the CRV model
                context.log.warning(f"{method} not trained: {skipped[method]}")
                continue
            for seed in cfg.seeds:
                examples = sft_examples(method, verified_set, raw_cots, critiques, seed=seed)
                params = {"base_model": base, "finetuning": training.finetuning, "seed": seed,
                          **{f"sft.{k}": v for k, v in training.sft.model_dump().items()},
                          **({f"lora.{k}": v for k, v in training.lora.model_dump().items()}
                             if training.finetuning == "lora" else {})}
                planned.append(PlannedRun("sft", method, seed, base, examples,
                                          _checkpoint_dir(cfg, "sft_model", key, method, seed), params))
        rows, meta = [], {}
        with launch_training(context, mlflow, cfg, key, training, planned) as launched:
            for item in launched:
                method, seed, result = item.planned.method, item.planned.seed, item.result
                lengths = {k: result[k] for k in LENGTH_KEYS}
                item.run.log_metrics(lengths)
                context.log.info(f"{method} (seed {seed}): {result['steps']} steps, loss {result['loss']}; "
                                 f"over max_length: {lengths}")
                rows.append(_manifest_row(method, seed, item.planned.out_dir, base, training.finetuning, result))
                if method == SFT and seed == cfg.seeds[0]:
                    sft_lengths = lengths
                meta.setdefault(f"{method}_num_examples", result["num_examples"])
                meta[f"{MLFLOW_LINK}/{method}/seed-{seed}"] = dg.MetadataValue.url(item.run.url)
        manifest = pd.DataFrame(rows)
        main = manifest[manifest["method"] == SFT].iloc[0]
        return models_output(manifest, {
            "checkpoint": dg.MetadataValue.path(main["path"]),
            "num_examples": int(main["num_examples"]), "steps": int(main["steps"]), **sft_lengths,
            **{k: float(main[k]) for k in ("loss_first", "loss_last") if pd.notna(main[k])},
            **meta,
            **_launch_metadata(training, launched),
            "seeds": dg.MetadataValue.json(list(cfg.seeds)),
            "not_trained": dg.MetadataValue.json(skipped),
            "checkpoints": markdown_table(manifest, ["method", "seed", "num_examples", "steps", "loss_first",
                                                     "loss_last"], rows=40),
            MLFLOW_LINK: meta[f"{MLFLOW_LINK}/{SFT}/seed-{cfg.seeds[0]}"],
        })

    @dg.asset(
        **table_asset_args(profile_, "cogpo_model", model_manifest_schema, READS["cogpo_model"]),
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"pytorch", "huggingface"},
        pool="gpu",
        description="CogPO from the SFT checkpoint (reference = SFT model), and the preference baselines the "
                    "profile lists (DPO, DPO with the mean beta, IPO, SimPO, ORPO) from the same checkpoint on the "
                    "same pairs; once per seed.",
    )
    def cogpo_model(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                    sft_model: pd.DataFrame, preference_pairs: pd.DataFrame) -> dg.Output:
        if (reused := reused_models(context, tables_dir)) is not None:
            return reused
        cfg = profile.profile
        key = partition_of(context)
        training = cfg.training_for(key.model_size)
        if preference_pairs.empty:
            raise ValueError("preference_pairs is empty: nothing to train on (see its refused_by_reason metadata)")
        by_type = preference_pairs["pair_type"].value_counts().to_dict()
        planned = []
        for seed in cfg.seeds:
            # The job computes the reference log-probs with the first method that needs them and hands
            # them to the others of the same seed (same SFT checkpoint, same pairs); CogPO from the raw-CoT
            # checkpoint has a reference of its own.
            for method in cfg.training.preference_methods():
                sft_path = _sft_checkpoint(sft_model, seed, SFT_RAW if method == COGPO_FROM_RAW else SFT)
                params = {"sft_model": sft_path, "method": method, "seed": seed, "finetuning": training.finetuning,
                          **{f"cogpo.{k}": v for k, v in training.cogpo.model_dump().items()},
                          **{f"beta_{t}": v for t, v in cfg.training.pairs.betas.model_dump().items()},
                          **{f"pairs_{t}": n for t, n in by_type.items()}}
                planned.append(PlannedRun("preference", method, seed, sft_path, preference_pairs,
                                          _checkpoint_dir(cfg, "cogpo_model", key, method, seed), params))
        rows, meta, reference_s, links = [], {}, [], {}
        with launch_training(context, mlflow, cfg, key, training, planned) as launched:
            for item in launched:
                method, seed, result = item.planned.method, item.planned.seed, item.result
                if result.get("reference_computed_s") is not None:
                    reference_s.append(result["reference_computed_s"])
                context.log.info(f"{method} (seed {seed}): {result['steps']} steps, loss {result['loss']}"
                                 + (f", per pair kind {result['loss_by_kind_before']} -> "
                                    f"{result['loss_by_kind_after']}" if result["loss_by_kind_after"] else ""))
                links[f"{MLFLOW_LINK}/{method}/seed-{seed}"] = dg.MetadataValue.url(item.run.url)
                item.run.log_metrics({**{k: result[k] for k in LENGTH_KEYS},
                                      **{f"loss_by_kind/{k}/before": v for k, v in result["loss_by_kind_before"].items()},
                                      **{f"loss_by_kind/{k}/after": v for k, v in result["loss_by_kind_after"].items()}})
                rows.append(_manifest_row(method, seed, item.planned.out_dir, item.planned.base_model,
                                          training.finetuning, result))
                if seed != cfg.seeds[0]:
                    continue
                last = next((h for h in reversed(result["history"]) if f"{method}/rewards/margins" in h), {})
                meta.update({
                    f"{method}_loss_first": rows[-1]["loss_first"], f"{method}_loss_last": rows[-1]["loss_last"],
                    **{f"{method}_{k}": result[k] for k in LENGTH_KEYS},
                    f"{method}_reward_margin": last.get(f"{method}/rewards/margins"),
                    f"{method}_reward_accuracy": last.get(f"{method}/rewards/accuracies"),
                    **({f"{method}_loss_by_kind": dg.MetadataValue.json({"before": result["loss_by_kind_before"],
                                                                         "after": result["loss_by_kind_after"]})}
                       if result["loss_by_kind_after"] else {}),
                    # How often each pair beta reached the loss in each training process.
                    **({f"{method}_betas_by_rank": dg.MetadataValue.json(result["betas_by_rank"])}
                       if result.get("betas_by_rank") else {}),
                })
        return models_output(pd.DataFrame(rows), {
            **{k: v for k, v in meta.items() if v is not None},
            MLFLOW_LINK: links[f"{MLFLOW_LINK}/{COGPO}/seed-{cfg.seeds[0]}"], **links,
            **_launch_metadata(training, launched),
            "pairs_by_type": counts(preference_pairs["pair_type"]),
            # One reference pass per seed's SFT checkpoint, shared by every method that has a reference.
            "reference_passes": len(reference_s),
            "reference_logps_s": round(sum(reference_s), 3),
            "seeds": dg.MetadataValue.json(list(cfg.seeds)),
            "checkpoints": markdown_table(pd.DataFrame(rows), ["method", "seed", "steps", "loss_first", "loss_last"],
                                          rows=60),
        })

    return [preference_pairs, sft_model, cogpo_model]


def _launch_metadata(training, launched) -> dict:
    return {"launcher": training.launch.launcher, "training_processes": training.launch.num_processes,
            "accelerate_config": training.launch.accelerate_config or "none",
            "runs_kept_from_earlier_launch": sum(item.reused for item in launched)}


def _sft_checkpoint(sft_manifest: pd.DataFrame, seed: int, method: str = SFT) -> str:
    hit = sft_manifest[(sft_manifest["method"] == method) & (sft_manifest["seed"] == seed)]
    if hit.empty:
        raise ValueError(f"sft_model has no '{method}' checkpoint for seed {seed} (it has "
                         f"{sorted(zip(sft_manifest['method'], sft_manifest['seed']))}): materialise sft_model again")
    return str(hit["path"].iloc[0])
