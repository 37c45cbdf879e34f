"""The Rethinker: rewrites a chain of thought to suit the student.

``easy`` (too terse) CoTs are expanded with the missing steps, ``hard`` (too convoluted) ones
simplified; ``medium`` ones are kept. A retry is told why the previous rewrite failed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from crv_dagster.agents.replies import clean_reasoning
from crv_dagster.llm.base import ChatRequest, SamplingParams
from crv_dagster.prompts import PromptTemplate, load_prompt

ACTION_FOR_LABEL = {"easy": "expand", "hard": "simplify", "medium": "keep"}
RETHINK_FIELDS = {"question", "answer", "cot", "student_size"}


@dataclass(frozen=True)
class RewriteTask:
    question: str
    answer: str
    cot: str
    action: str  # expand | simplify
    feedback: str = ""


def load_rethinker_prompts(expand: str, simplify: str) -> dict[str, PromptTemplate]:
    return {
        "expand": load_prompt(expand, required=RETHINK_FIELDS, optional={"feedback"}),
        "simplify": load_prompt(simplify, required=RETHINK_FIELDS, optional={"feedback"}),
    }


def failure_feedback(reason: str, predicted: str | None, answer: str) -> str:
    """What the next attempt is told about the previous one."""
    if reason == "no_answer":
        return ("A previous rewrite was rejected because it never stated a final answer. "
                "End with the final answer in \\boxed{}.")
    if reason == "wrong_answer":
        return (f"A previous rewrite was rejected because it concluded {predicted} instead of {answer}. "
                "Keep every step consistent with the original reasoning.")
    if reason == "truncated":
        return "A previous rewrite was cut off at the length limit. Be concise and do not repeat yourself."
    if reason == "judge_rejected":
        return "A previous rewrite was rejected by a reviewer as incorrect. Check every step."
    return "A previous rewrite was rejected. Check every step."


class Rethinker:
    def __init__(self, backend, prompts: dict[str, PromptTemplate], params: SamplingParams,
                 retry_temperature: float = 0.7, reject_truncated: bool = True):
        self.backend = backend
        # A rewrite cut off by the token limit is usually a loop; it is not a complete CoT.
        self.reject_truncated = reject_truncated
        self.prompts = prompts
        self.params = params
        self.retry_temperature = retry_temperature

    def request(self, task: RewriteTask, student_size: str, attempt: int) -> ChatRequest:
        template = self.prompts[task.action]
        values = dict(question=task.question, answer=task.answer, cot=task.cot, student_size=student_size)
        if "feedback" in template.fields:
            values["feedback"] = task.feedback
        params = self.params
        if attempt > 1:
            params = replace(params, temperature=max(params.temperature, self.retry_temperature),
                             seed=params.seed + attempt - 1)
        return ChatRequest.of([{"role": "user", "content": template.render(**values)}], params)

    def rewrite(self, tasks: list[RewriteTask], student_size: str, attempt: int) -> list[tuple[str, bool]]:
        """(rewrite, whether it hit the length limit) per task, generated as one batch."""
        if not tasks:
            return []
        completions = self.backend.generate([self.request(t, student_size, attempt) for t in tasks])
        return [(clean_reasoning(c.text), c.finish_reason == "length") for c in completions]
