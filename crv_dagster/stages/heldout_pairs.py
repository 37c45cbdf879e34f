"""``heldout_pairs``: preference pairs of eval-split problems, built by the same chain as the training pairs.

The chain is the training one stage for stage (teacher, Critic, Rethinker, Verifier, incorrect
CoTs, pair checks), called on ``training.pairs.heldout_problems`` problems of the eval split, so
its code and settings are those of the stages it repeats. No model trains on these pairs:
``cogpo_model`` measures every preference checkpoint on them (``evaluation/heldout_pairs.py``).
"""

from __future__ import annotations

import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.evaluation.benchmarks import heldout_problems
from crv_dagster.schemas import preference_pairs_schema
from crv_dagster.stages import critiques, preference_pairs, raw_cots, rewritten_cots, verified_set
from crv_dagster.stages.base import Json, Stage, StageResult
from crv_dagster.stages.display import counts, markdown_table

_CHAIN = (raw_cots, critiques, rewritten_cots, verified_set, preference_pairs)  # the stages it repeats, in order
# What the metadata keeps of each stage of the chain: its counts, not its samples.
_KEPT = ("num_cots", "teacher_accuracy", "label_easy", "label_medium", "label_hard", "label_unparsed",
         "num_passed", "num_dropped", "num_suited", "num_unsuited_originals", "num_pairs", "num_refused")


def reads(profile: Profile) -> dict:
    return {"heldout_problems": profile.training.pairs.heldout_problems,
            "chain": [module.reads(profile) for module in _CHAIN]}


def run(stage: Stage, problems: pd.DataFrame, sft_model: pd.DataFrame | None = None) -> StageResult:
    """``sft_model``: read where the training pairs sample the SFT checkpoint, as the chain's do then."""
    sample = heldout_problems(problems, stage.profile.training.pairs.heldout_problems)
    if sample.empty:
        stage.log.info("no held-out pairs: training.pairs.heldout_problems is 0 or the eval split is empty")
        return StageResult(frame=pd.DataFrame(columns=list(preference_pairs_schema.columns)),
                           metrics={"num_problems": 0}, metadata={"pairs_by_type": Json({})})
    stage.log.info(f"held-out pairs: the CRV chain on {len(sample)} eval-split problems")
    raw = raw_cots.cots_of(stage, sample)
    judged = critiques.run(stage, problems, raw.frame)
    rewritten = rewritten_cots.run(stage, problems, judged.frame)
    verified = verified_set.run(stage, rewritten.frame)
    pairs = preference_pairs.run(stage, problems, verified.frame, sft_model)
    chain = {**raw.metrics, **judged.metrics, **rewritten.metrics, **verified.metrics, **pairs.metrics}
    frame = pairs.frame
    return StageResult(frame=frame, metrics={"num_problems": len(sample), **{k: chain[k] for k in _KEPT if k in chain}},
                       metadata={
        "pairs_by_type": counts(frame["pair_type"]),
        "problem_ids": Json(list(sample["problem_id"])),
        "sample": markdown_table(frame, ["problem_id", "pair_type", "beta", "chosen", "rejected"], rows=3,
                                 max_chars=300),
    })
