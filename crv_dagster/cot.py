"""A chain of thought is a reasoning trace plus a solution.

The paper distils a reasoning model's long thinking, so the trace is the data, not a by-product.
Every table stores a CoT as text in one **student format** (R1 style), which is what SFT trains on,
what a preference pair holds and what the student writes at evaluation::

    <think>
    {trace}
    </think>

    {solution, ending in the committed answer}

A CoT whose source gave no trace (a teacher that does not think, a dataset of short solutions) is
its solution alone, with no think block; the profile's ``cot.trace`` can instead give every CoT a
think block (empty where there was no trace) or set every trace aside (``always`` / ``never``).

Agents never see the ``<think>`` tags: a reasoning agent's own reply is *its* thinking, ``</think>``,
then its content, so a CoT shown or asked for with the same tags would mix the two. Agents see a
CoT in delimiters this module controls (``<reasoning>`` and ``<solution>``), are asked for rewrites
in the same ones, and the reply's content is converted back to the student format here.

Datasets of long CoTs come in two public formats, both read into the same form: ``<think>…</think>``
then the solution (DeepSeek-R1 distills, OpenThoughts) and ``<|begin_of_thought|>…<|end_of_thought|>``
with ``<|begin_of_solution|>…<|end_of_solution|>`` (Sky-T1, Bespoke-Stratos).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from crv_dagster.llm.reply import split_thinking

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TraceMode = Literal["auto", "always", "never"]

# A rewrite or injected error whose reply is not in the layout it was asked for.
NOT_IN_LAYOUT = "not_in_layout"


@dataclass(frozen=True)
class Cot:
    solution: str
    trace: str | None = None  # None: no think block at all; "": an empty one

    @property
    def has_trace(self) -> bool:
        return bool(self.trace and self.trace.strip())

    def with_mode(self, mode: TraceMode) -> "Cot":
        """This CoT under the profile's ``cot.trace``: as it is, always with a block, or never."""
        if mode == "never":
            return Cot(self.solution)
        if mode == "always" and self.trace is None:
            return Cot(self.solution, "")
        return self

    @property
    def text(self) -> str:
        """The student format."""
        if self.trace is None:
            return self.solution.strip()
        return f"{THINK_OPEN}\n{self.trace.strip()}\n{THINK_CLOSE}\n\n{self.solution.strip()}"

    @property
    def measured(self) -> str:
        """What a rewrite is measured on (longer, shorter, steps): the trace, or a lone solution."""
        return self.trace if self.has_trace else self.solution


def parse(text: str | None) -> Cot:
    """A CoT stored in the student format (or a plain solution) as its parts.

    The solution is what follows the *last* ``</think>``: a trace may quote the tag, a solution never
    holds it (``read_reply`` and ``read_layout`` make sure of that). The opening tag may be missing:
    a completion after a generation prompt that opened it (``adjusted_completion``).
    """
    text = (text or "").strip()
    head, close, solution = text.rpartition(THINK_CLOSE)
    if not close:
        return Cot(text)
    trace = head[len(THINK_OPEN):] if head.startswith(THINK_OPEN) else head
    return Cot(solution.strip(), trace.strip())


def solution_of(text: str | None) -> str:
    """The solution of a stored CoT: the only part whose answer or program is ever graded."""
    return parse(text).solution


# --------------------------------------------------------------------------- dataset formats

_SKY_THOUGHT = re.compile(r"<\|begin_of_thought\|>(.*?)<\|end_of_thought\|>", re.DOTALL)
_SKY_SOLUTION = re.compile(r"<\|begin_of_solution\|>(.*?)<\|end_of_solution\|>", re.DOTALL)
_THINK_CLOSE = re.compile(re.escape(THINK_CLOSE), re.IGNORECASE)
_THINK_OPEN = re.compile(re.escape(THINK_OPEN), re.IGNORECASE)


class CotFormatError(ValueError):
    def __init__(self, message: str, status: str):
        super().__init__(message)
        self.status = status  # as raw_cots' cot_status: unfinished_thinking or empty


