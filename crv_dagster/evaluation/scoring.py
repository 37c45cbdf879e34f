"""Scoring students on benchmarks: generation through a backend, answers checked with is_correct.

pass@1 with several samples is the mean correctness over the samples of a problem; accuracy is
the mean of that over problems. ``cons@n`` is the majority vote: a problem counts as solved when
the answer most samples give (after normalisation; the earliest of equally common ones) is right.
It is reported beside pass@1, as reasoning models are (DeepSeek-R1, open-r1), and left empty for
code, whose programs are not votes.

A student's reply is graded on its content, the solution after its thinking: a number or a
\\boxed{} in the trace is never its answer. A response cut at the protocol's ``max_new_tokens``
(or one that never finished thinking) has no answer; the protocol records whether the last number
of a response counts as its answer. Multiple-choice problems are graded by the option letter.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pandas as pd

from crv_dagster.answers import answers_match, extract_answer, extract_choice, normalize_answer
from crv_dagster.config import EvalProtocol
from crv_dagster.evaluation.statistics import bootstrap_interval
from crv_dagster.formatting import prompt_messages
from crv_dagster.llm.base import ChatRequest, SamplingParams
from crv_dagster.llm.reply import TRUNCATED, read_reply
from crv_dagster.solutions import run_tests

DETAIL_COLUMNS = ["method", "seed", "benchmark", "problem_id", "sample", "question", "answer", "response", "reasoning",
                  "extracted_answer", "correct", "verdict", "response_tokens", "finish_reason", "unreadable"]


# Sample k of run seed s is drawn with seed protocol.seed + SEED_STRIDE * s + k: the runs' samples never
# share a seed while a protocol has fewer samples than this.
SEED_STRIDE = 1000


def protocol_params(protocol: EvalProtocol) -> SamplingParams:
    return SamplingParams(max_new_tokens=protocol.max_new_tokens, temperature=protocol.temperature,
                          top_p=protocol.top_p, seed=protocol.seed, stop_at_answer=protocol.stop_at_answer)


def _tests_of(row) -> str | None:
    tests = getattr(row, "tests", None)
    return tests if isinstance(tests, str) and tests else None


def generate_answers(backend, method: str, benchmark: str, problems: pd.DataFrame, protocol: EvalProtocol,
                     seed: int = 0, sandbox=None) -> pd.DataFrame:
    """One row per (problem, sample): the response and whether its answer is right. ``seed`` is the
    run's seed (the profile's ``seeds``), which offsets every sample's sampling seed. Code problems
    (a ``tests`` column) are answered with a program, run against their tests in ``sandbox``."""
    base = protocol_params(protocol)
    first = base.seed + SEED_STRIDE * seed
    requests, keys = [], []
    for row in problems.itertuples():
        for k in range(protocol.samples):
            requests.append(ChatRequest.of(prompt_messages(row.question, code=_tests_of(row) is not None),
                                           replace(base, seed=first + k)))
            keys.append((row, k))
    completions = backend.generate(requests) if requests else []
    rows = []
    for (row, k), completion in zip(keys, completions):
        reply = read_reply(completion)
        if (tests := _tests_of(row)) is not None:
            extracted, correct, verdict = grade_program_reply(reply, tests, sandbox)
        else:
            extracted = grade_answer(reply.content, getattr(row, "choices", None), protocol) if reply.usable else None
            correct, verdict = extracted is not None and answers_match(row.answer, extracted), None
        rows.append({"method": method, "seed": seed, "benchmark": benchmark, "problem_id": row.problem_id,
                     "sample": k,
                     "question": row.question, "answer": row.answer, "response": reply.content,
                     "reasoning": reply.reasoning, "extracted_answer": extracted, "correct": correct,
                     "verdict": verdict, "response_tokens": completion.completion_tokens,
                     "finish_reason": completion.finish_reason, "unreadable": reply.problem})
    return pd.DataFrame(rows, columns=DETAIL_COLUMNS)


def grade_program_reply(reply, tests: str, sandbox) -> tuple[str | None, bool, str]:
    """The program of a usable reply (its last fenced block), whether it passes every test, and
    why not (the first failing test's status and detail)."""
    from crv_dagster.sandbox.grading import extract_program

    if not reply.usable:
        return None, False, f"no program: {reply.problem}"
    program = extract_program(reply.content)
    if program is None:
        return None, False, "no program: the reply has no fenced code block"
    if sandbox is None:
        raise ValueError("code problems need a sandbox to run their tests in (the profile's `sandbox`)")
    passed, tally = run_tests(sandbox, program, tests)
    return program, passed, tally


def grade_answer(content: str, choices: str | None, protocol: EvalProtocol) -> str | None:
    """The answer a usable response gives: an option letter for multiple choice (``choices`` is
    the problem's JSON of options), else the free answer under the protocol's extraction rule."""
    if isinstance(choices, str) and choices:
        return extract_choice(content, json.loads(choices))
    return extract_answer(content, last_number_fallback=protocol.last_number_fallback)


def majority_correct(samples: pd.DataFrame) -> bool:
    """Whether the answer most of one problem's samples give is right (no answer never wins)."""
    votes = Counter()
    right: dict[str, bool] = {}
    for extracted, correct in zip(samples["extracted_answer"], samples["correct"]):
        if isinstance(extracted, str) and extracted:
            key = normalize_answer(extracted)
            votes[key] += 1
            right.setdefault(key, bool(correct))
    if not votes:
        return False
    return right[votes.most_common(1)[0][0]]


def consensus_accuracy(group: pd.DataFrame) -> float | None:
    """cons@n of one (method, seed, benchmark): the share of problems whose majority answer is right;
    None for code (a program is graded by its tests, not voted on)."""
    if "verdict" in group and group["verdict"].notna().any():
        return None
    return float(group.groupby("problem_id").apply(majority_correct, include_groups=False).mean())


def summarize(details: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, seed, benchmark): pass@1 accuracy (a fraction) with its bootstrap 95%
    interval over problems, cons@n, counts, response length, no-answer and truncated shares, and each
    problem's own score (JSON {problem_id: mean correctness over samples}) for pooling seeds later."""
    rows = []
    for (method, seed, benchmark), group in details.groupby(["method", "seed", "benchmark"], sort=False):
        per_problem = group.groupby("problem_id")["correct"].mean()
        low, high = bootstrap_interval(per_problem.to_numpy())
        rows.append({"method": method, "seed": int(seed), "benchmark": benchmark,
                     "accuracy": float(per_problem.mean()), "ci_low": low, "ci_high": high,
                     "cons_at_n": consensus_accuracy(group),
                     "num_problems": int(per_problem.size), "num_samples": int(group["sample"].nunique()),
                     "mean_response_tokens": float(group["response_tokens"].mean()),
                     "no_answer_share": float(group["extracted_answer"].isna().mean()),
                     "truncated_share": float((group["unreadable"] == TRUNCATED).mean()),
                     "problem_scores": problem_scores_json(per_problem)})
    return pd.DataFrame(rows)


def problem_scores_json(per_problem: pd.Series) -> str:
    return json.dumps({str(k): round(float(v), 6) for k, v in per_problem.sort_index().items()})
