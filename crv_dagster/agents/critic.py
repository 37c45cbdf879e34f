"""The Critic: judges each chain of thought from the perspective of a student of a given size."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from crv_dagster.agents.replies import parse_label
from crv_dagster.cot import agent_view
from crv_dagster.formatting import agent_fields
from crv_dagster.llm.base import ChatBackend, ChatRequest, SamplingParams
from crv_dagster.llm.reply import read_reply
from crv_dagster.prompts import CRITIC_FIELDS, PromptTemplate, load_prompt
from crv_dagster.vocabulary import UNPARSED

NO_LABEL = "no_label"  # a complete reply that names no single label


@dataclass(frozen=True)
class Judgement:
    label: str  # easy | medium | hard | unparsed
    reply: str  # the content of the last reply (no thinking)
    reasoning: str  # the thinking of the last reply, for audit
    attempts: int
    unreadable: tuple[str, ...] = ()  # why each unread attempt was unread: a reply problem or no_label


def load_critic_prompt(name: str) -> PromptTemplate:
    return load_prompt(name, required=CRITIC_FIELDS)


class Critic:
    def __init__(self, backend: ChatBackend, prompt: PromptTemplate, params: SamplingParams,
                 max_retries: int = 2, retry_temperature: float = 0.7):
        self.backend = backend
        self.prompt = prompt
        self.params = params
        self.max_retries = max_retries
        self.retry_temperature = retry_temperature

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def request(self, question: str, answer: str, cot: str, student_size: str, attempt: int = 1) -> ChatRequest:
        # The whole CoT is judged: its trace and its solution, in delimiters the agent's own thinking
        # tags cannot be confused with.
        text = self.prompt.render(question=question, cot=agent_view(cot), student_size=student_size,
                                  **agent_fields(answer))
        params = self.params
        if attempt > 1:
            # Same prompt, so only sampling can change the reply; the seed keeps each retry distinct.
            params = replace(params, temperature=max(params.temperature, self.retry_temperature),
                             seed=params.seed + attempt - 1)
        return ChatRequest.of([{"role": "user", "content": text}], params)

    def judge(self, items: Sequence[tuple[str, str, str]], student_size: str) -> list[Judgement]:
        """Labels for (question, answer, cot) items; all items of a round go out as one batch."""
        replies: list = [None] * len(items)
        labels: list[str | None] = [None] * len(items)
        attempts = [0] * len(items)
        unreadable: list[list[str]] = [[] for _ in items]
        pending = list(range(len(items)))
        for attempt in range(1, self.max_retries + 2):
            if not pending:
                break
            requests = [self.request(*items[i], student_size=student_size, attempt=attempt) for i in pending]
            for i, completion in zip(pending, self.backend.generate(requests)):
                reply = read_reply(completion)
                replies[i], attempts[i] = reply, attempt
                # A cut or unfinished reply is never parsed: its text is a musing over every label.
                labels[i] = parse_label(reply.content) if reply.usable else None
                if labels[i] is None:
                    unreadable[i].append(reply.problem or NO_LABEL)
            pending = [i for i in pending if labels[i] is None]
        return [Judgement(label or UNPARSED, reply.content, reply.reasoning, n, tuple(why))
                for label, reply, n, why in zip(labels, replies, attempts, unreadable)]


class StudentCritic:
    """Labels by the student's own NLL of each CoT (``student_view.labels_by_nll``); no model call.
    ``nll`` holds the values of the items it will judge, in order."""

    def __init__(self, nll: Sequence[float], model_id: str):
        self.nll = list(nll)
        self.model_id = f"student-nll:{model_id}"

    def judge(self, items: Sequence[tuple[str, str, str]], student_size: str) -> list[Judgement]:
        from crv_dagster.agents.student_view import labels_by_nll

        if len(items) != len(self.nll):
            raise ValueError(f"the student critic has {len(self.nll)} NLL values for {len(items)} CoTs")
        return [Judgement(label, "", "", 1) for label in labels_by_nll(self.nll)]
