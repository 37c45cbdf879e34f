"""CogPO's preference pairs: three kinds, by how far apart the two CoTs are.

- small_gap:  suited CoT (rewritten, verified)            over the original unsuited but correct CoT
- medium_gap: original unsuited but correct CoT           over an incorrect CoT
- large_gap:  suited CoT (rewritten, or a 'medium' original) over an incorrect CoT

Every pair is checked before it is emitted (``solutions.SolutionChecker``): both CoTs must commit
to an answer (``\\boxed{}`` or ``####``; a number in passing does not count), the chosen one to the
reference answer; the rejected one must reach it too for a small gap (it is correct, only
unsuited) and must commit to a different answer otherwise. For a code problem "committing to an
answer" is ending with a program, and "the reference answer" is passing every test: a rejected
code CoT is one whose program fails a test. Pairs that fail are counted, never silently dropped.

Chosen and rejected are in one format: both carry a reasoning trace or neither (``cot.py``). A pair
whose CoTs differ in format as well as in correctness teaches the format (a student that answers
without thinking, set against a teacher's long trace, would learn "write a trace"), so an incorrect
CoT in the other format is passed over, counted as ``format_mismatch``, and the next source is
asked for that problem; ``build_pairs`` refuses any such pair that still reaches it. Every pair
records both CoTs' lengths in the student's tokens, so a length gap can be seen beside it.

Every CoT is in the student format (``cot.py``), a trace and a solution, and only its solution is
graded. An incorrect CoT is made the way a student errs: a mistake in the trace carried through to a
wrong committed answer (the injecting agent is shown the CoT in the agents' delimiters and answers in
them; the rule-based slip changes the trace's last result and the solution's). A student's own
sample keeps its thinking as its trace. An agent's musings and replies cut at the token budget never
become a rejected CoT.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable

import pandas as pd

from crv_dagster.agents.rethinker import count_words, read_rewrite, trailing_problem
from crv_dagster.cot import Cot, adjusted_completion, agent_view, layout_instruction, parse
from crv_dagster.formatting import agent_fields, student_messages
from crv_dagster.llm.base import ChatRequest, SamplingParams
from crv_dagster.llm.reply import read_reply
from crv_dagster.prompts import INJECT_FIELDS, INJECT_OPTIONAL, PromptTemplate, load_prompt
from crv_dagster.schemas import preference_pairs_schema
from crv_dagster.solutions import MATH_CHECKER, SolutionChecker
from crv_dagster.vocabulary import SUITED, UNREWRITTEN, UNSUITED_ORIGINAL

PAIR_COLUMNS = list(preference_pairs_schema.columns)


@dataclass(frozen=True)
class IncorrectCot:
    problem_id: str
    cot: str
    source: str  # student | sft | inject | perturb


# --------------------------------------------------------------------------- incorrect CoTs


# Why a reply did not yield an incorrect CoT (besides the reply problems of llm.reply).
NO_ANSWER = "no_answer"
CORRECT = "correct"
# A wrong CoT with a trace where the correct one has none, or the other way round.
FORMAT_MISMATCH = "format_mismatch"


def same_format(a: str, b: str) -> bool:
    """Whether two stored CoTs both carry a reasoning trace, or neither does."""
    return parse(a).has_trace == parse(b).has_trace


def _verdict_on_wrongness(checker: SolutionChecker, problem_id: str, cot: str, answer: str) -> str | None:
    """None when ``cot`` commits to an answer other than the reference (a program that fails a
    test), else why not."""
    check = checker.check(problem_id, answer, cot)
    if check.answer is None:
        return NO_ANSWER
    return CORRECT if check.solved else None


_SLIPS = (-3, -2, -1, 1, 2, 3, 10)


def _wrong_value(answer: str, rng: random.Random) -> str | None:
    """A nearby wrong value written like ``answer`` (integer, decimal, a/b or \\frac{a}{b})."""
    frac = re.fullmatch(r"(\\d?frac\{)(-?\d+)(\}\{\d+\})", answer) or re.fullmatch(r"()(-?\d+)(/\d+)", answer)
    if frac:  # change the numerator
        numerator = int(frac.group(2))
        slip = rng.choice([d for d in _SLIPS if numerator + d != 0])
        return f"{frac.group(1)}{numerator + slip}{frac.group(3)}"
    number = re.fullmatch(r"-?\d+(\.\d+)?", answer)
    if not number:
        return None
    decimals = len(number.group(1) or "") - 1 if number.group(1) else 0
    unit = 10 ** -decimals if decimals > 0 else 1
    value = float(answer)
    # Counts stay non-negative when the answer is; a negative answer may move either way.
    slips = [d for d in _SLIPS if value >= 0 and value + d * unit >= 0 or value < 0]
    wrong = value + rng.choice(slips) * unit
    return f"{wrong:.{decimals}f}" if decimals > 0 else str(int(round(wrong)))


def _slip_in_tail(text: str, occurrence: re.Pattern, wrong: str) -> str | None:
    """``text`` with every occurrence of the answer in its last two steps made ``wrong``; None when
    they do not mention it."""
    paragraphs = text.split("\n\n")
    tail_start = max(0, len(paragraphs) - 2)
    tail = "\n\n".join(paragraphs[tail_start:])
    if not occurrence.search(tail):
        return None
    return "\n\n".join(paragraphs[:tail_start] + [occurrence.sub(lambda _: wrong, tail)])


def perturb_cot(cot: str, answer: str, rng: random.Random) -> str | None:
    """The CoT (student format) with a slip in its last computation: the result is replaced by a
    nearby wrong value, consistently through to the final answer: in the trace's last two steps and
    everywhere in the solution. None when the answer is not a number the rule can change, or does
    not appear in the last two steps (of the trace, where there is one)."""
    occurrence = re.compile(rf"(?<![\d.]){re.escape(answer)}(?!\d|\.\d)")
    wrong = _wrong_value(answer, rng)
    if wrong is None or wrong == answer:
        return None
    parts = parse(cot)
    if not parts.has_trace:
        slipped = _slip_in_tail(parts.solution, occurrence, wrong)
        return None if slipped is None else Cot(slipped, parts.trace).text
    trace = _slip_in_tail(parts.trace, occurrence, wrong)
    if trace is None:
        return None
    return Cot(occurrence.sub(lambda _: wrong, parts.solution), trace).text


def incorrect_by_perturbation(problems: pd.DataFrame, seed: int,
                              checker: SolutionChecker = MATH_CHECKER) -> tuple[list[IncorrectCot], Counter]:
    """A slip in the last computation of each numeric answer; code problems are never perturbable."""
    out, skipped = [], Counter()
    for row in problems.itertuples():
        rng = random.Random(f"{seed}:{row.problem_id}")
        wrong = perturb_cot(row.cot, row.answer, rng)
        if wrong is None or _verdict_on_wrongness(checker, row.problem_id, wrong, row.answer) is not None:
            skipped["not_perturbable"] += 1
        elif not same_format(wrong, row.cot):
            skipped[FORMAT_MISMATCH] += 1
        else:
            out.append(IncorrectCot(row.problem_id, wrong, "perturb"))
    return out, skipped


def _first_wrong(cots, checker: SolutionChecker, problem_id: str, answer: str, like: str,
                 skipped: Counter) -> str | None:
    """The first of ``cots`` ((stored CoT, why it is unusable)) that commits to a wrong answer in the
    format of the correct CoT ``like``; the others counted by reason. Wrongness is judged first, so
    ``format_mismatch`` counts only wrong answers set aside for their format."""
    for cot, problem in cots:
        reason = problem or _verdict_on_wrongness(checker, problem_id, cot, answer)
        if reason is None and not same_format(cot, like):
            reason = FORMAT_MISMATCH
        if reason is None:
            return cot
        skipped[reason] += 1
    return None


def student_cot(reply, trace: str = "auto") -> str:
    """A student's sampled reply as a stored CoT: its thinking, where it thought, is its trace (under
    the profile's ``cot.trace``, as every other CoT)."""
    return Cot(reply.content, reply.reasoning or None).with_mode(trace).text if reply.usable else ""


