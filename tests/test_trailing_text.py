"""A rewrite (or an injected error) ends with its answer: text past it, or about the rewriting, is
refused as ``trailing_text``, and legitimate endings are not."""

import json

import pandas as pd
import pytest
from scripted import ScriptedBackend

from crv_dagster.agents import crv
from crv_dagster.agents.rethinker import TRAILING_TEXT, Rethinker, load_rethinker_prompts, trailing_problem
from crv_dagster.agents.verifier import Verifier
from crv_dagster.answers import committed_answer, committed_answer_end
from crv_dagster.cot import Cot
from crv_dagster.formatting import CODE_ANSWER
from crv_dagster.llm.base import SamplingParams
from crv_dagster.prompts import INJECT_FIELDS, INJECT_OPTIONAL, load_prompt
from crv_dagster.schemas import rewritten_cots_schema
from crv_dagster.preference.pairs import incorrect_by_injection

STEPS = "Ann has 3 apples and buys 2 more.\n\n3 + 2 = 5."
ORIGINAL = f"{STEPS}\n\nThe answer is \\boxed{{5}}."
# What the demo's 135M agent appended to a correct solution that passed every rule.
DEMO_TAIL = "Your answer was completed in only 90 lines, and your answer was expanded in 125 lines."
PROGRAM = "```python\nprint(sum(map(int, input().split())))\n```"


@pytest.mark.parametrize("ending", [
    "So the answer is \\boxed{5}.",
    "\\boxed{5}",
    "The final answer is $\\boxed{5}$.",
    "She has \\boxed{5} apples in total.",
    "$$\n\\boxed{5}\n$$",
    "\\[\n\\boxed{5}\n\\]",
    "#### 5",
    "The answer is \\boxed{5}.\n```",
    "\\begin{aligned} x &= \\boxed{5}\n\\end{aligned}",  # the environment closes on the next line
    "The simplified version of 10/2 is \\boxed{5}.",      # maths, not a word about the rewrite
    "Make sure your answer is a whole number: \\boxed{5}.",
])
def test_legitimate_endings_pass(ending):
    assert trailing_problem(ORIGINAL, f"{STEPS}\n\n{ending}", "5") is None


@pytest.mark.parametrize("ending", [
    f"The answer is \\boxed{{5}}. {DEMO_TAIL}",
    f"The answer is \\boxed{{5}}.\n\n{DEMO_TAIL}",
    "The answer is \\boxed{5}.\n\nWait, let me check again: 3 + 2 = 5, yes.",
    "$$\n\\boxed{5}\n$$\n\nI hope this helps!",
])
def test_text_past_the_answer_is_refused(ending):
    assert trailing_problem(ORIGINAL, f"{STEPS}\n\n{ending}", "5") == TRAILING_TEXT


def test_words_about_the_rewriting_are_refused_wherever_they_are():
    meta = f"Ann has 3 apples.\n\nI have expanded the solution into more steps.\n\n3 + 2 = 5.\n\n\\boxed{{5}}."
    assert trailing_problem(ORIGINAL, meta, "5") == TRAILING_TEXT
    in_trace = Cot("The answer is \\boxed{5}.", "This rewrite adds a step.\n\n3 + 2 = 5.").text
    assert trailing_problem(Cot("The answer is \\boxed{5}.", "3 + 2 = 5.").text, in_trace, "5") == TRAILING_TEXT
    # Maths that sounds like it is not: rewriting an equation, a simplified expression.
    maths = f"{STEPS}\n\nWe rewrite 3 + 2 as 2 + 3; the simplified expression is 5.\n\nThe answer is \\boxed{{5}}."
    assert trailing_problem(ORIGINAL, maths, "5") is None


def test_a_reasoning_trace_may_go_on_past_a_guess_the_solution_may_not():
    original = Cot("So \\boxed{5}.", "3 + 2 = 5.").text
    thinking = Cot("So \\boxed{5}.", "Is it \\boxed{6}? No, let me recount.\n\n3 + 2 = 5, so 5.").text
    assert trailing_problem(original, thinking, "5") is None
    assert trailing_problem(original, Cot(f"So \\boxed{{5}}. {DEMO_TAIL}", "3 + 2 = 5.").text, "5") == TRAILING_TEXT


