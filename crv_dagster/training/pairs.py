"""CogPO's preference pairs: three kinds, by how far apart the two CoTs are.

- small_gap:  suited CoT (rewritten, verified)            over the original unsuited but correct CoT
- medium_gap: original unsuited but correct CoT           over an incorrect CoT
- large_gap:  suited CoT (rewritten, or a 'medium' original) over an incorrect CoT

Every pair is checked before it is emitted: the chosen CoT must reach the reference answer; the
rejected one must too for a small gap (it is correct, only unsuited) and must end in a different,
readable answer otherwise. Pairs that fail are counted, never silently dropped.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable

import pandas as pd

from crv_dagster.evaluation.answers import answers_match, extract_answer
from crv_dagster.llm.base import ChatRequest, SamplingParams
from crv_dagster.prompts import PromptTemplate, load_prompt
from crv_dagster.training.formatting import prompt_messages

PAIR_TYPES = ("small_gap", "medium_gap", "large_gap")
PAIR_COLUMNS = ["pair_id", "problem_id", "dataset", "question", "answer", "pair_type", "beta", "prompt",
                "chosen", "rejected", "rejected_source"]


@dataclass(frozen=True)
class IncorrectCot:
    problem_id: str
    cot: str
    source: str  # student | inject | perturb


# --------------------------------------------------------------------------- incorrect CoTs


def _ends_wrong(cot: str, answer: str) -> bool:
    predicted = extract_answer(cot)
    return predicted is not None and not answers_match(answer, predicted)


def perturb_cot(cot: str, answer: str, rng: random.Random) -> str | None:
    """The CoT with a slip in its last computation: the result is replaced by a nearby wrong
    value, consistently through to the final answer. None when no number can be changed."""
    paragraphs = cot.split("\n\n")
    tail_start = max(0, len(paragraphs) - 2)
    tail = "\n\n".join(paragraphs[tail_start:])
    target = re.escape(answer)
    if not re.fullmatch(r"-?\d+", answer) or not re.search(rf"(?<![\d.]){target}(?![\d.])", tail):
        return None
    value = int(answer)
    wrong = value + rng.choice([d for d in (-3, -2, -1, 1, 2, 3, 10) if value + d >= 0 and d != 0])
    tail = re.sub(rf"(?<![\d.]){target}(?![\d.])", str(wrong), tail)
    return "\n\n".join(paragraphs[:tail_start] + [tail])


def incorrect_by_perturbation(problems: pd.DataFrame, seed: int) -> list[IncorrectCot]:
    out = []
    for row in problems.itertuples():
        rng = random.Random(f"{seed}:{row.problem_id}")
        wrong = perturb_cot(row.cot, row.answer, rng)
        if wrong is not None and _ends_wrong(wrong, row.answer):
            out.append(IncorrectCot(row.problem_id, wrong, "perturb"))
    return out


def incorrect_by_student(problems: pd.DataFrame, backend, render_prompt: Callable[[str], list[dict]],
                         samples: int, params: SamplingParams) -> list[IncorrectCot]:
    """The student's own wrong answers: ``samples`` sampled replies per problem, first wrong one kept."""
    requests = [ChatRequest.of(render_prompt(q), replace(params, seed=params.seed + k))
                for q in problems["question"] for k in range(samples)]
    completions = backend.generate(requests)
    out = []
    for i, row in enumerate(problems.itertuples()):
        for completion in completions[i * samples : (i + 1) * samples]:
            if completion.finish_reason == "stop" and _ends_wrong(completion.text, row.answer):
                out.append(IncorrectCot(row.problem_id, completion.text.strip(), "student"))
                break
    return out


INJECT_FIELDS = {"question", "answer", "cot"}


def load_inject_prompt(name: str) -> PromptTemplate:
    return load_prompt(name, required=INJECT_FIELDS)


def incorrect_by_injection(problems: pd.DataFrame, backend, prompt: PromptTemplate,
                           params: SamplingParams) -> list[IncorrectCot]:
    """An agent rewrites a correct CoT with one plausible mistake that changes the answer."""
    requests = [ChatRequest.of([{"role": "user", "content": prompt.render(question=r.question, answer=r.answer, cot=r.cot)}],
                               params) for r in problems.itertuples()]
    out = []
    for row, completion in zip(problems.itertuples(), backend.generate(requests)):
        if _ends_wrong(completion.text, row.answer):
            out.append(IncorrectCot(row.problem_id, completion.text.strip(), "inject"))
    return out


# --------------------------------------------------------------------------- pairs


def _pair_id(problem_id: str, pair_type: str) -> str:
    return hashlib.sha256(f"{problem_id}:{pair_type}".encode()).hexdigest()[:16]


def build_pairs(verified: pd.DataFrame, incorrect: list[IncorrectCot], betas: dict[str, float],
                render_prompt: Callable[[str], str]) -> tuple[pd.DataFrame, Counter]:
    """All pairs the material allows, one of each kind per problem, and the count of refused ones."""
    wrong = {c.problem_id: c for c in incorrect}
    refused: Counter = Counter()
    rows = []
    for problem_id, group in verified.groupby("problem_id", sort=False):
        first = group.iloc[0]
        suited = group[group["role"] == "suited"]
        unsuited = group[group["role"] == "unsuited_original"]
        candidates = []
        if len(suited) and len(unsuited) and suited.iloc[0]["provenance"] == "rewritten":
            candidates.append(("small_gap", suited.iloc[0]["cot"], unsuited.iloc[0]["cot"], "original"))
        if problem_id in wrong:
            if len(unsuited):
                candidates.append(("medium_gap", unsuited.iloc[0]["cot"], wrong[problem_id].cot, wrong[problem_id].source))
            if len(suited):
                candidates.append(("large_gap", suited.iloc[0]["cot"], wrong[problem_id].cot, wrong[problem_id].source))
        for pair_type, chosen, rejected, source in candidates:
            reason = _refusal(pair_type, chosen, rejected, first["answer"])
            if reason:
                refused[f"{pair_type}:{reason}"] += 1
                continue
            rows.append({
                "pair_id": _pair_id(problem_id, pair_type), "problem_id": problem_id, "dataset": first["dataset"],
                "question": first["question"], "answer": first["answer"], "pair_type": pair_type,
                "beta": float(betas[pair_type]), "prompt": render_prompt(first["question"]),
                "chosen": chosen, "rejected": rejected, "rejected_source": source,
            })
    return pd.DataFrame(rows, columns=PAIR_COLUMNS), refused


def _refusal(pair_type: str, chosen: str, rejected: str, answer: str) -> str | None:
    chosen_answer = extract_answer(chosen)
    if chosen_answer is None or not answers_match(answer, chosen_answer):
        return "chosen_not_correct"
    if chosen.strip() == rejected.strip():
        return "identical"
    rejected_answer = extract_answer(rejected)
    if pair_type == "small_gap":
        if rejected_answer is None or not answers_match(answer, rejected_answer):
            return "rejected_not_correct"
    elif rejected_answer is None or answers_match(answer, rejected_answer):
        return "rejected_not_wrong"
    return None


def chat_prompt_renderer(tokenizer) -> Callable[[str], str]:
    """The student's chat template applied to the shared prompt, ready for a completion."""

    def render(question: str) -> str:
        return tokenizer.apply_chat_template(prompt_messages(question), tokenize=False, add_generation_prompt=True)

    return render
