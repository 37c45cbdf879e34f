"""Scoring students on benchmarks: generation through a backend, answers checked with is_correct.

pass@1 with several samples is the mean correctness over the samples of a problem; accuracy
is the mean of that over problems. A response cut at the protocol's ``max_new_tokens`` (or one
that never finished thinking) has no answer; the protocol records whether the last number of a
response counts as its answer. Multiple-choice problems are graded by the option letter.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd

from crv_dagster.answers import answers_match, extract_answer, extract_choice
from crv_dagster.config import EvalProtocol
from crv_dagster.evaluation.statistics import bootstrap_interval, paired_bootstrap_p
from crv_dagster.formatting import prompt_messages
from crv_dagster.llm.base import ChatRequest, SamplingParams
from crv_dagster.llm.reply import TRUNCATED, read_reply

DETAIL_COLUMNS = ["method", "benchmark", "problem_id", "sample", "question", "answer", "response", "reasoning",
                  "extracted_answer", "correct", "response_tokens", "finish_reason", "unreadable"]


def protocol_params(protocol: EvalProtocol) -> SamplingParams:
    return SamplingParams(max_new_tokens=protocol.max_new_tokens, temperature=protocol.temperature,
                          top_p=protocol.top_p, seed=protocol.seed)


def generate_answers(backend, method: str, benchmark: str, problems: pd.DataFrame, protocol: EvalProtocol) -> pd.DataFrame:
    """One row per (problem, sample): the response and whether its answer is right."""
    base = protocol_params(protocol)
    requests, keys = [], []
    for row in problems.itertuples():
        for k in range(protocol.samples):
            requests.append(ChatRequest.of(prompt_messages(row.question), replace(base, seed=base.seed + k)))
            keys.append((row, k))
    completions = backend.generate(requests) if requests else []
    rows = []
    for (row, k), completion in zip(keys, completions):
        reply = read_reply(completion)
        extracted = grade_answer(reply.content, getattr(row, "choices", None), protocol) if reply.usable else None
        rows.append({"method": method, "benchmark": benchmark, "problem_id": row.problem_id, "sample": k,
                     "question": row.question, "answer": row.answer, "response": reply.content,
                     "reasoning": reply.reasoning, "extracted_answer": extracted,
                     "correct": extracted is not None and answers_match(row.answer, extracted),
                     "response_tokens": completion.completion_tokens, "finish_reason": completion.finish_reason,
                     "unreadable": reply.problem})
    return pd.DataFrame(rows, columns=DETAIL_COLUMNS)


def grade_answer(content: str, choices: str | None, protocol: EvalProtocol) -> str | None:
    """The answer a usable response gives: an option letter for multiple choice (``choices`` is
    the problem's JSON of options), else the free answer under the protocol's extraction rule."""
    if isinstance(choices, str) and choices:
        return extract_choice(content, json.loads(choices))
    return extract_answer(content, last_number_fallback=protocol.last_number_fallback)


def summarize(details: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, benchmark): pass@1 accuracy (a fraction) with its bootstrap 95% interval
    over problems, counts, response length, no-answer and truncated shares."""
    rows = []
    for (method, benchmark), group in details.groupby(["method", "benchmark"], sort=False):
        per_problem = group.groupby("problem_id")["correct"].mean()
        low, high = bootstrap_interval(per_problem.to_numpy())
        rows.append({"method": method, "benchmark": benchmark, "accuracy": float(per_problem.mean()),
                     "ci_low": low, "ci_high": high,
                     "num_problems": int(per_problem.size), "num_samples": int(group["sample"].nunique()),
                     "mean_response_tokens": float(group["response_tokens"].mean()),
                     "no_answer_share": float(group["extracted_answer"].isna().mean()),
                     "truncated_share": float((group["unreadable"] == TRUNCATED).mean())})
    return pd.DataFrame(rows)


def compare_with(details: pd.DataFrame, scores: pd.DataFrame, reference: str) -> pd.DataFrame:
    """``scores`` with ``p_vs_<reference>``: the paired bootstrap p-value of each method against the
    reference method on the same benchmark's problems (empty for the reference itself, and where
    it was not scored)."""
    per_problem = details.groupby(["method", "benchmark", "problem_id"])["correct"].mean()
    column = f"p_vs_{reference}"
    values = []
    for row in scores.itertuples():
        if row.method == reference or (reference, row.benchmark) not in per_problem.index.droplevel(2):
            values.append(float("nan"))
            continue
        ours, theirs = per_problem[row.method][row.benchmark], per_problem[reference][row.benchmark]
        common = ours.index.intersection(theirs.index)
        values.append(paired_bootstrap_p(ours[common].to_numpy(), theirs[common].to_numpy()))
    return scores.assign(**{column: values})
