"""The one place where final answers are found in text and checked against a reference.

``committed_answer`` finds the answer a chain of thought explicitly commits to (its last
``\\boxed{}`` or a GSM8K ``#### x`` line): the only reading allowed for a CoT that becomes
training data. ``extract_answer`` adds the lenient fallbacks used to score a student's free
answer ("the answer is x", then the last number), as part of a recorded evaluation protocol.
``extract_choice`` reads the letter of a multiple-choice answer. ``is_correct`` decides whether
an answer equals the reference. Plain numbers are compared exactly with ``Fraction``;
anything else goes to math-verify.

math-verify enforces its time limit with ``signal.alarm``, which only works in a process's
main thread. In the main thread we use it directly; from any other thread the comparison runs
in a helper process so that the time limit still holds (a stuck sympy call cannot be
interrupted inside a thread).
"""

from __future__ import annotations

import math
import re
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from fractions import Fraction

DEFAULT_TIMEOUT_S = 5.0

_NUMBER = r"(?:-?\d[\d,]*(?:\.\d+)?|-?\.\d+)"
_GSM8K_MARK = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)
_ANSWER_PHRASE = re.compile(
    r"(?:final answer|the answer)\s*(?:is)?\s*[:=]?\s*\$?\s*(" + _NUMBER + r"(?:\s*/\s*\d+)?)", re.IGNORECASE
)
_LAST_NUMBER = re.compile(r"(" + _NUMBER + r")")
_PLAIN_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)(/\d+)?$")


