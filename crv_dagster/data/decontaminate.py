"""Keeping evaluation problems out of training, and one problem out of training twice.

Texts are compared after normalisation (Unicode compatibility forms, case, LaTeX spacing and
delimiters, punctuation, whitespace), as word n-grams. A training problem is *contaminated* when it
shares an n-gram (n = 8 by default, open-r1's choice) with a problem it will be scored on, or, for a
problem too short to have one, when its whole normalised text equals that problem's.

Phrases that many reference problems share are not evidence of anything (a benchmark's own
instruction line, "find the value of x such that ..."): an n-gram found in more than
``common_share`` of the reference problems (and at least 3 of them) is not used as a match. The
instructions this project itself adds to a question (multiple-choice lettering, where a program's
input comes from) are removed before comparing.

Within the training set, a problem is a *duplicate* of an earlier one when their normalised texts
are equal, or when at least ``near_duplicate`` of its n-grams are the earlier one's.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping

import pandas as pd

from crv_dagster.config import DecontaminationConfig
from crv_dagster.vocabulary import CONTAMINATED

# Instructions build_problems adds; they say nothing about the problem itself.
_ADDED = [re.compile(re.escape(text), re.IGNORECASE) for text in (
    "Answer with the letter of the correct option.",
    "Read the input from standard input and write the answer to standard output.",
    "Complete this code:",
)]
_LATEX_SPACING = re.compile(r"\\(?:[,;:! ]|quad|qquad|left|right|displaystyle|text|mathrm|mbox)(?![a-zA-Z])")
# Operators and relations are words of their own: 2x+3=7 and 2x-3=7 are different problems.
_OPERATOR = re.compile(r"([+\-*/=<>^])")
_NON_WORD = re.compile(r"[^\w+\-*/=<>^]+", re.UNICODE)


def normalize(text: str) -> str:
    """A text as it is compared: the same problem re-spaced, re-cased or re-typeset reads the same."""
    text = unicodedata.normalize("NFKC", text)
    for added in _ADDED:
        text = added.sub(" ", text)
    text = _LATEX_SPACING.sub(" ", text)
    text = _OPERATOR.sub(r" \1 ", text.replace("$", " ").lower())
    return " ".join(_NON_WORD.sub(" ", text).split())


def ngrams(normalized: str, n: int | None) -> set[tuple[str, ...]]:
    """The text's word n-grams; none for ``n=None`` (equal texts alone match)."""
    if n is None:
        return set()
    words = normalized.split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class Match:
    benchmark: str
    problem_id: str
    how: str  # "ngram" or "exact"

    def __str__(self) -> str:
        return f"{self.benchmark}:{self.problem_id}"


class ReferenceIndex:
    """The problems a profile scores on, indexed for lookups of training problems."""

    def __init__(self, references: Mapping[str, Iterable[tuple[str, str]]], n: int | None = 8,
                 common_share: float = 0.01):
        """``references``: benchmark name -> (problem id, question) pairs."""
        self.n = n
        by_gram: dict[tuple[str, ...], list[tuple[str, str]]] = defaultdict(list)
        self._exact: dict[str, tuple[str, str]] = {}
        total = 0
        for benchmark, problems in references.items():
            for problem_id, question in problems:
                total += 1
                text = normalize(question)
                if text:
                    self._exact.setdefault(text, (benchmark, problem_id))
                for gram in ngrams(text, n):
                    by_gram[gram].append((benchmark, problem_id))
        def common(found: list) -> bool:
            shared_by = len(set(found))
            return shared_by > common_share * total and shared_by >= 3

        self._grams = {gram: found[0] for gram, found in by_gram.items() if not common(found)}
        self.common_ngrams = len(by_gram) - len(self._grams)

    def match(self, question: str) -> Match | None:
        """The first reference problem that ``question`` overlaps, or None."""
        text = normalize(question)
        if text in self._exact:
            return Match(*self._exact[text], "exact")
        for gram in ngrams(text, self.n):
            if gram in self._grams:
                return Match(*self._grams[gram], "ngram")
        return None


def mark_contaminated(problems: pd.DataFrame, references: Mapping[str, pd.DataFrame],
                      config: DecontaminationConfig) -> tuple[pd.DataFrame, Counter]:
    """``problems`` with every training problem that overlaps a reference problem moved to the
    ``contaminated`` split, and ``contaminated_with`` naming the match (``<benchmark>:<problem id>``);
    and the count of such problems per benchmark."""
    index = ReferenceIndex({name: zip(frame["problem_id"], frame["question"]) for name, frame in references.items()},
                           config.ngram, config.common_share)
    matches = [index.match(question) if split == "train" else None
               for question, split in zip(problems["question"], problems["split"])]
    out = problems.assign(contaminated_with=[str(m) if m else None for m in matches])
    out.loc[out["contaminated_with"].notna(), "split"] = CONTAMINATED
    return out, Counter(m.benchmark for m in matches if m)


class DuplicateFinder:
    """Training problems seen so far; ``seen`` says whether a new one repeats one of them."""

    def __init__(self, n: int | None = 8, near_duplicate: float = 0.5, normalise: bool = True):
        """``normalise=False``: only the same text (stripped) is a duplicate, as a published
        benchmark's own problems are compared."""
        self.n, self.near_duplicate, self.normalise = n, near_duplicate, normalise
        self._texts: dict[str, int] = {}
        self._grams: dict[tuple[str, ...], list[int]] = defaultdict(list)

    def seen(self, question: str, row: int) -> tuple[int, str] | None:
        """(the earlier row it repeats, how) or None; a problem that repeats nothing is remembered as ``row``."""
        text = normalize(question) if self.normalise else question.strip()
        if text in self._texts:
            return self._texts[text], "same normalised text" if self.normalise else "same text"
        grams = ngrams(text, self.n)
        if grams:
            shared = Counter(earlier for gram in grams for earlier in self._grams.get(gram, ()))
            if shared:
                earlier, count = shared.most_common(1)[0]
                if count / len(grams) >= self.near_duplicate:
                    return earlier, f"{count / len(grams):.0%} of its {self.n}-grams"
        self._texts[text] = row
        for gram in grams:
            self._grams[gram].append(row)
        return None
