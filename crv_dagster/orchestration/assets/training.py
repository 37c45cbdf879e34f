"""Training: ``preference_pairs``, ``sft_model`` and ``cogpo_model``.

Model assets store a small manifest table (path, parent, losses); the weights themselves are
Hugging Face folders under ``<artifacts>/checkpoints/<asset>/<dataset>/<size>/<method>``.
"""

import json
from collections import Counter
from pathlib import Path

import dagster as dg
import pandas as pd

from crv_dagster.agents.roles import model_name
from crv_dagster.config import Profile
from crv_dagster.factory import solution_checker
from crv_dagster.model_card import CARD, write_model_card
from crv_dagster.models.located import models_dir, student_base_model
from crv_dagster.orchestration.pipes_launch import launch_training
from crv_dagster.orchestration.metadata import counts, markdown_table
from crv_dagster.orchestration.resources import ProfileResource
from crv_dagster.orchestration.stage import Stage, StageResult, run_links, table_stage
from crv_dagster.orchestration.tracking import MlflowTracking
from crv_dagster.orchestration.types import (
    model_manifest_schema,
    preference_pairs_schema,
    table_asset_args,
)
from crv_dagster.evaluation import heldout_pairs as heldout_lib
from crv_dagster.preference import pairs as pairs_lib
from crv_dagster.training import plan
from crv_dagster.preference.incorrect import find_incorrect_cots
from crv_dagster.versions import AssetReads, backend_identity, prompt_text, students, table_version, training_by_size
from crv_dagster.vocabulary import COGPO, PAIR_TYPES, RESCUED, SFT, SFT_RAW_MATCHED, SUITED


