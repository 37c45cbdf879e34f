"""How each preference method sets the beta of a pair: the rules the trainer applies and the
held-out pair metrics score by, kept free of TRL and torch so that either can read them."""

from __future__ import annotations

import pandas as pd

from crv_dagster.config import CogpoSettings
from crv_dagster.vocabulary import COGPO, COGPO_FROM_RAW, COGPO_REVERSED, left_out_kind, uniform_beta


def reversed_schedule(pairs: pd.DataFrame) -> dict[str, float]:
    """Each pair kind's beta under the reversed schedule: the kind with the smallest beta gets the
    largest, and so on (over the kinds the pairs hold)."""
    schedule = pairs.groupby("pair_type")["beta"].first().astype(float).sort_values(kind="stable")
    return dict(zip(schedule.index, schedule.to_numpy()[::-1].tolist()))


def method_betas(method: str, pairs: pd.DataFrame, settings: CogpoSettings) -> list[float] | None:
    """The beta of each pair under ``method``: CogPO's per-kind betas (from the raw-CoT checkpoint
    too, and on the pairs left when one kind is left out), the same schedule reversed across the
    kinds, one beta for every pair (``cogpo_uniform_<b>``), DPO's single beta, or one beta equal to
    the mean of CogPO's (same scale, no schedule); None for losses with no per-pair beta."""
    if method in (COGPO, COGPO_FROM_RAW) or left_out_kind(method) is not None:
        return list(pairs["beta"].astype(float))
    if method == COGPO_REVERSED:
        schedule = reversed_schedule(pairs)
        return [schedule[kind] for kind in pairs["pair_type"]]
    if (beta := uniform_beta(method)) is not None:
        return [beta] * len(pairs)
    if method == "dpo":
        return [settings.dpo_beta] * len(pairs)
    if method == "dpo_mean_beta":
        return [float(pairs["beta"].astype(float).mean())] * len(pairs)
    return None
