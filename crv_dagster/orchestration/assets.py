"""Every asset, declared once: a row of ``ASSETS`` each.

An asset is its stage module (``crv_dagster.stages.<name>``, whose name it takes), its table's
schema, its group, the assets it reads, and how ``table_stage`` treats it. Adding an asset is a
stage module and one row here.
"""

from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import dagster as dg
import pandera.pandas as pa

import crv_dagster.methods as methods
from crv_dagster.agents.roles import describe_agents
from crv_dagster.config import Profile
from crv_dagster.orchestration.partitions import by_dataset, dataset_partitions
from crv_dagster.orchestration.resources import ProfileResource
from crv_dagster.orchestration.stage import table_stage
from crv_dagster.orchestration.tracking import MlflowTracking
from crv_dagster.orchestration.types import table_asset_args
from crv_dagster.schemas import (
    critiques_schema,
    eval_scores_schema,
    model_manifest_schema,
    preference_pairs_schema,
    problems_schema,
    raw_cots_schema,
    results_schema,
    rewritten_cots_schema,
    verified_set_schema,
)
from crv_dagster.stages import (
    cogpo_model,
    critiques,
    eval_scores,
    heldout_pairs,
    preference_pairs,
    problems,
    raw_cots,
    results,
    rewritten_cots,
    sft_model,
    verified_set,
)


def _with_sft_when_sampled(*inputs: str) -> Callable[[Profile], tuple[str, ...]]:
    """Only a profile whose pairs sample the SFT checkpoint makes them wait for (and go stale with) it."""
    return lambda profile: inputs + (("sft_model",) if preference_pairs.samples_sft(profile) else ())


@dataclass(frozen=True, kw_only=True)
class AssetRow:
    stage: ModuleType
    schema: pa.DataFrameSchema
    group: str
    description: str
    inputs: tuple[str, ...] | Callable[[Profile], tuple[str, ...]] = ()
    pool: str | None = None  # "gpu": one at a time where the profile's pool says so
    names_agents: bool = False  # the description ends with the profile's agents (the demo's are the student itself)
    reuse: bool = True  # False: always computed again
    own_runs: bool = False  # the stage opens its MLflow runs itself
    models: bool = False  # a manifest of checkpoints, reused only while their weights are unchanged
    per_dataset: bool = False  # partitioned by dataset alone, reading every model size of it

    @property
    def name(self) -> str:
        return self.stage.__name__.rsplit(".", 1)[-1]