def _pairs_reads(profile: Profile) -> dict:
    pairs, sources = profile.training.pairs, profile.training.pairs.incorrect_sources
    return {"pairs": pairs.model_dump(mode="json"), "students": students(profile),
            "student_backend": (backend_identity(profile, pairs.student_backend)
                                if {"student", "sft"} & set(sources) else None),
            "sft_seed": profile.seeds[0] if "sft" in sources else None,  # whose SFT checkpoint is sampled
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
# with training/launch_command.py's command line; training/plan.py plans the runs from the located base models.
_JOB = (__name__, "crv_dagster.orchestration.pipes_launch", "crv_dagster.training.job",
        "crv_dagster.training.launch_command", "crv_dagster.training.sft", "crv_dagster.training.plan",
        "crv_dagster.models.located", "crv_dagster.model_card")
READS = {
    "preference_pairs": AssetReads(
        (__name__, "crv_dagster.preference.pairs", "crv_dagster.preference.incorrect", "crv_dagster.factory"),
        _pairs_reads),
    "sft_model": AssetReads(_JOB, _trained_reads("sft")),
    # Every preference checkpoint is also scored on the held-out pairs, in the step itself.
    "cogpo_model": AssetReads((*_JOB, "crv_dagster.evaluation.heldout_pairs"), _trained_reads("cogpo")),
}

GROUP = "training"
def samples_sft(profile: Profile) -> bool:
    """Whether the pairs sample the SFT checkpoint (incorrect_source 'sft'), so read sft_model."""
    return "sft" in profile.training.pairs.incorrect_sources


def sft_checkpoint(cfg: Profile, sft_manifest: pd.DataFrame | None) -> str | None:
    """The first seed's SFT checkpoint: the one the ``sft`` source samples."""
    if sft_manifest is None:
        return None
    rows = sft_manifest[(sft_manifest["method"] == SFT) & (sft_manifest["seed"] == cfg.seeds[0])]
    if rows.empty:
        raise ValueError(f"sft_model has no {SFT} checkpoint of seed {cfg.seeds[0]} for incorrect_source 'sft'")
    return str(rows["path"].iloc[0])


def pairs_stage(stage: Stage, problems: pd.DataFrame, verified_set: pd.DataFrame,
                sft_manifest: pd.DataFrame | None = None) -> StageResult:
    from transformers import AutoTokenizer  # here, not at the top: importing it takes seconds

    cfg, pairs_cfg = stage.cfg, stage.cfg.training.pairs
    material = pairs_lib.pair_material(verified_set)
    # A code CoT is right or wrong by its problem's tests.
    checker = solution_checker(cfg, problems[problems["problem_id"].isin(material["problem_id"])])
    incorrect, passed_over, usage = find_incorrect_cots(cfg, stage.key.model_size, material, stage.log, checker,
                                                        sft_checkpoint(cfg, sft_manifest))
    tokenizer = AutoTokenizer.from_pretrained(student_base_model(cfg, stage.key.model_size))
    frame, refused = pairs_lib.build_pairs(
        verified_set, incorrect, pairs_cfg.betas.model_dump(), pairs_lib.chat_prompt_renderer(tokenizer), checker,
        lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    by_type = {t: int((frame["pair_type"] == t).sum()) for t in PAIR_TYPES}
    by_source = Counter(c.source for c in incorrect)
    by_rejected = {str(k): int(v) for k, v in frame["rejected_source"].value_counts().sort_index().items()}
    lengths = pairs_lib.length_ratios(frame)
    stage.log.info(f"{len(frame)} pairs {by_type}; rejected CoTs from {by_rejected}; refused {dict(refused)}; "
                   "chosen/rejected length ratio (median) by kind "
                   f"{ {k: v['ratio_median'] for k, v in lengths.items()} }")
    if refused:
        stage.run.log_text(json.dumps(dict(refused), indent=2), "refused_pairs.json")
    return StageResult(frame, {
        "num_pairs": len(frame), **{f"pairs_{t}": n for t, n in by_type.items()},
        "num_refused": sum(refused.values()), "num_incorrect_cots": len(incorrect),
        **{f"incorrect_from_{s}": n for s, n in by_source.items()},
        **{f"pairs_rejected_from_{s}": n for s, n in by_rejected.items()},
        **{f"length_ratio_{k}": v["ratio_median"] for k, v in lengths.items()},
        **{f"passed_over_{s}_{r}": n for s, reasons in passed_over.items() for r, n in reasons.items()},
        "problems_with_incorrect_cot": round(len(incorrect) / len(material), 4) if len(material) else 0.0,
        **usage,
    }, {
        "pairs_by_type": dg.MetadataValue.json(by_type),
        "pairs_by_rejected_source": dg.MetadataValue.json(by_rejected),
        # Chosen over rejected length, per pair: far from 1, a pair differs in length as well as correctness.
        "lengths_by_kind": dg.MetadataValue.json(lengths),
        "refused_by_reason": dg.MetadataValue.json(dict(refused)),
        "incorrect_replies_passed_over": dg.MetadataValue.json(passed_over),
        "betas": dg.MetadataValue.json(pairs_cfg.betas.model_dump()),
        "sample": markdown_table(frame, ["pair_type", "beta", "chosen", "rejected"], rows=3, max_chars=300),
    }, {"incorrect_source": ",".join(pairs_cfg.incorrect_sources),
        **{f"beta_{t}": v for t, v in pairs_cfg.betas.model_dump().items()}})


def build_training_assets(partitions: dg.PartitionsDefinition, profile_: Profile) -> list[dg.AssetsDefinition]:

    pairs_args = dict(
        **table_asset_args(profile_, "preference_pairs", preference_pairs_schema, READS["preference_pairs"]),
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"pandas", "parquet"},
        pool="gpu",
        description="CogPO pairs of three kinds (small, medium, large gap), each with its beta; the chosen CoT is "
                    "checked correct and the rejected one wrong (for code, by running the problem's tests), both "
                    "in one format (a reasoning trace or none); both CoTs' lengths in the student's tokens.",
    )
    # Only a profile whose pairs sample the SFT checkpoint makes them wait for (and go stale with) it.
    if samples_sft(profile_):
        @dg.asset(**pairs_args)
        def preference_pairs(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                             problems: pd.DataFrame, verified_set: pd.DataFrame, sft_model: pd.DataFrame):
            yield from table_stage(context, profile, mlflow,
                                   lambda stage: pairs_stage(stage, problems, verified_set, sft_model))
    else:
        @dg.asset(**pairs_args)
        def preference_pairs(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                             problems: pd.DataFrame, verified_set: pd.DataFrame):
            yield from table_stage(context, profile, mlflow, lambda stage: pairs_stage(stage, problems, verified_set))

    @dg.asset(
        **table_asset_args(profile_, "sft_model", model_manifest_schema, READS["sft_model"]),
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"pytorch", "huggingface"},
        pool="gpu",
        description="The student fine-tuned (TRL SFT, loss on the CoT only) on the verified, student-suited CoTs "
                    "(sft), and, as the profile lists, on the raw CoTs that reach the reference answer (sft_raw), "
                    "on as many of those as sft has rows, matched on the count only (sft_raw_matched), and on the "
                    "Critic's medium CoTs without rewriting (sft_filter); once per seed.",
    )
    def sft_model(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                  verified_set: pd.DataFrame, raw_cots: pd.DataFrame, critiques: pd.DataFrame):
        yield from table_stage(context, profile, mlflow, lambda stage: _sft(stage, verified_set, raw_cots, critiques),
                               own_runs=True, models=True)

    @dg.asset(
        **table_asset_args(profile_, "cogpo_model", model_manifest_schema, READS["cogpo_model"]),
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"pytorch", "huggingface"},
        pool="gpu",
        description="CogPO from the SFT checkpoint (reference = SFT model), and the preference baselines the "
                    "profile lists (DPO, DPO with the mean beta, IPO, SimPO, ORPO) from the same checkpoint on the "
                    "same pairs; once per seed. Each is measured on heldout_pairs before and after training.",
    )
    def cogpo_model(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                    sft_model: pd.DataFrame, preference_pairs: pd.DataFrame, heldout_pairs: pd.DataFrame):
        yield from table_stage(context, profile, mlflow,
                               lambda stage: _preference(stage, sft_model, preference_pairs, heldout_pairs),
                               own_runs=True, models=True)

    return [preference_pairs, sft_model, cogpo_model]


