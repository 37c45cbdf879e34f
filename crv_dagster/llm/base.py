"""The one interface every text-generation backend implements.

A backend turns a batch of chat requests into completions. It may report each finished item
through ``on_result`` as soon as it has it, which is what lets the response cache persist work
item by item, so a killed run loses at most the batch in flight.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol, Sequence

Message = dict[str, str]


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    # Stop a reply once its final answer (a closed \boxed{}, outside any <think> section) is written:
    # a hint the local transformers backend follows to save CPU time; servers get no such stop.
    stop_at_answer: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[tuple[str, str], ...]
    params: SamplingParams = field(default_factory=SamplingParams)

    @classmethod
    def of(cls, messages: Sequence[Message], params: SamplingParams | None = None) -> "ChatRequest":
        return cls(tuple((m["role"], m["content"]) for m in messages), params or SamplingParams())

    def message_dicts(self) -> list[Message]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def canonical(self) -> str:
        """A stable text form of the request, the basis of its cache key."""
        params = asdict(self.params)
        if not params["stop_at_answer"]:  # requests made before it existed keep their cache keys
            del params["stop_at_answer"]
        return json.dumps({"messages": self.message_dicts(), "params": params}, sort_keys=True)


@dataclass(frozen=True)
class Completion:
    """What a backend returned, untouched: read it through ``llm.reply.read_reply``.

    ``reasoning`` is filled only by servers that split a reasoning model's thinking into its own
    response field (``vllm serve --reasoning-parser``); otherwise the thinking is inside ``text``.
    """

    text: str
    finish_reason: str = "stop"  # "stop" or "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> "Completion":
        return cls(**json.loads(raw))


ResultCallback = Callable[[int, Completion], None]


class ChatBackend(Protocol):
    """Batched chat generation. ``model_id`` names the model for the response cache."""

    @property
    def model_id(self) -> str: ...

    def generate(
        self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None
    ) -> list[Completion]: ...

    def close(self) -> None: ...


class BackendError(RuntimeError):
    """A backend that could not produce a completion after its retries."""
