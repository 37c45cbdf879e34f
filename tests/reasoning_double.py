"""A reasoning model at its worst, for tests: served over the OpenAI API by ``ChatServer``.

It replies the way QwQ-32B and DeepSeek-R1 do behind a chat template that opens ``<think>`` in
the prompt: thinking text with no opening tag, ``</think>``, then the answer. The thinking is
long and misleading on purpose: it names every label, doubts the verdict and tries wrong numbers,
so any code that reads it as an answer gets the wrong one. Tokens are counted as words; a reply
longer than the request's ``max_tokens`` is cut mid-sentence with ``finish_reason == "length"``.

Each role (teacher, Critic, Rethinker, judge, error injection, student) is recognised from the
project's own prompt files, and misbehaves as real agents do: the teacher sometimes gets a problem
wrong or rambles past its budget, a first rewrite is sometimes a verdict on the original or no
rewrite at all, an injected "mistake" sometimes keeps the right answer, a student sometimes
never stops. Which problem gets which behaviour follows from a hash of the problem, so every run
is the same.

Code problems (``programs``: question -> a right and a buggy program) get the same treatment in
code: the teacher's thinking drafts the buggy program in a fenced block before its answer gives
one, some answers end with the buggy program, a first rewrite sometimes "simplifies" the program
into the buggy one, and an injected bug sometimes leaves the program correct.
"""

from __future__ import annotations

import hashlib
import re

from crv_dagster.formatting import CODE_FINISH, CODE_REFERENCE, INSTRUCTION
from crv_dagster.llm.base import Completion

THINK_MARKER = "Hmm, let me think"  # opens every thought: a table holding it holds thinking text


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

    # -- the backend interface ChatServer drives -------------------------------------------

    def generate(self, requests, on_result=None):
        out = []
        for i, request in enumerate(requests):
            prompt = request.messages[-1][1]
            role, thinking, answer = self._reply(prompt, request.params.seed)
            self.calls[role] = self.calls.get(role, 0) + 1
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

    def _teacher(self, prompt: str) -> tuple[str, str]:
        question = _between(prompt, "Problem:", "\u0000")
        if CODE_FINISH in prompt:
            return self._code_teacher(prompt)
        answer = self.answers[question]
        h = _hash("teacher", question)
        if h % 7 == 1:  # rambles until the budget runs out
            return self._think(question, [wrong(answer, 2), wrong(answer, -1)], words=10**5), ""
        final = wrong(answer, 5) if h % 6 == 0 else answer  # a teacher is not always right
        thinking = self._think("this problem", [wrong(answer, 2), "the answer", wrong(answer, -1)])
        cot = "\n\n".join([
            "First I read the problem and write down the quantities it gives.",
            "Let me double-check the quantities once more before going on, to be sure nothing was missed.",
            f"Working through the arithmetic step by step leads to {final}.",
            f"Wait, let me verify this by redoing the computation: it is {final} again.",
            f"The answer is \\boxed{{{final}}}.",
        ])
        return thinking, cot

    def _program(self, prompt: str) -> tuple[str, str]:
        """The (right, buggy) programs of the code problem a prompt is about."""
        return next(programs for statement, programs in self.programs.items() if statement in prompt)

    def _code_teacher(self, prompt: str) -> tuple[str, str]:
        right, buggy = self._program(prompt)
        h = _hash("teacher", right)
        if h % 7 == 1:  # rambles until the budget runs out, drafting code as it goes
            return self._think("this problem", ["an off-by-one loop", "reading the input twice"], words=10**5), ""
        # The thinking drafts the buggy program: a reader of the thinking takes the wrong one.
        thinking = (self._think("this problem", ["a loop", "a formula"])
                    + f"\n\nA first draft:\n```python\n{buggy}```\nWait, that misses a case.")
        program = buggy if h % 6 == 0 else right
        cot = "\n\n".join([
            "First I work out what the input looks like and what must be printed or returned.",
            "Let me double-check the edge cases once more before writing the code.",
            "The program reads the input, computes the result directly and outputs it.",
            f"```python\n{program}```",
        ])
        return thinking, cot

    def _critic(self, prompt: str, seed: int) -> tuple[str, str]:
        cot = _between(prompt, "Solution:", "Reply with one word only")
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
        solution = _between(prompt, "Solution:", "Reply with one word only")
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
        h = _hash("rethink", original)
        if not retry and h % 3 == 0:  # a verdict on the original instead of a solution
            return thinking, (f"The answer is {answer}. The original solution was incorrect because it "
                              "skipped steps; a student would need more detail.")
        if not retry and h % 3 == 1:  # hands back the original as it was
            return thinking, original
        code = answer == CODE_REFERENCE
        if code:  # a fenced program is one step, whatever blank lines it holds
            prose, program = original.split("```python", 1)
            steps = [p for p in prose.split("\n\n") if p.strip()] + ["```python" + program]
            if not retry and h % 5 == 2:  # "simplifies" the program into the buggy one
                steps[-1] = f"```python\n{self._program(prompt)[1]}```"
        else:
            steps = [p for p in original.split("\n\n") if p.strip()]
        if expand:
            body = [f"{p}\n\nIn other words, this step spells out what the previous one found, one detail at a time."
                    for p in steps[:-1]]
            return thinking, "\n\n".join(body + steps[-1:])
        kept = [p for p in steps if not p.startswith(("Let me double-check", "Wait,"))]
        return thinking, "\n\n".join(kept)

    def _inject(self, prompt: str) -> tuple[str, str]:
        answer = _between(prompt, "Reference answer:", "\n")
        cot = _between(prompt, "Correct solution:", "Solution with one mistake:")
        thinking = self._think(f"a mistake; the correct answer is {answer}", [answer, wrong(answer, 3)])
        if _hash("inject", cot) % 4 == 0:  # fails to make a mistake that changes the answer
            return thinking, cot
        if answer == CODE_REFERENCE:
            right, buggy = self._program(prompt)
            return thinking, cot.replace(right.strip(), buggy.strip())
        return thinking, cot.replace(answer, wrong(answer, 3))

    def _student(self, prompt: str, seed: int) -> tuple[str, str]:
        question = prompt.rstrip()[: -len(INSTRUCTION)].strip()
        answer = self.answers.get(question, "0")
        if _hash("student", question) % 5 == 0:  # never stops
            return "", " ".join(["and then I add it again"] * 10**4)
        final = wrong(answer, 1) if seed % 2 == 0 else answer
        return "", f"I add the numbers as the problem says.\n\nSo the result is \\boxed{{{final}}}."


def _budgeted(text: str, max_tokens: int) -> Completion:
    words = list(re.finditer(r"\S+", text))
    if len(words) <= max_tokens:
        return Completion(text, "stop", completion_tokens=len(words))
    return Completion(text[: words[max_tokens - 1].end()], "length", completion_tokens=max_tokens)
