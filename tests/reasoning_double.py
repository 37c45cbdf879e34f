"""A reasoning model at its worst, for tests: served over the OpenAI API by ``ChatServer``.

It replies the way QwQ-32B and DeepSeek-R1 do behind a chat template that opens ``<think>`` in
the prompt: thinking text with no opening tag, ``</think>``, then the answer. An agent's thinking
(``THINK_MARKER``) is long and misleading on purpose: it names every label, doubts the verdict and
tries wrong numbers, so any code that reads it as an answer gets the wrong one, and none of it may
reach a table. The teacher's thinking (``TRACE_MARKER``) is the data: it thinks at length, guesses
wrong, corrects itself (even a wrong ``\\boxed{}`` on the way) and only then writes a short solution.
Tokens are counted as words; a reply longer than the request's ``max_tokens`` is cut mid-sentence
with ``finish_reason == "length"``.

Each role (teacher, Critic, Rethinker, judge, error injection, student) is recognised from the
project's own prompt files, and misbehaves as real agents do: the teacher sometimes gets a problem
wrong or rambles past its budget, a first rewrite is sometimes a verdict on the original, no
rewrite at all, or a rewrite in ``<think>`` tags instead of the delimiters it was asked for, an
injected "mistake" sometimes keeps the right answer, a student sometimes never stops. Every
prompt is kept by role (``prompts``), so a test can read what each agent was shown. Which problem
gets which behaviour follows from a hash of the problem, so every run is the same; only first
rewrites take their misbehaviours in turn, in the order they arrive, so that a handful of them
shows every one.

Code problems (``programs``: question -> a right and a buggy program) get the same treatment in
code: the teacher's thinking drafts the buggy program in a fenced block before its answer gives
one, some answers end with the buggy program, a first rewrite sometimes "simplifies" the program
into the buggy one, and an injected bug sometimes leaves the program correct.
"""

from __future__ import annotations

import hashlib
import itertools
import re

from crv_dagster.formatting import CODE_FINISH, CODE_REFERENCE, INSTRUCTION
from crv_dagster.llm.base import Completion

THINK_MARKER = "Hmm, let me think"  # opens every agent's thought: a table holding it holds a musing
TRACE_MARKER = "Let me work through this problem"  # opens the teacher's trace: the data


def _hash(*parts: object) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def wrong(answer: str, k: int = 1) -> str:
    return str(int(answer) + k) if re.fullmatch(r"-?\d+", answer) else f"{answer}+{k}"


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0].strip()


