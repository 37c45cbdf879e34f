"""``preference_pairs``: CogPO pairs of three kinds (small, medium, large gap), each with its beta;
the chosen CoT checked correct and the rejected one wrong."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.factory import solution_checker
from crv_dagster.models.located import student_base_model
from crv_dagster.stages.base import Json, Stage, StageResult
from crv_dagster.stages.display import markdown_table
from crv_dagster.preference import pairs as pairs_lib
from crv_dagster.preference.incorrect import find_incorrect_cots
from crv_dagster.versions import backend_identity, prompt_text, students
from crv_dagster.methods import SFT
from crv_dagster.vocabulary import PAIR_TYPES


def reads(profile: Profile) -> dict:
    pairs, sources = profile.training.pairs, profile.training.pairs.incorrect_sources
    return {"pairs": pairs.model_dump(mode="json"), "students": students(profile),
            "student_backend": (backend_identity(profile, pairs.student_backend)
                                if {"student", "sft"} & set(sources) else None),
            "sft_seed": profile.seeds[0] if "sft" in sources else None,  # whose SFT checkpoint is sampled
            "inject_backend": (backend_identity(profile, pairs.inject_backend or profile.crv.agent_backend)
                               if "inject" in sources else None),
            "prompts": {"inject": prompt_text(pairs.inject_prompt)} if "inject" in sources else {}}


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


def run(stage: Stage, problems: pd.DataFrame, verified_set: pd.DataFrame,
        sft_model: pd.DataFrame | None = None) -> StageResult:
    """``sft_model``: the SFT manifest, read only by a profile whose pairs sample it (``samples_sft``)."""
    from transformers import AutoTokenizer  # here, not at the top: importing it takes seconds

    cfg, pairs_cfg = stage.profile, stage.profile.training.pairs
    material = pairs_lib.pair_material(verified_set)
    # A code CoT is right or wrong by its problem's tests.
    checker = solution_checker(cfg, problems[problems["problem_id"].isin(material["problem_id"])])
    incorrect, passed_over, usage = find_incorrect_cots(cfg, stage.key.model_size, material, stage.log, checker,
                                                        sft_checkpoint(cfg, sft_model))
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
    return StageResult(frame=frame, metrics={
        "num_pairs": len(frame), **{f"pairs_{t}": n for t, n in by_type.items()},
        "num_refused": sum(refused.values()), "num_incorrect_cots": len(incorrect),
        **{f"incorrect_from_{s}": n for s, n in by_source.items()},
        **{f"pairs_rejected_from_{s}": n for s, n in by_rejected.items()},
        **{f"length_ratio_{k}": v["ratio_median"] for k, v in lengths.items()},
        **{f"passed_over_{s}_{r}": n for s, reasons in passed_over.items() for r, n in reasons.items()},
        "problems_with_incorrect_cot": round(len(incorrect) / len(material), 4) if len(material) else 0.0,
        **usage,
    }, metadata={
        "pairs_by_type": Json(by_type),
        "pairs_by_rejected_source": Json(by_rejected),
        # Chosen over rejected length, per pair: far from 1, a pair differs in length as well as correctness.
        "lengths_by_kind": Json(lengths),
        "refused_by_reason": Json(dict(refused)),
        "incorrect_replies_passed_over": Json(passed_over),
        "betas": Json(pairs_cfg.betas.model_dump()),
        "sample": markdown_table(frame, ["pair_type", "beta", "chosen", "rejected"], rows=3, max_chars=300),
    }, params={"incorrect_source": ",".join(pairs_cfg.incorrect_sources),
               **{f"beta_{t}": v for t, v in pairs_cfg.betas.model_dump().items()}})
