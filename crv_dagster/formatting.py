"""The one prompt and answer format shared by SFT, preference pairs and evaluation.

A student is trained and evaluated on exactly the same chat prompt, so what it learns to do
(reason in paragraphs, end with \\boxed{}) is what evaluation asks of it.
"""

from __future__ import annotations

INSTRUCTION = "Reason step by step, then give the final answer in \\boxed{}."
# Code problems are answered with a program, read from the reply's last fenced block.
CODE_INSTRUCTION = "Reason step by step, then give your complete Python solution in one ```python code block."


def prompt_messages(question: str, code: bool = False) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{question.strip()}\n\n{CODE_INSTRUCTION if code else INSTRUCTION}"}]


def completion_messages(cot: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": cot.strip()}]
