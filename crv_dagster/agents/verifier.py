"""The Verifier: does a refined chain of thought still solve its problem?

The rule-based check always runs on the CoT's solution (``solutions.SolutionChecker``): a math CoT must commit to an
answer (``\\boxed{}`` or the dataset's ``####`` marker; no last-number guess) equal to the
reference; a code CoT's final program must pass every test of its problem, run in the sandbox. An
LLM judge can be added in the profile and is asked only about CoTs that passed it; a judge reply
that was cut off or never finished thinking is no verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from crv_dagster.agents.replies import parse_verdict
from crv_dagster.cot import agent_view
from crv_dagster.formatting import agent_fields
from crv_dagster.llm.base import ChatRequest, SamplingParams
from crv_dagster.llm.reply import read_reply
from crv_dagster.prompts import JUDGE_FIELDS, PromptTemplate, load_prompt
from crv_dagster.solutions import MATH_CHECKER, SolutionChecker


@dataclass(frozen=True)
class Verdict:
    passed: bool
    # passed | no_answer | wrong_answer | tests_failed | judge_rejected | judge_unreadable |
    # judge_<reply problem>; the Rethinker's own checks add truncated, trailing_text, ... (see crv.refine)
    reason: str
    extracted: str | None  # the committed answer, or the final program
    detail: str = ""  # for code: the tests passed and the first failure


def load_judge_prompt(name: str) -> PromptTemplate:
    return load_prompt(name, required=JUDGE_FIELDS)


class Verifier:
    def __init__(self, judge_backend=None, judge_prompt: PromptTemplate | None = None,
                 judge_params: SamplingParams | None = None, owns_judge_backend: bool = False,
                 checker: SolutionChecker | None = None):
        if (judge_backend is None) != (judge_prompt is None):
            raise ValueError("an LLM judge needs both a backend and a prompt")
        self.judge_backend = judge_backend
        # A judge on a backend of its own (not the agents') is closed with the Verifier.
        self.owns_judge_backend = owns_judge_backend
        self.judge_prompt = judge_prompt
        self.judge_params = judge_params or SamplingParams(max_new_tokens=4096)
        self.checker = checker or MATH_CHECKER

    def close(self) -> None:
        if self.owns_judge_backend and self.judge_backend is not None:
            self.judge_backend.close()

    def __enter__(self) -> "Verifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def verify(self, items: Sequence[tuple[str, str, str, str]]) -> list[Verdict]:
        """Verdicts for (problem_id, question, answer, cot) items."""
        checks = self.checker.check_all([(pid, answer, cot) for pid, _, answer, cot in items])
        verdicts = [Verdict(c.solved, c.reason, c.answer, c.detail) for c in checks]
        if self.judge_backend is not None:
            verdicts = self._judge(items, verdicts)
        return verdicts

    def _judge(self, items, verdicts: list[Verdict]) -> list[Verdict]:
        ask = [i for i, v in enumerate(verdicts) if v.passed]
        requests = [
            ChatRequest.of([{"role": "user", "content": self.judge_prompt.render(
                question=items[i][1], cot=agent_view(items[i][3]), **agent_fields(items[i][2]))}],
                           self.judge_params)
            for i in ask
        ]
        out = list(verdicts)
        for i, completion in zip(ask, self.judge_backend.generate(requests)):
            reply = read_reply(completion)
            decision = parse_verdict(reply.content) if reply.usable else None
            if not reply.usable:
                out[i] = replace(verdicts[i], passed=False, reason=f"judge_{reply.problem}")
            elif decision is None:
                out[i] = replace(verdicts[i], passed=False, reason="judge_unreadable")
            elif not decision:
                out[i] = replace(verdicts[i], passed=False, reason="judge_rejected")
        return out
