"""``heldout_pairs``: preference pairs of eval-split problems, built by the same chain as the training pairs.

The chain is the training one stage for stage (teacher, Critic, Rethinker, Verifier, incorrect
CoTs, pair checks), called on ``training.pairs.heldout_problems`` problems of the eval split, so
its code and settings are those of the assets it repeats. No model trains on these pairs:
``cogpo_model`` measures every preference checkpoint on them (``evaluation/heldout_pairs.py``).
"""

import dagster as dg
import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.evaluation.benchmarks import heldout_problems
from crv_dagster.orchestration.assets import crv as crv_assets
from crv_dagster.orchestration.assets import data as data_assets
from crv_dagster.orchestration.assets import training as training_assets
from crv_dagster.orchestration.metadata import counts, markdown_table
from crv_dagster.orchestration.resources import ProfileResource
from crv_dagster.orchestration.stage import Stage, StageResult, table_stage
from crv_dagster.orchestration.tracking import MlflowTracking
from crv_dagster.orchestration.types import preference_pairs_schema, table_asset_args
from crv_dagster.versions import AssetReads

GROUP = "evaluation"
# The stages it repeats, in order, with what each reads of the profile.
_CHAIN = (data_assets.READS["raw_cots"], crv_assets.READS["critiques"], crv_assets.READS["rewritten_cots"],
          crv_assets.READS["verified_set"], training_assets.READS["preference_pairs"])
READS = AssetReads(
    modules=(__name__, "crv_dagster.evaluation.benchmarks", *dict.fromkeys(m for reads in _CHAIN for m in reads.modules)),
    profile=lambda p: {"heldout_problems": p.training.pairs.heldout_problems,
                       "chain": [reads.profile(p) for reads in _CHAIN]},
)
# What the metadata keeps of each stage of the chain: its counts, not its samples.
_KEPT = ("num_cots", "teacher_accuracy", "label_easy", "label_medium", "label_hard", "label_unparsed",
         "num_passed", "num_dropped", "num_suited", "num_unsuited_originals", "num_pairs", "num_refused")


def _heldout_pairs(stage: Stage, problems: pd.DataFrame, sft_model: pd.DataFrame | None = None) -> StageResult:
    sample = heldout_problems(problems, stage.cfg.training.pairs.heldout_problems)
    if sample.empty:
        stage.log.info("no held-out pairs: training.pairs.heldout_problems is 0 or the eval split is empty")
        return StageResult(pd.DataFrame(columns=list(preference_pairs_schema.columns)), {"num_problems": 0},
                           {"pairs_by_type": dg.MetadataValue.json({})})
    stage.log.info(f"held-out pairs: the CRV chain on {len(sample)} eval-split problems")
    raw = data_assets.raw_cots_stage(stage, sample)
    critiques = crv_assets.critiques_stage(stage, raw.frame, problems)
    rewritten = crv_assets.rewritten_cots_stage(stage, problems, critiques.frame)
    verified = crv_assets.verified_set_stage(stage, rewritten.frame)
    pairs = training_assets.pairs_stage(stage, problems, verified.frame, sft_model)
    chain = {**raw.metrics, **critiques.metrics, **rewritten.metrics, **verified.metrics, **pairs.metrics}
    frame = pairs.frame
    return StageResult(frame, {"num_problems": len(sample), **{k: chain[k] for k in _KEPT if k in chain}}, {
        "pairs_by_type": counts(frame["pair_type"]),
        "problem_ids": dg.MetadataValue.json(list(sample["problem_id"])),
        "sample": markdown_table(frame, ["problem_id", "pair_type", "beta", "chosen", "rejected"], rows=3,
                                 max_chars=300),
    })


def build_heldout_assets(partitions: dg.PartitionsDefinition, profile_: Profile) -> list[dg.AssetsDefinition]:
    args = dict(
        **table_asset_args(profile_, "heldout_pairs", preference_pairs_schema, READS),
        group_name=GROUP,
        partitions_def=partitions,
        kinds={"pandas", "parquet"},
        pool="gpu",
        description="Preference pairs of eval-split problems (training.pairs.heldout_problems of them), built by the "
                    "same CRV chain as preference_pairs and never trained on: cogpo_model's held-out loss, margin "
                    "(scaled by beta and not) and accuracy per pair kind and per rejected source are measured on "
                    "them.",
    )
    # The chain's incorrect CoTs come from the SFT checkpoint too where the training pairs' do.
    if training_assets.samples_sft(profile_):
        @dg.asset(**args)
        def heldout_pairs(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                          problems: pd.DataFrame, sft_model: pd.DataFrame):
            yield from table_stage(context, profile, mlflow, lambda stage: _heldout_pairs(stage, problems, sft_model))
    else:
        @dg.asset(**args)
        def heldout_pairs(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking,
                          problems: pd.DataFrame):
            yield from table_stage(context, profile, mlflow, lambda stage: _heldout_pairs(stage, problems))

    return [heldout_pairs]
