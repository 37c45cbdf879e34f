"""The words the pipeline's tables and logic share, declared once.

The Pandera schemas (``schemas.py``) check columns against these, and the agents, pairs and
evaluation code produce and compare them; a new label is added here and nowhere else. Methods
(what is trained and scored) have their own registry, ``methods.py``.
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

# Problems and raw CoTs.
CONTAMINATED = "contaminated"  # a training problem that overlaps one it would be scored on: never trained on
SPLITS = ("train", "eval", CONTAMINATED)
COT_SOURCES = ("dataset", "teacher")
# `ok`, `no_answer` (complete but commits to no answer), or why a reply had no content (llm.reply).
COT_STATUSES = ("ok", "no_answer", "truncated", "unfinished_thinking", "empty")

STUDENT = "student"  # as a backend's model: the weights of the partition's student
