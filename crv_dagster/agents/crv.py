"""Critique -> Rethink -> Verify over a whole partition, as tables.

Each stage sends all of its work for a round as one batch (so a backend can fill its batches),
and every model call goes through the caller's cached backend.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Sequence

import pandas as pd

from crv_dagster.agents.critic import Critic
from crv_dagster.agents.rethinker import (
    Rethinker,
    RewriteTask,
    count_words,
    failure_feedback,
    rewrite_problem,
    trailing_problem,
)
from crv_dagster.agents.verifier import Verdict, Verifier
from crv_dagster.formatting import is_code
from crv_dagster.llm.reply import UNREADABLE_REASONS
from crv_dagster.schemas import critiques_schema, rewritten_cots_schema, verified_set_schema
from crv_dagster.vocabulary import (
    ACTION_FOR_LABEL,
    ACTIONS,
    CRITIQUE_LABELS,
    REWRITE_ACTIONS,
    KEEP_ORIGINAL,
    RESCUED,
    RESCUED_POLICIES,
    SKIP,
    SUITED,
    UNREWRITTEN,
    UNREWRITTEN_POLICIES,
    UNSUITED_ORIGINAL,
)

# Column order as the schemas declare it (``schemas.py`` is the one place that lists columns).
CRITIQUE_COLUMNS = list(critiques_schema.columns)
REWRITE_COLUMNS = list(rewritten_cots_schema.columns)
VERIFIED_COLUMNS = list(verified_set_schema.columns)


def judgeable(raw_cots: pd.DataFrame) -> pd.DataFrame:
    """The raw CoTs worth an agent call: a teacher reply that was cut off or never finished thinking
    has no CoT to judge."""
    return raw_cots[~raw_cots["cot_status"].isin(UNREADABLE_REASONS)].reset_index(drop=True)


def critique(raw_cots: pd.DataFrame, critic: Critic, student_size: str,
             student_nll: Sequence[float] | None = None, student_solves: Sequence[bool] | None = None) -> pd.DataFrame:
    """The Critic's label of each judgeable raw CoT; ``student_nll`` and ``student_solves``: the
    student's own NLL of each judgeable CoT and whether it solves its problem, in order, for the
    columns of those names (empty without them)."""
    raw_cots = judgeable(raw_cots)
    items = list(zip(raw_cots["question"], raw_cots["answer"], raw_cots["cot"]))
    judgements = critic.judge(items, student_size)
    frame = raw_cots[["problem_id", "dataset", "question", "answer", "cot"]].copy()
    frame["cot_correct"] = raw_cots["is_correct"].astype(bool).values
    frame["student_size"] = student_size
    frame["label"] = [j.label for j in judgements]
    frame["reply"] = [j.reply for j in judgements]
    frame["reasoning"] = [j.reasoning for j in judgements]
    frame["unreadable"] = [json.dumps(list(j.unreadable)) for j in judgements]
    frame["attempts"] = [j.attempts for j in judgements]
    frame["agent_model"] = critic.model_id
    frame["student_nll"] = list(student_nll) if student_nll is not None else float("nan")
    frame["student_solves"] = pd.array(list(student_solves) if student_solves is not None else [pd.NA] * len(frame),
                                       dtype="boolean")
    return frame[CRITIQUE_COLUMNS].reset_index(drop=True)


def refine(critiques: pd.DataFrame, rethinker: Rethinker, verifier: Verifier, student_size: str,
           max_attempts: int, count_tokens=count_words) -> pd.DataFrame:
    """One row per problem: the kept or rewritten CoT, every attempt's verdict, and the outcome.

    ``count_tokens`` measures whether an expansion grew and a simplification shrank (the student's
    tokenizer in the pipeline; words by default).
    """
    rows = []
    for rec in critiques.to_dict("records"):
        action = ACTION_FOR_LABEL.get(rec["label"], SKIP)
        row = {
            "problem_id": rec["problem_id"], "dataset": rec["dataset"], "question": rec["question"],
            "answer": rec["answer"], "label": rec["label"], "original_cot": rec["cot"],
            "original_correct": bool(rec["cot_correct"]), "action": action, "rewritten_cot": None,
            "reasoning": "", "final_attempt": 0, "attempts": 0, "verdicts": [], "passed": False, "drop_reason": None,
            "agent_model": rethinker.backend.model_id,
        }
        if action == SKIP:
            row["drop_reason"] = "unparsed_critique"
        elif action == "keep":
            row["rewritten_cot"] = rec["cot"]
            row["passed"] = row["original_correct"]
            row["drop_reason"] = None if row["passed"] else "original_incorrect"
        rows.append(row)

    pending = [r for r in rows if r["action"] in REWRITE_ACTIONS]
    feedback: dict[str, str] = {}
    for attempt in range(1, max_attempts + 1):
        if not pending:
            break
        tasks = [RewriteTask(r["question"], r["answer"], r["original_cot"], r["action"], feedback.get(r["problem_id"], ""))
                 for r in pending]
        rewrites = rethinker.rewrite(tasks, student_size, attempt)
        # A reply that is unusable or not laid out as asked, or a rewrite that does not do what it was
        # asked, fails before the Verifier (and its judge) spends anything on it. Trailing text is
        # looked for first: it also makes a rewrite longer, and "not expanded" would misname it.
        shape = [rw.problem or trailing_problem(r["original_cot"], rw.cot, r["answer"])
                 or rewrite_problem(r["original_cot"], rw.cot, r["action"], count_tokens)
                 for r, rw in zip(pending, rewrites)]
        to_verify = [i for i, problem in enumerate(shape) if problem is None]
        checked = verifier.verify([(pending[i]["problem_id"], pending[i]["question"], pending[i]["answer"],
                                    rewrites[i].cot) for i in to_verify])
        verdicts = [Verdict(False, problem, None) for problem in shape]
        for i, verdict in zip(to_verify, checked):
            verdicts[i] = verdict
        still = []
        for r, rw, verdict in zip(pending, rewrites, verdicts):
            text = rw.cot
            r["attempts"] = attempt
            r["reasoning"] = rw.reply.reasoning
            # A program is in the rewrite itself; the verdict keeps what the tests said of it.
            # Each attempt's text is kept: a dropped rewrite has no rewritten_cot, and why it was
            # dropped cannot be seen without it (the reply as it came where it was not laid out or was cut).
            r["verdicts"].append({"attempt": attempt, "passed": verdict.passed, "reason": verdict.reason,
                                  "text": text or rw.reply.content or rw.reply.reasoning,
                                  "extracted": None if is_code(r["answer"]) else verdict.extracted,
                                  **({"detail": verdict.detail} if verdict.detail else {})})
            if verdict.passed:
                r.update(rewritten_cot=text, final_attempt=attempt, passed=True)
            else:
                feedback[r["problem_id"]] = failure_feedback(verdict.reason, verdict.extracted, r["answer"],
                                                             verdict.detail)
                r["drop_reason"] = f"verify_failed:{verdict.reason}"
                still.append(r)
        pending = still
    for r in rows:
        r["verdicts"] = json.dumps(r["verdicts"])
        if r["passed"]:
            r["drop_reason"] = None
    return pd.DataFrame(rows, columns=REWRITE_COLUMNS)


def verified_set(rewritten: pd.DataFrame, unrewritten: str = "drop", rescued: str = "keep") -> pd.DataFrame:
    """The SFT data (``role == 'suited'``) plus correct but unsuited originals (for CogPO pairs).

    ``unrewritten`` says what becomes of a correct easy or hard CoT whose rewrite never verified:
    ``drop`` leaves it out of the SFT data, ``keep_original`` trains on it as it was (provenance
    ``unrewritten``). The paper does not say; ``drop`` reads it as only suited CoTs being SFT data.

    A rewrite that verified although its original's answer was wrong was led there by the reference
    answer in the Rethinker's prompt: provenance ``rescued``, kept (``rescued='keep'``) or left out
    (``drop``). Its original is never an unsuited original: it is not correct.
    """
    if unrewritten not in UNREWRITTEN_POLICIES:
        raise ValueError(f"crv.unrewritten: '{unrewritten}' is not one of {UNREWRITTEN_POLICIES}")
    if rescued not in RESCUED_POLICIES:
        raise ValueError(f"crv.rescued: '{rescued}' is not one of {RESCUED_POLICIES}")
    out = []
    for r in rewritten.to_dict("records"):
        base = {k: r[k] for k in ("problem_id", "dataset", "question", "answer", "label", "action")}
        failed_rewrite = r["action"] in REWRITE_ACTIONS and not r["passed"] and r["original_correct"]
        if r["passed"]:
            provenance = "original" if r["action"] == "keep" else "rewritten" if r["original_correct"] else RESCUED
            if provenance != RESCUED or rescued == "keep":
                out.append({**base, "cot": r["rewritten_cot"], "role": SUITED, "provenance": provenance})
        elif failed_rewrite and unrewritten == KEEP_ORIGINAL:
            out.append({**base, "cot": r["original_cot"], "role": SUITED, "provenance": UNREWRITTEN})
        if r["action"] in REWRITE_ACTIONS and r["original_correct"]:
            out.append({**base, "cot": r["original_cot"], "role": UNSUITED_ORIGINAL, "provenance": "original"})
    return pd.DataFrame(out, columns=VERIFIED_COLUMNS)


def num_rescued(rewritten: pd.DataFrame) -> int:
    """Verified rewrites of CoTs whose own answer was wrong."""
    return int((rewritten["passed"] & rewritten["action"].isin(REWRITE_ACTIONS) & ~rewritten["original_correct"]).sum())


def rescued_counts(rewritten: pd.DataFrame, rescued: str) -> dict[str, int]:
    """Verified rewrites of CoTs whose own answer was wrong, and what became of them."""
    n = num_rescued(rewritten)
    return {"rescued_kept": n if rescued == "keep" else 0, "rescued_dropped": n if rescued == "drop" else 0}


# --------------------------------------------------------------------------- statistics


def unrewritten_counts(rewritten: pd.DataFrame, unrewritten: str) -> dict[str, int]:
    """Correct easy or hard CoTs whose rewrite never verified, and what became of them."""
    failed = rewritten["action"].isin(REWRITE_ACTIONS) & ~rewritten["passed"] & rewritten["original_correct"]
    n = int(failed.sum())
    return {"unrewritten_dropped": n if unrewritten == "drop" else 0,
            "unrewritten_kept": n if unrewritten == KEEP_ORIGINAL else 0}


def label_counts(critiques: pd.DataFrame) -> dict[str, int]:
    counts = Counter(critiques["label"])
    return {label: int(counts.get(label, 0)) for label in CRITIQUE_LABELS}


def unreadable_counts(critiques: pd.DataFrame) -> dict[str, int]:
    """Critic attempts that gave no label, by reason (truncated, unfinished_thinking, no_label, ...)."""
    counts = Counter(reason for cell in critiques["unreadable"] for reason in json.loads(cell))
    return dict(sorted(counts.items()))


def rewrite_lengths(rewritten: pd.DataFrame, count_tokens) -> tuple[dict[str, float], list[int], list[int]]:
    """Mean tokens of the rewrites that passed, before and after, per action; and every passed
    rewrite's length before and after (for the histogram). ``count_tokens``: the student's tokenizer."""
    passed = rewritten[rewritten["passed"] & rewritten["action"].isin(REWRITE_ACTIONS)]
    before = [count_tokens(t) for t in passed["original_cot"]]
    after = [count_tokens(t) for t in passed["rewritten_cot"]]
    means = {}
    for action in REWRITE_ACTIONS:
        mask = (passed["action"] == action).tolist()
        if any(mask):
            means[f"{action}_tokens_before"] = float(sum(b for b, m in zip(before, mask) if m) / sum(mask))
            means[f"{action}_tokens_after"] = float(sum(a for a, m in zip(after, mask) if m) / sum(mask))
    return means, before, after


def refine_stats(rewritten: pd.DataFrame, max_attempts: int) -> dict:
    actions = Counter(rewritten["action"])
    tried = rewritten[rewritten["action"].isin(REWRITE_ACTIONS)]
    per_attempt = {}
    for k in range(1, max_attempts + 1):
        at_k = tried[tried["attempts"] >= k]
        if len(at_k):
            passed_at_k = int((at_k["final_attempt"] == k).sum())
            per_attempt[f"attempt_{k}"] = round(passed_at_k / len(at_k), 4)
    drops = Counter(r for r in rewritten["drop_reason"] if isinstance(r, str))
    return {
        "actions": {a: int(actions.get(a, 0)) for a in ACTIONS},
        "pass_rate_by_attempt": per_attempt,
        "rewrite_pass_rate": round(float(tried["passed"].mean()), 4) if len(tried) else None,
        "drop_reasons": dict(sorted(drops.items())),
        "num_dropped": int((~rewritten["passed"]).sum()),
        # Rewrites that verified although the original's answer was wrong (provenance 'rescued').
        "num_rescued": num_rescued(rewritten),
    }
