"""The words the pipeline's tables and logic share, declared once.

The Pandera schemas (``schemas.py``) check columns against these, and the agents, pairs and
evaluation code produce and compare them; a new label or method is added here and nowhere else.
"""

from __future__ import annotations

# The Critic's judgement of a CoT, from the student's perspective; `unparsed` when no reply named one.
LABELS = ("easy", "medium", "hard")
UNPARSED = "unparsed"
CRITIQUE_LABELS = (*LABELS, UNPARSED)

# What the Rethinker does with each label; `skip` for CoTs the Critic could not label.
ACTION_FOR_LABEL = {"easy": "expand", "hard": "simplify", "medium": "keep"}
SKIP = "skip"
ACTIONS = ("expand", "simplify", "keep", SKIP)
REWRITE_ACTIONS = ("expand", "simplify")

# Rows of the verified set: the SFT data, and the correct originals the Critic found unsuited.
SUITED, UNSUITED_ORIGINAL = "suited", "unsuited_original"
ROLES = (SUITED, UNSUITED_ORIGINAL)
# `unrewritten`: an easy or hard original whose rewrite never verified, kept as SFT data by
# crv.unrewritten: keep_original. `rescued`: a verified rewrite of a CoT whose own answer was wrong
# (the Rethinker is shown the reference answer), SFT data unless crv.rescued is `drop`.
UNREWRITTEN, RESCUED = "unrewritten", "rescued"
PROVENANCES = ("original", "rewritten", UNREWRITTEN, RESCUED)
KEEP_ORIGINAL = "keep_original"
UNREWRITTEN_POLICIES = ("drop", KEEP_ORIGINAL)
RESCUED_POLICIES = ("keep", "drop")

# CogPO's pair kinds, by how far apart chosen and rejected are; and where a rejected CoT came from
# (`student`: the base student's samples, `sft`: the SFT checkpoint's, on-policy for CogPO).
PAIR_TYPES = ("small_gap", "medium_gap", "large_gap")
INCORRECT_SOURCES = ("student", "sft", "inject", "perturb")
REJECTED_SOURCES = ("original", *INCORRECT_SOURCES)

# Trained checkpoints, and everything that is scored (the untrained student as `base`).
# SFT on the CRV data (`sft`), on the raw teacher CoTs that reach the reference answer (`sft_raw`:
# what CRV adds is sft minus this) and on the CoTs the Critic found suited as they are, with no
# rewriting (`sft_filter`: the paper's ablation without rethinking).
# `sft_raw_matched` is the matched control: as many raw CoTs as `sft` has rows (a seeded random
# subset of the correct ones), so the same number of examples and optimizer steps; `sft` minus it is
# what CRV's selection and rewriting add at equal data and compute. It is matched on the count
# only: not on problems, lengths or labels, and its pool holds no CoT whose answer was wrong, where
# `sft` may hold rescued rows (crv.rescued).
SFT, SFT_RAW, SFT_FILTER, SFT_RAW_MATCHED = "sft", "sft_raw", "sft_filter", "sft_raw_matched"
SFT_METHODS = (SFT, SFT_RAW, SFT_FILTER, SFT_RAW_MATCHED)
# Preference methods, all trained from the same `sft` checkpoint on the same pairs. `dpo` uses the
# profile's single beta, `dpo_mean_beta` one beta equal to the mean of CogPO's per-pair betas (the
# schedule without the change of scale); `ipo`, `simpo` and `orpo` are TRL's own losses.
COGPO = "cogpo"
# The controls that isolate one cause each: CogPO from the `sft_raw` checkpoint on the same pairs
# (the 2x2 of data and preference stage), CogPO with its schedule reversed across the pair kinds, and
# CogPO with one beta for every pair, once per beta value of the schedule (`cogpo_uniform_<beta>`).
COGPO_FROM_RAW, COGPO_REVERSED, UNIFORM_PREFIX = "cogpo_from_raw", "cogpo_reversed", "cogpo_uniform_"
# CogPO with one pair kind left out (`cogpo_without_<kind>`): what that kind of pair adds.
WITHOUT_PREFIX = "cogpo_without_"
PREFERENCE_METHODS = (COGPO, "dpo", "dpo_mean_beta", "ipo", "simpo", "orpo", COGPO_FROM_RAW, COGPO_REVERSED)
# The methods scored against precomputed reference log-probs (SimPO and ORPO have no reference
# model); every `cogpo_uniform_<beta>` is one too.
REFERENCE_METHODS = (COGPO, "dpo", "dpo_mean_beta", "ipo", COGPO_FROM_RAW, COGPO_REVERSED)
TRAINED_METHODS = (*SFT_METHODS, *PREFERENCE_METHODS)
BASE = "base"
EVALUATED_METHODS = (BASE, *TRAINED_METHODS)


def uniform_method(beta: float) -> str:
    return f"{UNIFORM_PREFIX}{beta:g}"


def uniform_beta(method: str) -> float | None:
    """The beta of a ``cogpo_uniform_<beta>`` method, else None."""
    if not method.startswith(UNIFORM_PREFIX):
        return None
    try:
        beta = float(method[len(UNIFORM_PREFIX):])
    except ValueError:
        return None
    return beta if beta > 0 else None


def without_method(kind: str) -> str:
    return f"{WITHOUT_PREFIX}{kind}"


def left_out_kind(method: str) -> str | None:
    """The pair kind a ``cogpo_without_<kind>`` method leaves out, else None."""
    kind = method[len(WITHOUT_PREFIX):] if method.startswith(WITHOUT_PREFIX) else None
    return kind if kind in PAIR_TYPES else None


def is_preference_method(method: str) -> bool:
    return method in PREFERENCE_METHODS or uniform_beta(method) is not None or left_out_kind(method) is not None


def is_reference_method(method: str) -> bool:
    return method in REFERENCE_METHODS or uniform_beta(method) is not None or left_out_kind(method) is not None


def is_trained_method(method: str) -> bool:
    return method in TRAINED_METHODS or is_preference_method(method)


def is_evaluated_method(method: str) -> bool:
    return method == BASE or is_trained_method(method)

# Problems and raw CoTs.
CONTAMINATED = "contaminated"  # a training problem that overlaps one it would be scored on: never trained on
SPLITS = ("train", "eval", CONTAMINATED)
COT_SOURCES = ("dataset", "teacher")
# `ok`, `no_answer` (complete but commits to no answer), or why a reply had no content (llm.reply).
COT_STATUSES = ("ok", "no_answer", "truncated", "unfinished_thinking", "empty")

STUDENT = "student"  # as a backend's model: the weights of the partition's student