def test_a_code_answer_ends_with_its_final_program_unless_the_original_explained_it():
    original = f"Read both numbers and add them.\n\n{PROGRAM}"
    assert trailing_problem(original, f"Read the numbers, then add them.\n\n{PROGRAM}\n", CODE_ANSWER) is None
    talkative = f"Read the numbers, then add them.\n\n{PROGRAM}\n\nThis version is shorter than yours."
    assert trailing_problem(original, talkative, CODE_ANSWER) == TRAILING_TEXT
    # An R1-style solution explains its program after it: so may its rewrite.
    explained = f"{original}\n\n### Explanation\nThe program reads a line and prints the sum."
    assert trailing_problem(explained, f"{PROGRAM}\n\nIt prints the sum of the line's numbers.", CODE_ANSWER) is None


def test_the_answer_end_is_where_the_committed_answer_ends():
    text = "Maybe \\boxed{4}. Then \\boxed{\\frac{1}{2}} is it. #### 7"
    assert text[:committed_answer_end(text)].endswith("\\boxed{\\frac{1}{2}}")
    assert committed_answer(text) == "\\frac{1}{2}"
    assert committed_answer_end("Total:\n#### 7\n") == len("Total:\n#### 7")
    assert committed_answer_end("no answer") is None


def _critique(label: str) -> pd.DataFrame:
    return pd.DataFrame({"problem_id": ["p"], "dataset": "d", "question": ["Ann has 3 apples and buys 2. How many?"],
                         "answer": ["5"], "cot": [ORIGINAL], "cot_correct": [True], "label": [label]})


def test_a_trailing_rewrite_is_dropped_with_its_own_reason_and_the_retry_is_told_why():
    prompts = []
    replies = iter([f"{STEPS}\n\nFirst 3, then 2 more.\n\nThe answer is \\boxed{{5}}. {DEMO_TAIL}"] * 2)

    def reply(prompt, params):
        prompts.append(prompt)
        return next(replies)

    rethinker = Rethinker(ScriptedBackend(reply), load_rethinker_prompts("rethink_expand.txt", "rethink_simplify.txt"),
                          SamplingParams())
    frame = crv.refine(_critique("easy"), rethinker, Verifier(), "135M", max_attempts=2)
    rewritten_cots_schema.validate(frame)
    row = frame.iloc[0]
    assert not row["passed"] and row["drop_reason"] == "verify_failed:trailing_text"
    assert [v["reason"] for v in json.loads(row["verdicts"])] == [TRAILING_TEXT, TRAILING_TEXT]
    assert "after its final answer" in prompts[1]
    assert crv.refine_stats(frame, 2)["drop_reasons"] == {"verify_failed:trailing_text": 1}
    # Nothing of it reaches the SFT data.
    assert not crv.verified_set(frame)["cot"].str.contains("lines").any()


def test_an_injected_error_with_trailing_text_is_passed_over_and_counted():
    prompt = load_prompt("inject_error.txt", required=INJECT_FIELDS, optional=INJECT_OPTIONAL)
    material = pd.DataFrame({"problem_id": ["p", "q"], "question": ["Ann has 3 apples and buys 2. How many?"] * 2,
                             "answer": ["5", "5"], "cot": [ORIGINAL, ORIGINAL]})
    wrong = f"Ann has 3 apples and buys 2 more.\n\n3 + 2 = 6.\n\nThe answer is \\boxed{{6}}."
    backend = ScriptedBackend(lambda p, s: wrong + (f" {DEMO_TAIL}" if len(backend.prompts) % 2 else ""))
    found, skipped = incorrect_by_injection(material, backend, prompt, SamplingParams())
    assert [c.problem_id for c in found] == ["q"] and skipped == {TRAILING_TEXT: 1}
