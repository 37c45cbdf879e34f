"""``verified_set``: the SFT data (verified, student-suited CoTs) plus the correct but unsuited
originals that CogPO's pairs are built from."""

from __future__ import annotations

import pandas as pd

from crv_dagster.agents import crv
from crv_dagster.config import Profile
from crv_dagster.stages.base import CheckResult, Stage, StageResult
from crv_dagster.stages.display import text_samples
from crv_dagster.vocabulary import PROVENANCES, SUITED, UNSUITED_ORIGINAL

CHECKS = {"has_sft_rows": "At least one student-suited CoT passed verification."}


def reads(profile: Profile) -> dict:
    return {"unrewritten": profile.crv.unrewritten, "rescued": profile.crv.rescued}


def run(stage: Stage, rewritten_cots: pd.DataFrame) -> StageResult:
    policy, rescued = stage.profile.crv.unrewritten, stage.profile.crv.rescued
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
    return StageResult(frame=frame, metrics=stats, metadata={
        "unrewritten": policy, "rescued": rescued,
        "sample": text_samples(suited, ["problem_id", "provenance", "label"], ["cot"]),
    }, params={"unrewritten": policy, "rescued": rescued})


def check(frame: pd.DataFrame, profile: Profile) -> list[CheckResult]:
    suited = int((frame["role"] == SUITED).sum())
    return [CheckResult(name="has_sft_rows", passed=suited > 0, metadata={"num_suited": suited})]