ASSETS = (
    AssetRow(stage=problems, schema=problems_schema, group="data", reuse=False,
             # Always read again (cheap, and a changed file must be seen); unchanged content keeps
             # its data version, so nothing downstream goes stale.
             description="Problems of one dataset with reference answers, split into train and eval (seeded); training "
                         "problems that overlap an evaluation problem are set aside as 'contaminated', duplicates "
                         "dropped."),
    AssetRow(stage=raw_cots, schema=raw_cots_schema, group="data", inputs=("problems",), pool="gpu",
             description="The teacher's chain of thought for each training problem, graded against the reference."),
    AssetRow(stage=critiques, schema=critiques_schema, group="crv", inputs=("problems", "raw_cots"), pool="gpu",
             names_agents=True,
             description="The Critic's label for each raw CoT (easy / medium / hard) from the student's perspective."),
    AssetRow(stage=rewritten_cots, schema=rewritten_cots_schema, group="crv", inputs=("problems", "critiques"),
             pool="gpu", names_agents=True,
             description="Easy CoTs expanded, hard ones simplified, medium kept; each rewrite verified (a code CoT by "
                         "running its problem's tests), retried on failure; how many verified is `rewrite_pass_rate`."),
    AssetRow(stage=verified_set, schema=verified_set_schema, group="crv", inputs=("rewritten_cots",), names_agents=True,
             description="The SFT data (verified, student-suited CoTs; a rewrite of a CoT whose answer was wrong is "
                         "'rescued', kept or left out by crv.rescued) plus the correct but unsuited originals."),
    AssetRow(stage=preference_pairs, schema=preference_pairs_schema, group="training", pool="gpu",
             inputs=_with_sft_when_sampled("problems", "verified_set"),
             description="CogPO pairs of three kinds (small, medium, large gap), each with its beta; the chosen CoT is "
                         "checked correct and the rejected one wrong (for code, by running the problem's tests), both "
                         "in one format (a reasoning trace or none); both CoTs' lengths in the student's tokens."),
    AssetRow(stage=sft_model, schema=model_manifest_schema, group="training", pool="gpu", own_runs=True, models=True,
             inputs=("verified_set", "raw_cots", "critiques"),
             description="The student fine-tuned (TRL SFT, loss on the CoT only) on the verified, student-suited CoTs "
                         "(sft), and on the data of each SFT baseline the profile lists (of "
                         f"{', '.join(methods.sft_baselines())}: docs/comparisons.md); once per seed."),
    AssetRow(stage=cogpo_model, schema=model_manifest_schema, group="training", pool="gpu", own_runs=True, models=True,
             inputs=("sft_model", "preference_pairs", "heldout_pairs"),
             description="CogPO from the SFT checkpoint (reference = SFT model), and the preference baselines the "
                         f"profile lists (of {', '.join(methods.preference_baselines())}: docs/comparisons.md) on the "
                         "same pairs; once per seed. Each is measured on heldout_pairs before and after training."),
    # The chain's incorrect CoTs come from the SFT checkpoint too where the training pairs' do.
    AssetRow(stage=heldout_pairs, schema=preference_pairs_schema, group="evaluation", pool="gpu",
             inputs=_with_sft_when_sampled("problems"),
             description="Preference pairs of eval-split problems (training.pairs.heldout_problems of them), built by "
                         "the same CRV chain as preference_pairs and never trained on: cogpo_model's held-out loss, "
                         "margin (scaled by beta and not) and accuracy per pair kind and per rejected source are "
                         "measured on them."),
    AssetRow(stage=eval_scores, schema=eval_scores_schema, group="evaluation", pool="gpu", own_runs=True,
             inputs=("problems", "sft_model", "cogpo_model", "rewritten_cots", "preference_pairs"),
             description="Accuracy (pass@1) of base, the SFT variants, CogPO and the preference baselines on the "
                         "held-out split and each benchmark, once per seed, each with its interval and its paired "
                         "p-value against CogPO."),
    AssetRow(stage=results, schema=results_schema, group="evaluation", inputs=("eval_scores",), own_runs=True,
             per_dataset=True,
             description="One dataset's comparison across model sizes: every method x benchmark with its interval, "
                         "the paper-shaped table and the accuracy-vs-size plot."),
)


def build_asset(row: AssetRow, partitions: dg.PartitionsDefinition, profile_: Profile) -> dg.AssetsDefinition:
    inputs = row.inputs(profile_) if callable(row.inputs) else row.inputs
    mapping = by_dataset() if row.per_dataset else None
    description = f"{row.description} {describe_agents(profile_)}" if row.names_agents else row.description

    @dg.asset(
        **table_asset_args(profile_, row.name, row.schema),
        group_name=row.group,
        partitions_def=dataset_partitions(profile_) if row.per_dataset else partitions,
        kinds={"pytorch", "huggingface"} if row.models else {"pandas", "parquet"},
        pool=row.pool,
        ins={name: dg.AssetIn(partition_mapping=mapping) for name in inputs},
        check_specs=[dg.AssetCheckSpec(name, asset=row.name, description=text)
                     for name, text in getattr(row.stage, "CHECKS", {}).items()],
        description=description,
    )
    def asset(context: dg.AssetExecutionContext, profile: ProfileResource, mlflow: MlflowTracking, **tables):
        yield from table_stage(context, profile, mlflow, row.stage, tables, reuse=row.reuse, own_runs=row.own_runs,
                               models=row.models)

    return asset


def build_assets(partitions: dg.PartitionsDefinition, profile: Profile) -> list[dg.AssetsDefinition]:
    return [build_asset(row, partitions, profile) for row in ASSETS]
