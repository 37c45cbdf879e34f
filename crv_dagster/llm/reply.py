"""The one place where a completion becomes usable content.

Reasoning models (QwQ, DeepSeek-R1 and their distills) think before they answer. Their chat
templates open ``<think>`` inside the prompt, so a reply is usually thinking text with no opening
tag, then ``</think>``, then the answer. A server started with ``--reasoning-parser`` moves the
thinking into its own field instead. When the token budget runs out mid-thought, the reply stops
with ``finish_reason == "length"`` and has no ``</think>`` at all.

Thinking mentions every label, verdict and number the model considered, so nothing in it may be
read as a decision. ``read_reply`` separates it out and says why a reply has no usable content:

- ``truncated``: the budget ran out (``finish_reason == "length"``); even text after ``</think>``
  is then an answer cut short;
- ``unfinished_thinking``: ``<think>`` opened and never closed, or a reasoning parser found no
  answer after the thinking;
- ``empty``: nothing but whitespace.

Every role (Critic, Rethinker, judge, error injection, teacher, student sampler, evaluation) reads
replies here, and counts the unusable ones by these reasons.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crv_dagster.llm.base import Completion

TRUNCATED = "truncated"
UNFINISHED_THINKING = "unfinished_thinking"
EMPTY = "empty"
UNREADABLE_REASONS = (TRUNCATED, UNFINISHED_THINKING, EMPTY)

_OPEN = re.compile(r"<think>", re.IGNORECASE)
_CLOSE = re.compile(r"</think>", re.IGNORECASE)


@dataclass(frozen=True)
class Reply:
    content: str  # the answer part; "" when the reply is unusable
    reasoning: str  # the thinking (for audit only, never parsed); a cut reply keeps all its text here
    problem: str | None  # None, or one of UNREADABLE_REASONS

    @property
    def usable(self) -> bool:
        return self.problem is None


def split_thinking(text: str) -> tuple[str, str, bool]:
    """(thinking, answer, finished): everything up to the last ``</think>`` is thinking.

    An opening ``<think>`` with no closing tag means the model was still thinking when it stopped.
    """
    closes = list(_CLOSE.finditer(text))
    thinking, answer = "", text
    if closes:
        last = closes[-1]
        thinking, answer = text[: last.start()], text[last.end():]
    opened = _OPEN.search(answer)
    if opened:  # a think block that never closed: the model stopped inside it
        return _OPEN.sub("", thinking + answer[opened.start():]).strip(), answer[: opened.start()].strip(), False
    return _OPEN.sub("", thinking).strip(), answer.strip(), True


def read_reply(completion: Completion) -> Reply:
    thinking, answer, finished = split_thinking(completion.text or "")
    reasoning = "\n\n".join(part for part in ((completion.reasoning or "").strip(), thinking) if part)
    if completion.finish_reason == "length":
        everything = "\n\n".join(part for part in (reasoning, answer) if part)
        return Reply("", everything, TRUNCATED)
    if not finished:
        return Reply("", reasoning, UNFINISHED_THINKING)
    if not answer:
        # A reasoning parser leaves the content empty when the thinking never ended.
        return Reply("", reasoning, UNFINISHED_THINKING if reasoning else EMPTY)
    return Reply(answer, reasoning, None)