def _launch_metadata(training, launched) -> dict:
    return {"launcher": training.launch.launcher, "training_processes": training.launch.num_processes,
            "accelerate_config": training.launch.accelerate_config or "none",
            "runs_kept_from_earlier_launch": sum(item.reused for item in launched)}


def trained_from(cfg: Profile, model_size: str, parent: str) -> str:
    """How a model card names the checkpoint a model was trained from: the student by its model's
    name, a checkpoint of this run by its path under the artifacts root. An absolute local path
    means nothing on the machine a card is read on."""
    path = Path(parent)
    if not path.is_absolute():
        return parent  # a Hub id
    for root, named in ((models_dir(cfg), None), (cfg.artifacts_dir, "artifacts")):
        if path.is_relative_to(root):
            if named is None:
                key = cfg.model_sizes[model_size].model
                return f"{model_name(cfg, key)}, the untrained {model_size} student"
            return f"{path.relative_to(root)} (under the {named} root of profile {cfg.name})"
    return parent


def _card(stage: Stage, item, row: dict) -> None:
    if item.reused and (item.planned.out_dir / CARD).is_file():
        return  # kept from an earlier launch: its card, with any scores it has, stays
    what = "chains of thought" if item.planned.kind == "sft" else "preference pairs"
    write_model_card(item.planned.out_dir, method=row["method"], seed=row["seed"], base_model=row["parent"],
                     trained_from=trained_from(stage.cfg, stage.key.model_size, row["parent"]),
                     finetuning=row["finetuning"], trained_on=f"{row['num_examples']} {what}",
                     data_version=table_version(item.planned.data), steps=row["steps"], loss_first=row["loss_first"],
                     loss_last=row["loss_last"], profile=stage.cfg.name, partition=str(stage.key))


_MATCHED_ON = ("the row count alone: as many correct raw CoTs as sft has rows (a seeded draw per training seed), so "
               "equal examples and optimizer steps; not the same problems, lengths or labels, and none of sft's "
               "rescued rows (a wrong teacher CoT rewritten with the reference answer) has a counterpart in its pool")


def _sft(stage: Stage, verified_set: pd.DataFrame, raw_cots: pd.DataFrame, critiques: pd.DataFrame) -> StageResult:
    cfg, key = stage.cfg, stage.key
    training = cfg.training_for(key.model_size)
    base = student_base_model(cfg, key.model_size)
    planned, skipped = plan.sft_runs(cfg, key.dataset, key.model_size, base, verified_set, raw_cots, critiques)
    for method, reason in skipped.items():  # a baseline with no data must not cost the CRV model
        stage.log.warning(f"{method} not trained: {reason}")
    rows, links, examples = [], {}, {}
    with launch_training(stage.context, stage.mlflow, cfg, key, training, planned) as launched:
        for item in launched:
            item.run.log_metrics(plan.length_counts(item.result))
            stage.log.info(plan.describe_result(item.planned, item.result))
            rows.append(plan.manifest_row(item.planned, training.finetuning, item.result))
            _card(stage, item, rows[-1])
            examples.setdefault(f"{item.planned.method}_num_examples", item.result["num_examples"])
            links[f"{item.planned.method}/seed-{item.planned.seed}"] = item.run.url
    manifest = pd.DataFrame(rows)
    main = manifest[manifest["method"] == SFT].iloc[0]
    first = next(item for item in launched if item.planned.method == SFT)
    suited = verified_set[verified_set["role"] == SUITED]
    matched = ({"sft_raw_matched_is_matched_on": _MATCHED_ON} if SFT_RAW_MATCHED in cfg.training.sft_baselines else {})
    return StageResult(manifest, {
        "num_examples": int(main["num_examples"]), "steps": int(main["steps"]), **plan.length_counts(first.result),
        **{k: float(main[k]) for k in ("loss_first", "loss_last") if pd.notna(main[k])}, **examples,
        # SFT rows whose teacher CoT was wrong: no raw baseline has them.
        "sft_rows_rescued": int((suited["provenance"] == RESCUED).sum()),
    }, {
        **matched,
        "checkpoint": dg.MetadataValue.path(main["path"]),
        **run_links(links), **_launch_metadata(training, launched),
        "seeds": dg.MetadataValue.json(list(cfg.seeds)),
        "not_trained": dg.MetadataValue.json(skipped),
        "checkpoints": markdown_table(manifest, ["method", "seed", "num_examples", "steps", "loss_first", "loss_last"],
                                      rows=40),
    }, link=first.run.url)