class ReasoningDouble:
    model_id = "reasoning-double"

    def __init__(self, answers: dict[str, str], think_words: int = 120,
                 programs: dict[str, tuple[str, str]] | None = None):
        self.answers = answers  # question -> reference answer: the model "knows" the maths
        self.programs = programs or {}  # question -> (right program, buggy program)
        self.think_words = think_words
        self.calls: dict[str, int] = {}
        self.prompts: dict[str, list[str]] = {}
        # First rewrites take each misbehaviour in turn, so even a handful of them shows every one.
        self._first_rewrites = itertools.count()

    # -- the backend interface ChatServer drives -------------------------------------------

    def generate(self, requests, on_result=None):
        out = []
        for i, request in enumerate(requests):
            prompt = request.messages[-1][1]
            role, thinking, answer = self._reply(prompt, request.params.seed)
            self.calls[role] = self.calls.get(role, 0) + 1
            self.prompts.setdefault(role, []).append(prompt)
            text = f"{thinking}\n</think>\n\n{answer}" if thinking else answer
            completion = _budgeted(text, request.params.max_new_tokens)
            out.append(completion)
            if on_result:
                on_result(i, completion)
        return out

    def close(self) -> None:
        pass

    # -- roles ------------------------------------------------------------------------------

    def _reply(self, prompt: str, seed: int) -> tuple[str, str, str]:
        if "Reply with one word only: easy, medium or hard." in prompt:
            return "critic", *self._critic(prompt, seed)
        if "Reply with one word only: correct or incorrect." in prompt:
            return "judge", *self._judge(prompt)
        if "Expanded solution:" in prompt or "Simplified solution:" in prompt:
            return "rethink", *self._rethink(prompt)
        if "Solution with one mistake:" in prompt:
            return "inject", *self._inject(prompt)
        if prompt.startswith("Solve the following problem."):
            return "teacher", *self._teacher(prompt)
        if prompt.rstrip().endswith(INSTRUCTION):
            return "student", *self._student(prompt, seed)
        raise ValueError(f"the reasoning double does not know this prompt: {prompt[:200]!r}")

    def _think(self, topic: str, misleading: list[str], words: int | None = None) -> str:
        """A musing of about ``words`` words that keeps naming the misleading options."""
        words = words or self.think_words
        sentences = [f"{THINK_MARKER} about {topic}."]
        k = 0
        while sum(len(s.split()) for s in sentences) < words:
            option = misleading[k % len(misleading)]
            sentences.append(f"Maybe it is {option}, since the steps seem a bit difficult to follow because "
                             f"the numbers could also give {option}. Wait, no, let me check that again.")
            k += 1
        return " ".join(sentences)

    def _trace(self, answer: str, final: str) -> str:
        """A teacher's long thinking: wrong guesses, self-corrections, then the result it settles on."""
        paragraphs = [f"{TRACE_MARKER}. I write down every quantity the problem gives before combining them."]
        k = 1
        while sum(len(p.split()) for p in paragraphs) < self.think_words:
            guess = wrong(answer, k + 1)
            paragraphs += [f"A first try combines them in the order they appear and gives {guess}, "
                           f"so maybe the answer is \\boxed{{{guess}}}.",
                           f"Wait, that used one quantity twice. Going back over step {k} with the right quantity."]
            k += 1
        paragraphs += [f"Redoing the arithmetic carefully, one operation at a time, gives {final}.",
                       f"Let me double-check by working backwards from {final}: every quantity is used once. "
                       f"So it is {final}."]
        return "\n\n".join(paragraphs)

    def _teacher(self, prompt: str) -> tuple[str, str]:
        question = _between(prompt, "Problem:", "\u0000")
        if CODE_FINISH in prompt:
            return self._code_teacher(prompt)
        answer = self.answers[question]
        h = _hash("teacher", question)
        if h % 7 == 1:  # rambles until the budget runs out
            return self._think(question, [wrong(answer, 2), wrong(answer, -1)], words=10**5), ""
        final = wrong(answer, 5) if h % 6 == 0 else answer  # a teacher is not always right
        # A short solution after a long trace: what a reasoning model writes once it has thought.
        solution = "\n\n".join([f"Combining the quantities step by step gives {final}.",
                                  f"The answer is \\boxed{{{final}}}."])
        return self._trace(answer, final), solution

    def _program(self, prompt: str) -> tuple[str, str]:
        """The (right, buggy) programs of the code problem a prompt is about."""
        return next(programs for statement, programs in self.programs.items() if statement in prompt)

    def _code_teacher(self, prompt: str) -> tuple[str, str]:
        right, buggy = self._program(prompt)
        h = _hash("teacher", right)
        if h % 7 == 1:  # rambles until the budget runs out, drafting code as it goes
            return self._think("this problem", ["an off-by-one loop", "reading the input twice"], words=10**5), ""
        # The thinking drafts the buggy program: a reader of the thinking takes the wrong one.
        thinking = (f"{TRACE_MARKER}. The input is small, so a direct computation will do."
                    f"\n\nA first draft:\n```python\n{buggy}```\n\nWait, that misses a case. Let me fix it.")
        program = buggy if h % 6 == 0 else right
        cot = "\n\n".join([
            "First I work out what the input looks like and what must be printed or returned.",
            "Let me double-check the edge cases once more before writing the code.",
            "The program reads the input, computes the result directly and outputs it.",
            f"```python\n{program}```",
        ])
        return thinking, cot

    def _critic(self, prompt: str, seed: int) -> tuple[str, str]:
        cot = _between(prompt, "Worked solution:", "Reply with one word only")
        h = _hash("critic", cot)
        label = ("easy", "medium", "hard")[h % 3]
        # Some first attempts think past any sensible budget; a retry (another seed) settles.
        ramble = h % 4 == 0 and seed == 0
        thinking = self._think("whether this suits the student", ["hard", "easy", "medium"],
                               words=10**4 if ramble else None)
        form = {"easy": "easy", "medium": "**Medium**", "hard": "Label: hard"}[label]
        return thinking, form

    def _judge(self, prompt: str) -> tuple[str, str]:
        reference = _between(prompt, "Reference answer:", "\n")
        solution = _sections(_between(prompt, "Solution:", "Reply with one word only"))[1]
        boxed = re.findall(r"\\boxed\{([^{}]*)\}", solution)
        thinking = (f"{THINK_MARKER}: I need to check if this solution is correct. Let me verify each step. "
                    + self._think("the verdict", ["incorrect", "correct"], words=60))
        return thinking, "Correct" if boxed and boxed[-1] == reference else "Incorrect."

    def _rethink(self, prompt: str) -> tuple[str, str]:
        expand = "Expanded solution:" in prompt
        original = _between(prompt, "Original solution:", "Expanded solution:" if expand else "Simplified solution:")
        answer = _between(prompt, "Reference answer:", "\n")
        retry = "A previous rewrite" in prompt or "A previous reply" in prompt
        thinking = self._think("how to rewrite this", [wrong(answer, 3), "a shorter version", wrong(answer, 1)])
        trace, solution = _sections(original)
        h = next(self._first_rewrites) % 4 if not retry else None
        if h == 0:  # a verdict on the original instead of a solution
            verdict = (f"The answer is {answer}. The original solution was incorrect because it "
                       "skipped steps; a student would need more detail.")
            return thinking, _laid_out(trace, verdict)
        if h == 1:  # hands back the original as it was
            return thinking, original
        code = answer == CODE_REFERENCE
        if code and h is not None and _hash("bug", original) % 2 == 0:  # "simplifies" the program into the buggy one
            solution = solution.split("```python", 1)[0] + f"```python\n{self._program(prompt)[1]}```"
        if trace is None:
            return thinking, _rewritten(solution, expand)
        if h == 2:  # the rewrite in the student's <think> tags, not the delimiters asked for
            return thinking, f"<think>\n{_rewritten(trace, expand)}\n</think>\n\n{solution}"
        return thinking, _laid_out(_rewritten(trace, expand), solution)

    def _inject(self, prompt: str) -> tuple[str, str]:
        answer = _between(prompt, "Reference answer:", "\n")
        cot = _between(prompt, "Correct solution:", "Solution with one mistake:")
        trace, solution = _sections(cot)
        thinking = self._think(f"a mistake; the correct answer is {answer}", [answer, wrong(answer, 3)])
        if _hash("inject", cot) % 4 == 0:  # fails to make a mistake that changes the answer
            return thinking, cot
        if answer == CODE_REFERENCE:
            right, buggy = self._program(prompt)
            return thinking, _laid_out(trace, solution.replace(right.strip(), buggy.strip()))
        # The slip is made late in the reasoning and carried through to the solution's answer.
        if trace is not None:
            steps = trace.split("\n\n")
            trace = "\n\n".join(steps[:-2] + [p.replace(answer, wrong(answer, 3)) for p in steps[-2:]])
        return thinking, _laid_out(trace, solution.replace(answer, wrong(answer, 3)))

    def _student(self, prompt: str, seed: int) -> tuple[str, str]:
        question = prompt.rstrip()[: -len(INSTRUCTION)].strip()
        answer = self.answers.get(question, "0")
        if _hash("student", question) % 5 == 0:  # never stops
            return "", " ".join(["and then I add it again"] * 10**4)
        final = wrong(answer, 1) if seed % 2 == 0 else answer
        solution = f"I add the numbers as the problem says.\n\nSo the result is \\boxed{{{final}}}."
        if _hash("student", question) % 5 == 1:  # a student that thinks, guessing on the way
            return f"Maybe it is \\boxed{{{wrong(answer, 2)}}}? No, I misread a number.", solution
        return "", solution