def incorrect_by_student(problems: pd.DataFrame, backend, render_prompt: Callable[[str, str], list[dict]],
                         samples: int, params: SamplingParams, checker: SolutionChecker = MATH_CHECKER,
                         trace: str = "auto", source: str = "student") -> tuple[list[IncorrectCot], Counter]:
    """A student's own wrong answers: ``samples`` sampled replies per problem, the first wrong one in
    the format of the problem's correct CoT kept; the replies passed over, counted by reason.
    ``render_prompt(question, answer)`` gives the student's messages; ``source`` names the
    checkpoint that answered (``student``: the base student, ``sft``: the SFT checkpoint)."""
    requests = [ChatRequest.of(render_prompt(q, a), replace(params, seed=params.seed + k))
                for q, a in zip(problems["question"], problems["answer"]) for k in range(samples)]
    cots = [(student_cot(r, trace), r.problem) for r in map(read_reply, backend.generate(requests))]
    out, skipped = [], Counter()
    for i, row in enumerate(problems.itertuples()):
        wrong = _first_wrong(cots[i * samples : (i + 1) * samples], checker, row.problem_id, row.answer, row.cot,
                             skipped)
        if wrong is not None:
            out.append(IncorrectCot(row.problem_id, wrong, source))
    return out, skipped


