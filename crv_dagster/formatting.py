"""The one prompt and answer format shared by SFT, preference pairs, evaluation and the agents.

A student is trained and evaluated on exactly the same chat prompt, so what it learns to do
(reason in paragraphs, end with \\boxed{}, or with one Python code block for a code problem) is
what evaluation asks of it.

A code problem has no reference answer: its ``answer`` is ``CODE_ANSWER`` and its tests are in the
problem's ``tests``. That one value is what marks a row of any table as a code problem.
"""

from __future__ import annotations

INSTRUCTION = "Reason step by step, then give the final answer in \\boxed{}."
# Code problems are answered with a program, read from the reply's last fenced block.
CODE_INSTRUCTION = "Reason step by step, then give your complete Python solution in one ```python code block."

CODE_ANSWER = "passes every test"

# How a solution ends, and what an agent is told the reference is, in the agents' prompts
# ({finish} and {answer}).
BOXED_FINISH = "Finish with the final answer inside \\boxed{}."
CODE_FINISH = "Finish with the complete Python program in one ```python code block."
CODE_REFERENCE = "none; the program at the end is checked by running the problem's tests"


def is_code(answer: object) -> bool:
    return answer == CODE_ANSWER


def prompt_messages(question: str, code: bool = False) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{question.strip()}\n\n{CODE_INSTRUCTION if code else INSTRUCTION}"}]


def student_messages(question: str, answer: str) -> list[dict[str, str]]:
    """The student's prompt for a problem with reference ``answer`` (the code instruction for code)."""
    return prompt_messages(question, code=is_code(answer))


def agent_fields(answer: str) -> dict[str, str]:
    """The {answer} and {finish} of an agent prompt for a problem with reference ``answer``."""
    if is_code(answer):
        return {"answer": CODE_REFERENCE, "finish": CODE_FINISH}
    return {"answer": answer, "finish": BOXED_FINISH}