def _sections(shown: str) -> tuple[str | None, str]:
    """(trace, solution) of a CoT as agents are shown it: in <reasoning> and <solution>, or a
    solution alone (trace None)."""
    if "<reasoning>" not in shown:
        return None, shown.strip()
    return _between(shown, "<reasoning>", "</reasoning>"), _between(shown, "<solution>", "</solution>")


def _laid_out(trace: str | None, solution: str) -> str:
    """A reply in the layout the agents are asked for."""
    if trace is None:
        return solution
    return f"<reasoning>\n{trace}\n</reasoning>\n\n<solution>\n{solution}\n</solution>"


def _rewritten(text: str, expand: bool) -> str:
    """Steps spelled out (each followed by an explanation) or the detours and re-checks removed; a
    fenced program is one step."""
    steps, fence = [], None
    for part in text.split("\n\n"):
        if fence is not None:
            fence += "\n\n" + part
        else:
            fence = part if part.count("```") % 2 else None
            if fence is None:
                steps.append(part)
                continue
        if fence.count("```") % 2 == 0:
            steps.append(fence)
            fence = None
    steps = [p for p in steps if p.strip()]
    if expand:
        body = [f"{p}\n\nIn other words, this step spells out what the previous one found, one detail at a time."
                for p in steps[:-1]]
        return "\n\n".join(body + steps[-1:])
    return "\n\n".join(p for p in steps if not p.startswith(("Let me double-check", "Wait,", "A first try")))


def _budgeted(text: str, max_tokens: int) -> Completion:
    words = list(re.finditer(r"\S+", text))
    if len(words) <= max_tokens:
        return Completion(text, "stop", completion_tokens=len(words))
    return Completion(text[: words[max_tokens - 1].end()], "length", completion_tokens=max_tokens)