def load_inject_prompt(name: str) -> PromptTemplate:
    return load_prompt(name, required=INJECT_FIELDS, optional=INJECT_OPTIONAL)


def incorrect_by_injection(problems: pd.DataFrame, backend, prompt: PromptTemplate, params: SamplingParams,
                           checker: SolutionChecker = MATH_CHECKER) -> tuple[list[IncorrectCot], Counter]:
    """An agent rewrites a correct CoT with one plausible mistake in its reasoning, carried to a wrong
    answer (a broken program); the replies not used, counted by reason."""
    requests = [ChatRequest.of([{"role": "user", "content": prompt.render(
                    question=r.question, cot=agent_view(r.cot), layout=layout_instruction(r.cot),
                    **agent_fields(r.answer))}], params)
                for r in problems.itertuples()]
    out, skipped = [], Counter()
    for row, completion in zip(problems.itertuples(), backend.generate(requests)):
        rewrite = read_rewrite(read_reply(completion), row.cot)
        problem = rewrite.problem or trailing_problem(row.cot, rewrite.cot, row.answer)
        wrong = _first_wrong([(rewrite.cot, problem)], checker, row.problem_id, row.answer, row.cot,
                             skipped)
        if wrong is not None:
            out.append(IncorrectCot(row.problem_id, wrong, "inject"))
    return out, skipped


# --------------------------------------------------------------------------- pairs


def pair_material(verified: pd.DataFrame) -> pd.DataFrame:
    """One correct CoT per problem, to corrupt or to sample against: the original where the problem
    has one (its layout is the dataset's or the teacher's, so a perturbation finds the result), else
    the suited CoT."""
    ordered = verified.sort_values("role", ascending=False)  # unsuited_original before suited
    return ordered.drop_duplicates("problem_id")[["problem_id", "question", "answer", "cot"]].reset_index(drop=True)


def _pair_id(problem_id: str, pair_type: str) -> str:
    return hashlib.sha256(f"{problem_id}:{pair_type}".encode()).hexdigest()[:16]