def _last_boxed(text: str) -> tuple[int, int, str] | None:
    """Start, end and content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces
    included; MATH's brace-less ``\\boxed 5`` counts too."""
    found: list[tuple[int, int, str]] = []
    for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth = 1
        for i in range(match.end(), len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    found.append((match.start(), i + 1, text[match.end():i].strip()))
                    break
    for match in _BARE_BOXED.finditer(text):
        found.append((match.start(), match.end(), match.group(1)))
    return max(found) if found else None


def answer_closed(text: str, thinking_open: bool = False) -> bool:
    """Whether a reply being written has reached its final answer: a closed ``\\boxed{...}`` after
    its thinking. A box inside a ``<think>`` section that is still open (opened in the reply, or by
    the prompt when ``thinking_open``) does not count: a reasoning model tries answers there. A
    rewrite laid out as ``<reasoning>`` then ``<solution>`` is done when its solution, holding the
    box, has closed."""
    head, close, solution = text.rpartition("</think>")
    if not close and (thinking_open or "<think>" in text):
        return False
    if "<reasoning>" in solution or "<solution>" in solution:
        # An agent's rewrite laid out in sections: its answer is written once its solution closes.
        head, opened, solution = solution.rpartition("<solution>")
        if not opened or "</solution>" not in solution:
            return False
    for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", solution):
        depth = 1
        for char in solution[match.end():]:
            depth += (char == "{") - (char == "}")
            if depth == 0:
                return True
    return False


def find_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces included; MATH's
    brace-less ``\\boxed 5`` counts too."""
    last = _last_boxed(text)
    return last[2] if last else None


_BARE_BOXED = re.compile(r"\\boxed[ \t]+([^\s${}]+)")


def normalize_answer(answer: str) -> str:
    """An answer without $...$, \\text{} wrappers, a trailing period or thousands separators."""
    answer = answer.strip().strip("$").strip()
    answer = re.sub(r"\\(?:text|mathrm)\{\s*([^{}]*)\}", r"\1", answer)
    answer = answer.rstrip(".").strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", answer):
        answer = answer.replace(",", "")
    return answer


def committed_answer(text: str | None) -> str | None:
    """The answer a CoT explicitly commits to: its last ``\\boxed{}``, else a GSM8K ``#### x``
    line; None when it commits to none (no number in passing counts)."""
    if not text:
        return None
    boxed = find_boxed(text)
    if boxed:
        return normalize_answer(boxed)
    marks = _GSM8K_MARK.findall(text)
    if marks:
        return normalize_answer(marks[-1])
    return None


def committed_answer_end(text: str | None) -> int | None:
    """Where the answer ``committed_answer`` reads ends in ``text``; None when it commits to none."""
    if not text:
        return None
    last = _last_boxed(text)
    if last and last[2]:
        return last[1]
    marks = list(_GSM8K_MARK.finditer(text))
    return marks[-1].end(1) if marks else None


def extract_answer(text: str | None, last_number_fallback: bool = True) -> str | None:
    """The final answer of a free response, or None when none can be found.

    Priority: the committed answer (``\\boxed{}``, ``#### x``), an explicit "the answer is x",
    then, with ``last_number_fallback``, the last number in the text.
    """
    committed = committed_answer(text)
    if committed is not None or not text:
        return committed
    phrases = _ANSWER_PHRASE.findall(text)
    if phrases:
        return normalize_answer(phrases[-1])
    numbers = _LAST_NUMBER.findall(text) if last_number_fallback else []
    if numbers:
        return normalize_answer(numbers[-1])
    return None


_LETTER = re.compile(r"^\(?\s*([A-Za-z])\s*\)?(?:[\s.:)]|$)")
_ANSWER_LINE = re.compile(r"(?i)answer\s*(?:is)?\s*[:=]?\s*\$?\(?\s*\b([A-Z])\b\)?\$?")


def extract_choice(text: str | None, choices: dict[str, str]) -> str | None:
    """The option letter a multiple-choice response picks: the letter (or the option's text) in its
    last ``\\boxed{}``, else an "Answer: X" line; None otherwise (a number in passing is no choice)."""
    if not text:
        return None
    boxed = find_boxed(text)
    if boxed:
        content = normalize_answer(boxed)
        match = _LETTER.match(content)
        if match and match.group(1).upper() in choices:
            return match.group(1).upper()
        by_text = [k for k, v in choices.items() if normalize_answer(v).lower() == content.lower()]
        if len(by_text) == 1:
            return by_text[0]
        return None
    letters = [m for m in _ANSWER_LINE.findall(text) if m in choices]
    return letters[-1] if letters else None


def _as_fraction(answer: str) -> Fraction | None:
    compact = answer.replace(" ", "").replace(",", "")
    frac = re.fullmatch(r"\\d?frac\{(-?\d+)\}\{(\d+)\}", compact)
    if frac:
        compact = f"{frac.group(1)}/{frac.group(2)}"
    if not _PLAIN_NUMBER.match(compact):
        return None
    try:
        return Fraction(compact)
    except (ValueError, ZeroDivisionError):
        return None


def _math_verify(gold: str, prediction: str, timeout_s: float | None) -> bool:
    from math_verify import parse, verify

    # math-verify hands the limit to signal.alarm, which takes whole seconds only: a float
    # makes every parse fail quietly (an empty result).
    timeout_s = None if timeout_s is None else max(1, math.ceil(timeout_s))

    wrap = lambda s: s if "$" in s or "\\boxed" in s else f"${s}$"  # noqa: E731
    gold_parsed = parse(wrap(gold), parsing_timeout=timeout_s)
    pred_parsed = parse(wrap(prediction), parsing_timeout=timeout_s)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout_s))


_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _helper_pool() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=1)
        return _pool


def _discard_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            # shutdown() waits for a busy worker; killing it is the only way to stop a stuck
            # sympy call, and the executor exposes its processes only as a private attribute.
            for proc in list(getattr(_pool, "_processes", {}).values()):
                proc.kill()
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None


def answers_match(gold: str, prediction: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether two extracted answers are mathematically equal, within a time limit."""
    gold, prediction = normalize_answer(gold), normalize_answer(prediction)
    if gold == prediction:
        return True
    g, p = _as_fraction(gold), _as_fraction(prediction)
    if g is not None and p is not None:
        return g == p
    if threading.current_thread() is threading.main_thread():
        try:
            return _math_verify(gold, prediction, timeout_s)
        except TimeoutError:
            return False
    future = _helper_pool().submit(_math_verify, gold, prediction, timeout_s)
    try:
        return future.result(timeout=timeout_s + 5.0)
    except FutureTimeout:
        _discard_pool()  # the worker is stuck; a fresh one serves the next call
        return False


def is_correct(prediction_text: str | None, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether the answer a response commits to equals the reference answer ``gold``."""
    predicted = extract_answer(prediction_text)
    if predicted is None:
        return False
    return answers_match(gold, predicted, timeout_s=timeout_s)