def from_dataset(text: str) -> Cot:
    """A dataset's CoT in either public long-CoT format, or a plain solution (no trace).

    Raises CotFormatError for a trace that opens and never closes, or a Sky-T1 record with no
    solution: a cut record is not a CoT.
    """
    text = text.strip()
    if "<|begin_of_thought|>" in text:
        thought = _SKY_THOUGHT.search(text)
        if "<|end_of_thought|>" not in text:
            raise CotFormatError("<|begin_of_thought|> is never closed by <|end_of_thought|>", "unfinished_thinking")
        after = text.split("<|end_of_thought|>", 1)[1]
        if "<|begin_of_solution|>" in after and "<|end_of_solution|>" not in after:
            raise CotFormatError("<|begin_of_solution|> is never closed by <|end_of_solution|>", "truncated")
        solution = _SKY_SOLUTION.search(after)
        body = solution.group(1) if solution else after
        if not body.strip():
            raise CotFormatError("no solution after <|end_of_thought|>", "empty")
        return Cot(body.strip(), thought.group(1).strip())
    # R1 style, read as a reasoning model's reply is (the opening tag may be absent: it was in the prompt).
    trace, solution, finished = split_thinking(text)
    if not finished:
        raise CotFormatError("<think> is never closed by </think>", "unfinished_thinking")
    if not _THINK_CLOSE.search(text):
        return Cot(text)
    if not solution:
        raise CotFormatError("no solution after </think>", "empty")
    return Cot(solution, trace)


# --------------------------------------------------------------------------- what agents see and write

_SECTION = {name: re.compile(rf"<{name}>\s*(.*?)\s*</{name}>", re.DOTALL | re.IGNORECASE)
            for name in ("reasoning", "solution")}


def agent_view(text: str) -> str:
    """A stored CoT as an agent is shown it: the trace and the solution in our own delimiters, or
    the solution alone when there is no trace."""
    cot = parse(text)
    if not cot.has_trace:
        return cot.solution
    return f"<reasoning>\n{cot.trace.strip()}\n</reasoning>\n\n<solution>\n{cot.solution.strip()}\n</solution>"


def layout_instruction(text: str) -> str:
    """How an agent must lay out a rewrite of the stored CoT ``text`` (a prompt's ``{layout}``)."""
    if not parse(text).has_trace:
        return "Write only the solution itself: no introduction and no comments about the rewrite."
    return ("Write the whole reasoning between <reasoning> and </reasoning>, then the final solution between "
            "<solution> and </solution>, as the original is laid out. No introduction and no comments about "
            "the rewrite.")


def read_layout(content: str, original: str, clean=lambda s: s.strip()) -> Cot | None:
    """An agent's rewrite (the *content* of its reply, thinking removed) of the stored CoT
    ``original``, as a CoT in the original's style; None when it is not in the layout asked for.

    ``clean`` tidies a lone solution (a wrapping fence, a "Here is" preamble); delimited parts are
    taken as they are, since a trace may well open with "Okay, ...".
    """
    before = parse(original)
    if not before.has_trace:
        solution = clean(content)
        if not solution or _THINK_OPEN.search(solution) or _THINK_CLOSE.search(solution):
            return None
        return Cot(solution, before.trace)
    parts = {}
    for name, pattern in _SECTION.items():
        found = pattern.findall(content)
        if len(found) != 1 or not found[0].strip():
            return None
        parts[name] = found[0].strip()
    if any(_THINK_OPEN.search(p) or _THINK_CLOSE.search(p) for p in parts.values()):
        return None
    return Cot(parts["solution"], parts["reasoning"])


def adjusted_completion(prompt: str, completion: str) -> str:
    """A CoT as the completion of ``prompt``: a chat template whose generation prompt already opens
    ``<think>`` (DeepSeek-R1 distills, QwQ) must not see it opened twice."""
    if not prompt.rstrip().endswith(THINK_OPEN):
        return completion
    if completion.startswith(THINK_OPEN):
        return completion[len(THINK_OPEN):].lstrip("\n")
    # A CoT with no trace closes the block the template opened, as an empty trace would.
    return f"{THINK_CLOSE}\n\n{completion}"