def _heldout_report(stage: Stage, item, heldout: pd.DataFrame, start_logps: dict) -> dict:
    """The run's loss, margin and accuracy per pair kind on the held-out pairs, before training (its
    starting checkpoint, measured once per checkpoint) and after."""
    start = item.planned.base_model
    if start not in start_logps:
        start_logps[start] = heldout_lib.pair_logps(start, heldout)
    betas = heldout_lib.kind_betas(item.planned.method, item.planned.data, stage.cfg.training.cogpo)
    after = heldout_lib.pair_logps(str(item.planned.out_dir), heldout)
    report = heldout_lib.report(heldout, start_logps[start], after, betas)
    item.run.log_metrics(heldout_lib.mlflow_metrics(report))
    stage.log.info(f"{item.planned.method} (seed {item.planned.seed}) on {len(heldout)} held-out pairs: "
                   + "; ".join(f"{kind} accuracy {v['accuracy']:.2f}, loss {v['loss']:.3f}, log-ratio margin "
                               f"{v['logratio_margin']:.3f} (x beta {v['beta']:g}: {v['margin']:.3f})"
                               for kind, v in report["after"].items()))
    return report


def _preference(stage: Stage, sft_manifest: pd.DataFrame, pairs: pd.DataFrame, heldout: pd.DataFrame) -> StageResult:
    cfg, key = stage.cfg, stage.key
    training = cfg.training_for(key.model_size)
    planned, skipped = plan.preference_runs(cfg, key.dataset, key.model_size, sft_manifest, pairs)
    for method, reason in skipped.items():
        stage.log.warning(f"{method} not trained: {reason}")
    rows, summary, reference_s, links, reports, start_logps = [], {}, [], {}, {}, {}
    with launch_training(stage.context, stage.mlflow, cfg, key, training, planned) as launched:
        for item in launched:
            method, seed, result = item.planned.method, item.planned.seed, item.result
            if result.get("reference_computed_s") is not None:
                reference_s.append(result["reference_computed_s"])
            stage.log.info(plan.describe_result(item.planned, result))
            item.run.log_metrics(plan.preference_metrics(result))
            if not heldout.empty:
                reports[(method, seed)] = _heldout_report(stage, item, heldout, start_logps)
            rows.append(plan.manifest_row(item.planned, training.finetuning, result))
            _card(stage, item, rows[-1])
            links[f"{method}/seed-{seed}"] = item.run.url
            if seed == cfg.seeds[0]:
                summary.update(plan.preference_summary(method, rows[-1], result))
    manifest = pd.DataFrame(rows)
    by_kind, by_source = heldout_lib.metrics_table(reports), heldout_lib.metrics_table(reports, by_source=True)
    return StageResult(manifest, {
        # One reference pass per starting checkpoint, pairs and seed, shared by every method on them.
        "reference_passes": len(reference_s), "reference_logps_s": round(sum(reference_s), 3),
        "heldout_pairs": len(heldout),
    }, {
        # margin is scaled by each method's beta; logratio_margin is not, so it compares methods.
        "heldout_by_kind": markdown_table(by_kind, list(by_kind.columns), rows=200, max_chars=40)
        if reports else "no held-out pairs (training.pairs.heldout_problems)",
        "heldout_by_rejected_source": markdown_table(by_source, list(by_source.columns), rows=400, max_chars=40)
        if reports else "no held-out pairs (training.pairs.heldout_problems)",
        **{k: dg.MetadataValue.json(v) if isinstance(v, dict) else v for k, v in summary.items()},
        **run_links(links), **_launch_metadata(training, launched),
        "pairs_by_type": counts(pairs["pair_type"]),
        "not_trained": dg.MetadataValue.json(skipped),
        "seeds": dg.MetadataValue.json(list(cfg.seeds)),
        "checkpoints": markdown_table(manifest, ["method", "seed", "steps", "loss_first", "loss_last"], rows=60),
    }, link=links[f"{COGPO}/seed-{cfg.seeds[0]}"])
