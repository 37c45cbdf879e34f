"""The Rethinker: rewrites a chain of thought to suit the student.

``easy`` (too terse) CoTs are expanded with the missing steps, ``hard`` (too convoluted) ones
simplified; ``medium`` ones are kept. The Rethinker is shown the whole CoT, trace and solution, in
the agents' delimiters and returns both in the same ones (``cot.read_layout``), never in
``<think>`` tags, which its own thinking uses. A rewrite must do what it was asked, measured on the
trace (on the solution of a CoT without one): an expansion has more tokens and no fewer steps
(paragraphs) than its original, a simplification fewer tokens and no more steps, and its solution
may not be a comment on the original instead of a solution, nor go on past its final answer or talk
about the rewriting (``trailing_text``). A retry is told why the previous rewrite failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable

from crv_dagster.agents.replies import clean_reasoning
from crv_dagster.answers import committed_answer_end
from crv_dagster.cot import NOT_IN_LAYOUT, agent_view, layout_instruction, parse, read_layout, solution_of
from crv_dagster.formatting import agent_fields, is_code
from crv_dagster.llm.base import ChatRequest, SamplingParams
from crv_dagster.llm.reply import Reply, read_reply
from crv_dagster.prompts import RETHINK_FIELDS, RETHINK_OPTIONAL, PromptTemplate, load_prompt


@dataclass(frozen=True)
class RewriteTask:
    question: str
    answer: str
    cot: str
    action: str  # expand | simplify
    feedback: str = ""


def load_rethinker_prompts(expand: str, simplify: str) -> dict[str, PromptTemplate]:
    return {
        "expand": load_prompt(expand, required=RETHINK_FIELDS, optional=RETHINK_OPTIONAL),
        "simplify": load_prompt(simplify, required=RETHINK_FIELDS, optional=RETHINK_OPTIONAL),
    }


def failure_feedback(reason: str, predicted: str | None, answer: str, detail: str = "") -> str:
    """What the next attempt is told about the previous one (``detail``: what the tests said)."""
    if reason == "no_answer" and is_code(answer):
        return ("A previous rewrite was rejected because it did not end with a program. "
                "End with the complete Python program in one ```python code block.")
    if reason == "no_answer":
        return ("A previous rewrite was rejected because it never stated a final answer. "
                "End with the final answer in \\boxed{}.")
    if reason == "tests_failed":
        return (f"A previous rewrite was rejected because its program failed the problem's tests ({detail}). "
                "Keep the original solution's program logic intact.")
    if reason == "wrong_answer":
        return (f"A previous rewrite was rejected because it concluded {predicted} instead of {answer}. "
                "Keep every step consistent with the original reasoning.")
    if reason == "truncated":
        return "A previous rewrite was cut off at the length limit. Be concise and do not repeat yourself."
    if reason == "unfinished_thinking":
        return "A previous attempt never finished thinking. Think briefly, then write the solution."
    if reason == NOT_EXPANDED:
        return ("A previous rewrite was not longer than the original. Add the missing intermediate steps, "
                "each in its own paragraph.")
    if reason == NOT_SIMPLIFIED:
        return "A previous rewrite was not shorter than the original. Remove detours and redundant checks."
    if reason == NOT_A_SOLUTION:
        return ("A previous reply commented on the original solution instead of solving the problem. "
                "Write only the solution itself, step by step.")
    if reason == TRAILING_TEXT:
        return ("A previous rewrite went on after its final answer or talked about the rewriting. End with the "
                "final answer and write nothing after it.")
    if reason == NOT_IN_LAYOUT:
        return ("A previous reply was not laid out as asked. Put the whole reasoning between <reasoning> and "
                "</reasoning> and the final solution between <solution> and </solution>, once each.")
    if reason == "judge_rejected":
        return "A previous rewrite was rejected by a reviewer as incorrect. Check every step."
    return "A previous rewrite was rejected. Check every step."


NOT_EXPANDED = "not_expanded"
NOT_SIMPLIFIED = "not_simplified"
NOT_A_SOLUTION = "not_a_solution"

# A rewrite that talks about the solution it was given is a review, not a solution.
_COMMENTARY = re.compile(
    r"\b(?:the|this|that)\s+(?:original|given|provided|previous|initial|above)\s+"
    r"(?:solution|reasoning|answer|attempt|response|chain of thought|cot)\b"
    r"|\b(?:solution|reasoning)\s+(?:is|was)\s+(?:not\s+)?(?:in)?correct\b",
    re.IGNORECASE,
)


_FENCED = re.compile(r"```.*?(?:```|$)", re.DOTALL)


def count_steps(text: str) -> int:
    """Paragraphs, a fenced code block counting as one (its blank lines are not steps)."""
    return sum(1 for part in _FENCED.sub("CODE", text).split("\n\n") if part.strip())


def count_words(text: str) -> int:
    return len(text.split())


def rewrite_problem(original: str, rewrite: str, action: str,
                    count_tokens: Callable[[str], int] = count_words) -> str | None:
    """Why a rewrite (a stored CoT) does not do what ``action`` asked of the stored CoT ``original``,
    or None when it does. Length and steps are the traces' when the original has one; a trace
    checks its own steps as it goes, so only the solution is read for commentary."""
    before, after = parse(original), parse(rewrite)
    if _COMMENTARY.search(after.solution):
        return NOT_A_SOLUTION
    old, new = before.measured, after.measured
    longer = count_tokens(new) > count_tokens(old)
    if action == "expand" and not (longer and count_steps(new) >= count_steps(old)):
        return NOT_EXPANDED
    shorter = count_tokens(new) < count_tokens(old)
    if action == "simplify" and not (shorter and count_steps(new) <= count_steps(old)):
        return NOT_SIMPLIFIED
    return None


TRAILING_TEXT = "trailing_text"

# Where the rule below ends the answer's sentence: a sentence mark followed by a space, or a new line.
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
_LAST_FENCE = re.compile(r"```[^\n]*\n.*?```", re.DOTALL)
# LaTeX that closes what the answer stands in (\end{aligned}) names an environment, not a word.
_LATEX_COMMAND = re.compile(r"\\(?:begin|end)\s*\{[^}]*\}|\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z0-9]+")
# Words about the rewriting itself, or addressed to whoever asked for it: a small agent's reply
# often ends with such a report ("your answer was expanded in 125 lines"), which is no step of a
# solution. Narrow on purpose: "rewrite the equation as" or "the simplified expression" are maths.
_META = re.compile(
    # Past tense only: "make sure your answer is an integer" is part of a solution.
    r"\byour\s+(?:answer|solution|response|reasoning|rewrite|explanation)\s+(?:was|were|has\s+been|had\s+been)\b"
    r"|\b(?:this|the|my|above)\s+rewrite\b(?!\s+(?:of|as)\b)"
    r"|\b(?:rewritten|revised|expanded|simplified|refined|improved)\s+"
    r"(?:version|solution|reasoning|explanation|response|chain of thought|cot)\b(?!\s+of\b)"
    r"|\b(?:I|we)\s+(?:have\s+)?(?:rewritten|rewrote|expanded|simplified|rephrased|revised)\s+"
    r"(?:the|this|your|my)\s+(?:original|solution|reasoning|explanation|answer|response|cot)\b"
    r"|\b(?:completed|written|expanded|simplified|done)\s+in\s+(?:only\s+)?\d+\s+(?:lines|words|tokens|paragraphs)\b",
    re.IGNORECASE,
)


def _words_after_answer(solution: str, answer: str) -> int | None:
    """Words in ``solution`` past its answer: for code, past the last fenced block (the program that
    is graded); for maths, past the sentence that holds the committed answer. Closing markup (``$``,
    ``\\]``, a fence) is no word. None when there is no answer to measure from."""
    if is_code(answer):
        fences = list(_LAST_FENCE.finditer(solution))
        end = fences[-1].end() if fences else None
    else:
        end = committed_answer_end(solution)
        if end is not None:
            stop = _SENTENCE_END.search(solution, end)
            end = stop.end() if stop else len(solution)
    if end is None:
        return None
    return len(_WORD.findall(_LATEX_COMMAND.sub(" ", solution[end:])))


def trailing_problem(original: str, rewrite: str, answer: str) -> str | None:
    """``trailing_text`` when a rewrite (or an injected error) of the stored CoT ``original`` goes on
    past its final answer, or talks about the rewriting; None otherwise.

    A solution ends with its answer's sentence (for code, its final program) unless the original
    itself went on after its answer (an explanation after the program, MATH's "I hope it is
    correct"): a rewrite may then do so too. Only the solution is read for the end; the whole
    rewrite, trace included, for words about the rewriting that the original does not have.
    """
    after = _words_after_answer(solution_of(rewrite), answer)
    if after and not _words_after_answer(solution_of(original), answer):
        return TRAILING_TEXT
    original_meta = {m.group(0).lower() for m in _META.finditer(original or "")}
    if any(m.group(0).lower() not in original_meta for m in _META.finditer(rewrite or "")):
        return TRAILING_TEXT
    return None


@dataclass(frozen=True)
class Rewrite:
    reply: Reply
    cot: str  # the rewrite as a stored CoT (student format); "" when there is none
    problem: str | None  # a reply problem (llm.reply) or NOT_IN_LAYOUT; None when ``cot`` is usable


def read_rewrite(reply: Reply, original: str) -> Rewrite:
    """A Rethinker (or error injector) reply as a CoT in the original's style."""
    if not reply.usable:
        return Rewrite(reply, "", reply.problem)
    cot = read_layout(reply.content, original, clean=clean_reasoning)
    if cot is None:
        return Rewrite(reply, "", NOT_IN_LAYOUT)
    return Rewrite(reply, cot.text, None)


class Rethinker:
    def __init__(self, backend, prompts: dict[str, PromptTemplate], params: SamplingParams,
                 retry_temperature: float = 0.7):
        self.backend = backend
        self.prompts = prompts
        self.params = params
        self.retry_temperature = retry_temperature

    def request(self, task: RewriteTask, student_size: str, attempt: int) -> ChatRequest:
        template = self.prompts[task.action]
        values = dict(question=task.question, cot=agent_view(task.cot), student_size=student_size,
                      layout=layout_instruction(task.cot), feedback=task.feedback, **agent_fields(task.answer))
        params = self.params
        if attempt > 1:
            params = replace(params, temperature=max(params.temperature, self.retry_temperature),
                             seed=params.seed + attempt - 1)
        return ChatRequest.of([{"role": "user", "content": template.render(**values)}], params)

    def rewrite(self, tasks: list[RewriteTask], student_size: str, attempt: int) -> list[Rewrite]:
        """The rewrite of each task, generated as one batch."""
        if not tasks:
            return []
        completions = self.backend.generate([self.request(t, student_size, attempt) for t in tasks])
        return [read_rewrite(read_reply(c), t.cot) for t, c in zip(tasks, completions)]
