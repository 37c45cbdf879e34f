from concurrent.futures import ThreadPoolExecutor

import pytest

from crv_dagster.answers import answers_match, committed_answer, extract_answer, find_boxed, is_correct


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the total is \\boxed{42}.", "42"),
        ("first \\boxed{1} then \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),
        ("nested: \\boxed{\\frac{\\sqrt{2}}{2}} done", "\\frac{\\sqrt{2}}{2}"),
        ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
        ("Total is 1,234 apples\n#### 1,234", "1234"),
        ("Adding them gives 7. The final answer is 12.", "12"),
        ("The answer is: 3/4", "3/4"),
        ("5 + 7 = 12 dollars.", "12"),
        ("I cannot tell.", None),
        ("", None),
        (None, None),
        ("an unclosed \\boxed{12 with 7 later", "7"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_find_boxed_keeps_nested_braces():
    assert find_boxed("x \\boxed{a_{1} + b^{2}} y") == "a_{1} + b^{2}"
    assert find_boxed("no box here") is None


def test_find_boxed_reads_maths_braceless_form():
    assert find_boxed("so the answer is $\\boxed 5$.") == "5"
    assert find_boxed("\\boxed 5 at first, then \\boxed{6}") == "6"
    assert find_boxed("\\boxed{6} at first, then \\boxed 7") == "7"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3 + 4 = 7.\n\nThe answer is \\boxed{7}.", "7"),
        ("Natalia sold 24 clips.\n#### 72", "72"),
        # Commitment only: a truncated monologue that mentions numbers, or a bare phrase, is no answer.
        ("so maybe 7, or 8, let me check the", None),
        ("The answer is 59. The original solution was wrong.", None),
        (None, None),
    ],
)
def test_committed_answer_takes_no_guesses(text, expected):
    assert committed_answer(text) == expected


@pytest.mark.parametrize(
    "prediction, gold, expected",
    [
        ("so \\boxed{12}", "12", True),
        ("so \\boxed{13}", "12", False),
        ("\\boxed{0.5}", "\\frac{1}{2}", True),
        ("\\boxed{\\frac{1}{2}}", "0.5", True),
        ("the answer is 3/4", "0.75", True),
        ("\\boxed{\\frac{2}{3}}", "\\frac{3}{4}", False),
        ("#### 1,000", "1000", True),
        ("\\boxed{2^{1/2}}", "\\sqrt{2}", True),
        ("\\boxed{x+1}", "1+x", True),
        ("no answer at all", "5", False),
    ],
)
def test_is_correct(prediction, gold, expected):
    assert is_correct(prediction, gold) is expected


def test_answers_match_from_worker_threads():
    # math-verify's own timeout needs the main thread; from threads we go through a helper process.
    cases = [("\\frac{1}{2}", "0.5", True), ("\\sqrt{2}", "2^{1/2}", True), ("\\pi", "3", False), ("7", "7.0", True)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda c: answers_match(c[0], c[1]), cases))
    assert results == [c[2] for c in cases]
