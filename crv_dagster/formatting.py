"""The one prompt and answer format shared by SFT, preference pairs and evaluation.

A student is trained and evaluated on exactly the same chat prompt, so what it learns to do
(reason in paragraphs, end with \\boxed{}) is what evaluation asks of it.
"""

from __future__ import annotations

INSTRUCTION = "Reason step by step, then give the final answer in \\boxed{}."


def prompt_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{question.strip()}\n\n{INSTRUCTION}"}]


def completion_messages(cot: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": cot.strip()}]