def build_pairs(verified: pd.DataFrame, incorrect: list[IncorrectCot], betas: dict[str, float],
                render_prompt: Callable[[str, str], str], checker: SolutionChecker = MATH_CHECKER,
                count_tokens: Callable[[str], int] = count_words) -> tuple[pd.DataFrame, Counter]:
    """All pairs the material allows, one of each kind per problem, and the count of refused ones.
    ``render_prompt(question, answer)`` gives the student's prompt text; ``count_tokens`` measures
    the chosen and rejected completions (the student's tokenizer in the pipeline, words by default)."""
    wrong = {c.problem_id: c for c in incorrect}
    refused: Counter = Counter()
    rows = []
    for problem_id, group in verified.groupby("problem_id", sort=False):
        first = group.iloc[0]
        suited = group[group["role"] == SUITED]
        unsuited = group[group["role"] == UNSUITED_ORIGINAL]
        candidates = []
        if len(suited) and len(unsuited) and suited.iloc[0]["provenance"] == "rewritten":
            candidates.append(("small_gap", suited.iloc[0]["cot"], unsuited.iloc[0]["cot"], "original"))
        if problem_id in wrong:
            if len(unsuited):
                candidates.append(("medium_gap", unsuited.iloc[0]["cot"], wrong[problem_id].cot, wrong[problem_id].source))
            # A kept unrewritten original (crv.unrewritten) is the medium-gap pair's chosen CoT already.
            if len(suited) and suited.iloc[0]["provenance"] != UNREWRITTEN:
                candidates.append(("large_gap", suited.iloc[0]["cot"], wrong[problem_id].cot, wrong[problem_id].source))
        prompt = render_prompt(first["question"], first["answer"])
        for pair_type, chosen, rejected, source in candidates:
            reason = _refusal(checker, problem_id, pair_type, chosen, rejected, first["answer"])
            if reason:
                refused[f"{pair_type}:{reason}"] += 1
                continue
            chosen, rejected = adjusted_completion(prompt, chosen), adjusted_completion(prompt, rejected)
            rows.append({
                "pair_id": _pair_id(problem_id, pair_type), "problem_id": problem_id, "dataset": first["dataset"],
                "question": first["question"], "answer": first["answer"], "pair_type": pair_type,
                "beta": float(betas[pair_type]), "prompt": prompt, "chosen": chosen, "rejected": rejected,
                "rejected_source": source,
                # Measured as the held-out metrics score them (evaluation/heldout_pairs.pair_logps): stripped.
                "chosen_tokens": count_tokens(chosen.strip()), "rejected_tokens": count_tokens(rejected.strip()),
            })
    return pd.DataFrame(rows, columns=PAIR_COLUMNS), refused


def _refusal(checker: SolutionChecker, problem_id: str, pair_type: str, chosen: str, rejected: str,
             answer: str) -> str | None:
    if not checker.check(problem_id, answer, chosen).solved:
        return "chosen_not_correct"
    if chosen.strip() == rejected.strip():
        return "identical"
    if not same_format(chosen, rejected):
        return FORMAT_MISMATCH
    rejected_check = checker.check(problem_id, answer, rejected)
    if pair_type == "small_gap":
        if not rejected_check.solved:
            return "rejected_not_correct"
    elif rejected_check.answer is None or rejected_check.solved:
        return "rejected_not_wrong"
    return None


def chat_prompt_renderer(tokenizer) -> Callable[[str], str]:
    """The student's chat template applied to the shared prompt, ready for a completion."""

    def render(question: str, answer: str) -> str:
        return tokenizer.apply_chat_template(student_messages(question, answer), tokenize=False,
                                             add_generation_prompt=True)

    return render


# --------------------------------------------------------------------------- what the pairs hold


def length_ratios(pairs: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per pair kind: the pairs, the mean chosen and rejected lengths in tokens, and the chosen /
    rejected length ratio of each pair, its median and mean (1 where both are alike in length; 10:
    the chosen CoT ten times the rejected's length)."""
    out = {}
    for kind, rows in pairs.groupby("pair_type", sort=True):
        ratio = rows["chosen_tokens"] / rows["rejected_tokens"].clip(lower=1)
        out[str(kind)] = {"n": len(rows), "chosen_tokens_mean": round(float(rows["chosen_tokens"].mean()), 1),
                          "rejected_tokens_mean": round(float(rows["rejected_tokens"].mean()), 1),
                          "ratio_median": round(float(ratio.median()), 3), "ratio_mean": round(float(ratio.mean()), 3)}
    return out
