"""``cogpo_model``: CogPO from the SFT checkpoint (reference = SFT model), and the preference
baselines the profile lists from the same checkpoint on the same pairs; once per seed. Each is
measured on heldout_pairs before and after training, in the step itself."""

from __future__ import annotations

import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.stages.base import Json, Stage, StageResult, run_links
from crv_dagster.stages.display import counts, markdown_table
from crv_dagster.stages.trained import launch_metadata, training_reads, write_card
from crv_dagster.evaluation import heldout_pairs as heldout_lib
from crv_dagster.training import plan
from crv_dagster.training.launch import launch_training
from crv_dagster.methods import COGPO


def reads(profile: Profile) -> dict:
    return training_reads(profile, "cogpo")


def _heldout_report(stage: Stage, item, heldout: pd.DataFrame, start_logps: dict) -> dict:
    """The run's loss, margin and accuracy per pair kind on the held-out pairs, before training (its
    starting checkpoint, measured once per checkpoint) and after."""
    start = item.planned.base_model
    if start not in start_logps:
        start_logps[start] = heldout_lib.pair_logps(start, heldout)
    betas = heldout_lib.kind_betas(item.planned.method, item.planned.data, stage.profile.training)
    after = heldout_lib.pair_logps(str(item.planned.out_dir), heldout)
    report = heldout_lib.report(heldout, start_logps[start], after, betas)
    item.run.log_metrics(heldout_lib.mlflow_metrics(report))
    stage.log.info(f"{item.planned.method} (seed {item.planned.seed}) on {len(heldout)} held-out pairs: "
                   + "; ".join(f"{kind} accuracy {v['accuracy']:.2f}, loss {v['loss']:.3f}, log-ratio margin "
                               f"{v['logratio_margin']:.3f} (x beta {v['beta']:g}: {v['margin']:.3f})"
                               for kind, v in report["after"].items()))
    return report


def run(stage: Stage, sft_model: pd.DataFrame, preference_pairs: pd.DataFrame,
        heldout_pairs: pd.DataFrame) -> StageResult:
    cfg, key = stage.profile, stage.key
    sft_manifest, pairs, heldout = sft_model, preference_pairs, heldout_pairs
    training = cfg.training_for(key.model_size)
    planned, skipped = plan.preference_runs(cfg, key.dataset, key.model_size, sft_manifest, pairs)
    for method, reason in skipped.items():
        stage.log.warning(f"{method} not trained: {reason}")
    rows, summary, reference_s, links, reports, start_logps = [], {}, [], {}, {}, {}
    with launch_training(stage, "cogpo_model", training, planned) as launched:
        for item in launched:
            method, seed, result = item.planned.method, item.planned.seed, item.result
            if result.reference_computed_s is not None:
                reference_s.append(result.reference_computed_s)
            stage.log.info(plan.describe_result(item.planned, result))
            item.run.log_metrics(plan.preference_metrics(result))
            if not heldout.empty:
                reports[(method, seed)] = _heldout_report(stage, item, heldout, start_logps)
            rows.append(plan.manifest_row(item.planned, training.finetuning, result))
            write_card(stage, item, rows[-1])
            links[f"{method}/seed-{seed}"] = item.run.url
            if seed == cfg.seeds[0]:
                summary.update(plan.preference_summary(method, rows[-1], result))
    manifest = pd.DataFrame(rows)
    by_kind, by_source = heldout_lib.metrics_table(reports), heldout_lib.metrics_table(reports, by_source=True)
    return StageResult(frame=manifest, metrics={
        # One reference pass per starting checkpoint, pairs and seed, shared by every method on them.
        "reference_passes": len(reference_s), "reference_logps_s": round(sum(reference_s), 3),
        "heldout_pairs": len(heldout),
    }, metadata={
        # margin is scaled by each method's beta; logratio_margin is not, so it compares methods.
        "heldout_by_kind": markdown_table(by_kind, list(by_kind.columns), rows=200, max_chars=40)
        if reports else "no held-out pairs (training.pairs.heldout_problems)",
        "heldout_by_rejected_source": markdown_table(by_source, list(by_source.columns), rows=400, max_chars=40)
        if reports else "no held-out pairs (training.pairs.heldout_problems)",
        **{k: Json(v) if isinstance(v, dict) else v for k, v in summary.items()},
        **run_links(links), **launch_metadata(training, launched),
        "pairs_by_type": counts(pairs["pair_type"]),
        "not_trained": Json(skipped),
        "seeds": Json(list(cfg.seeds)),
        "checkpoints": markdown_table(manifest, ["method", "seed", "steps", "loss_first", "loss_last"], rows=60),
    }, link=links[f"{COGPO}/seed-{cfg.seeds[0]}"])
