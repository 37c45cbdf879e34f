"""Prompt templates: text files under ``assets_config/prompts/`` with ``{placeholder}`` fields.

Only lower-case identifiers in single braces are placeholders, so LaTeX such as ``\\boxed{}``
can be written as it is. Templates are checked when loaded: a required placeholder that is
missing, or one the caller does not know, is an error naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# assets_config/prompts/ beside the package (config.CONFIG_DIR; not imported, so that the profile
# loader can check prompts without a cycle).
PROMPTS_DIR = Path(__file__).resolve().parent.parent / "assets_config" / "prompts"

# The placeholders each kind of template must have, and those it may have.
TEACHER_FIELDS = {"question"}
# {finish}: how a solution ends, \boxed{} or a code block (formatting.agent_fields).
TEACHER_OPTIONAL = {"finish"}
CRITIC_FIELDS = {"question", "answer", "cot", "student_size"}
RETHINK_FIELDS = {"question", "answer", "cot", "student_size"}
# {layout}: how the reply lays out a rewrite: the reasoning and the solution in their own delimiters
# when the CoT has a trace, the solution alone when it has none (cot.layout_instruction).
RETHINK_OPTIONAL = {"feedback", "finish", "layout"}
JUDGE_FIELDS = {"question", "answer", "cot"}
INJECT_FIELDS = {"question", "answer", "cot"}
INJECT_OPTIONAL = {"finish", "layout"}
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class PromptError(ValueError):
    pass


@dataclass(frozen=True)
class PromptTemplate:
    path: Path
    text: str
    fields: frozenset[str]

    def render(self, **values: object) -> str:
        missing = self.fields - values.keys()
        if missing:
            raise PromptError(f"{self.path}: no value given for {sorted(missing)}")
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), self.text)


def load_prompt(name: str | Path, required: set[str], optional: set[str] = frozenset()) -> PromptTemplate:
    path = Path(name)
    if not path.is_absolute():
        path = PROMPTS_DIR / path
    if not path.is_file():
        raise PromptError(f"{path}: prompt template not found")
    text = path.read_text().strip() + "\n"
    fields = frozenset(_PLACEHOLDER.findall(text))
    if missing := required - fields:
        raise PromptError(f"{path}: missing placeholder(s) {sorted('{' + f + '}' for f in missing)}")
    if unknown := fields - required - set(optional):
        raise PromptError(f"{path}: unknown placeholder(s) {sorted('{' + f + '}' for f in unknown)}; "
                          f"allowed: {sorted(required | set(optional))}")
    return PromptTemplate(path, text, fields)
