"""The Verifier: does a refined chain of thought still reach the reference answer?

The rule-based check always runs: the CoT must commit to an answer (``\\boxed{}`` or the
dataset's ``####`` marker; no last-number guess) equal to the reference. An LLM judge can be added
in the profile and is asked only about CoTs that passed it; a judge reply that was cut off or never
finished thinking is no verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from crv_dagster.agents.replies import parse_verdict
from crv_dagster.answers import answers_match, committed_answer
from crv_dagster.llm.base import ChatRequest, SamplingParams
from crv_dagster.llm.reply import read_reply
from crv_dagster.prompts import JUDGE_FIELDS, PromptTemplate, load_prompt


@dataclass(frozen=True)
class Verdict:
    passed: bool
    # passed | no_answer | wrong_answer | judge_rejected | judge_unreadable | judge_<reply problem>;
    # the Rethinker's own checks add truncated, not_expanded, ... (see crv.refine)
    reason: str
    extracted: str | None


def load_judge_prompt(name: str) -> PromptTemplate:
    return load_prompt(name, required=JUDGE_FIELDS)


class Verifier:
    def __init__(self, judge_backend=None, judge_prompt: PromptTemplate | None = None,
                 judge_params: SamplingParams | None = None, owns_judge_backend: bool = False):
        if (judge_backend is None) != (judge_prompt is None):
            raise ValueError("an LLM judge needs both a backend and a prompt")
        self.judge_backend = judge_backend
        # A judge on a backend of its own (not the agents') is closed with the Verifier.
        self.owns_judge_backend = owns_judge_backend
        self.judge_prompt = judge_prompt
        self.judge_params = judge_params or SamplingParams(max_new_tokens=4096)

    def close(self) -> None:
        if self.owns_judge_backend and self.judge_backend is not None:
            self.judge_backend.close()

    def __enter__(self) -> "Verifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def verify(self, items: Sequence[tuple[str, str, str]]) -> list[Verdict]:
        """Verdicts for (question, answer, cot) items."""
        verdicts = []
        for _, answer, cot in items:
            extracted = committed_answer(cot)
            if extracted is None:
                verdicts.append(Verdict(False, "no_answer", None))
            elif not answers_match(answer, extracted):
                verdicts.append(Verdict(False, "wrong_answer", extracted))
            else:
                verdicts.append(Verdict(True, "passed", extracted))
        if self.judge_backend is not None:
            verdicts = self._judge(items, verdicts)
        return verdicts

    def _judge(self, items, verdicts: list[Verdict]) -> list[Verdict]:
        ask = [i for i, v in enumerate(verdicts) if v.passed]
        requests = [
            ChatRequest.of([{"role": "user", "content": self.judge_prompt.render(
                question=items[i][0], answer=items[i][1], cot=items[i][2])}], self.judge_params)
            for i in ask
        ]
        out = list(verdicts)
        for i, completion in zip(ask, self.judge_backend.generate(requests)):
            reply = read_reply(completion)
            decision = parse_verdict(reply.content) if reply.usable else None
            if not reply.usable:
                out[i] = Verdict(False, f"judge_{reply.problem}", verdicts[i].extracted)
            elif decision is None:
                out[i] = Verdict(False, "judge_unreadable", verdicts[i].extracted)
            elif not decision:
                out[i] = Verdict(False, "judge_rejected", verdicts[i].extracted)
        return out
