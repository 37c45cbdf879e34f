"""Reading the content of an agent's reply: labels, verdicts and rewritten reasoning.

These parsers take the *content* of a reply, after ``llm.reply.read_reply`` has removed the
thinking and refused truncated replies. Models still do not always answer in the requested form
(pleasantries, markdown), so the parsers are lenient about form and strict about meaning: a reply
that names two different labels is unreadable, not guessed at.
"""

from __future__ import annotations

import re

from crv_dagster.vocabulary import LABELS

# Words a judge uses for each label when it does not use the label itself.
_LABEL_WORDS = {
    "easy": ("easy", "too simple", "too terse", "too brief", "oversimplified", "overly simplistic", "simplistic"),
    "medium": ("medium", "moderate", "appropriate", "suitable", "just right", "well balanced", "well-balanced"),
    "hard": ("hard", "too complex", "too complicated", "overly complex", "convoluted", "too difficult", "difficult"),
}
_DECORATION = re.compile(r"[*_`\"'.!:\[\]()]")


def parse_label(reply: str | None) -> str | None:
    """``easy``, ``medium`` or ``hard`` when the reply commits to exactly one, else None."""
    if not reply:
        return None
    text = reply.strip().lower()
    if not text:
        return None
    bare = _DECORATION.sub("", text).strip()
    if bare in LABELS:
        return bare
    # An explicit "label: x" / "answer: x" / "classification is x" wins over passing mentions.
    explicit = re.findall(r"(?:label|answer|classification|rating|verdict|difficulty)\W{0,5}(?:is\W+)?(easy|medium|hard)\b", text)
    if explicit and len(set(explicit)) == 1:
        return explicit[0]
    found = {label for label, words in _LABEL_WORDS.items()
             for word in words if re.search(rf"\b{re.escape(word)}\b", text)}
    return found.pop() if len(found) == 1 else None


def parse_verdict(reply: str | None) -> bool | None:
    """A judge's verdict: True for correct, False for incorrect, None when unreadable."""
    if not reply:
        return None
    text = reply.strip().lower()
    bare = _DECORATION.sub("", text).strip()
    if bare in ("yes", "no"):
        return bare == "yes"
    negative = re.search(r"\b(incorrect|not correct|wrong|invalid|false)\b", text)
    positive = re.search(r"\b(correct|right|valid|true)\b", _strip_negated(text))
    if negative and not positive:
        return False
    if positive and not negative:
        return True
    return None


def _strip_negated(text: str) -> str:
    return re.sub(r"\b(incorrect|not correct)\b", " ", text)


_PREAMBLE = re.compile(r"^(here is|here's|sure|certainly|below is|okay|ok)\b[^\n]*\n+", re.IGNORECASE)


# A whole reply wrapped in one fence of prose (none, text, markdown): the fence is packaging.
_WRAPPED = re.compile(r"^```(?:text|markdown|md)?\n(.*)\n```$", re.DOTALL)


def clean_reasoning(reply: str) -> str:
    """The reasoning in a Rethinker reply's content: no wrapping fence or leading preamble. A
    program's fence, or a reply that merely ends with a program, is kept as it is."""
    text = reply.strip()
    wrapped = _WRAPPED.match(text)
    if wrapped and "```" not in wrapped.group(1):
        text = wrapped.group(1)
    text = _PREAMBLE.sub("", text, count=1)
    return text.strip()
