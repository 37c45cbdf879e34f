"""Whether a chain of thought solves its problem: the one check behind raw CoTs, the Verifier and
the preference pairs' correctness guard.

Only a CoT's solution is graded (``cot.solution_of``): a reasoning trace tries wrong numbers and
drafts programs on its way, and none of them is the CoT's answer. A math CoT solves its problem when the answer it commits to (``\\boxed{}`` or ``####``; no number in
passing) equals the reference. A code CoT (``formatting.is_code`` of its answer) solves it when its
final program, the last fenced code block, passes every one of the problem's tests in the sandbox.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping, Sequence

import pandas as pd

from crv_dagster.answers import answers_match, committed_answer
from crv_dagster.cot import solution_of
from crv_dagster.formatting import is_code

PASSED = "passed"
NO_ANSWER = "no_answer"  # commits to no answer; for code, has no fenced code block
WRONG_ANSWER = "wrong_answer"
TESTS_FAILED = "tests_failed"


@dataclass(frozen=True)
class Check:
    solved: bool
    reason: str  # passed | no_answer | wrong_answer | tests_failed
    answer: str | None  # the committed answer, or the final program
    detail: str = ""  # for code: the tests passed and the first failure


def problem_tests(problems: pd.DataFrame) -> dict[str, str]:
    """problem_id -> tests JSON, for the code problems of a ``problems`` table."""
    if "tests" not in problems:
        return {}
    return {pid: tests for pid, tests in zip(problems["problem_id"], problems["tests"])
            if isinstance(tests, str) and tests}


def run_tests(sandbox, program: str, tests: str) -> tuple[bool, str]:
    """Whether ``program`` passes every test of ``tests`` (a problem's tests JSON), and a tally with
    the first failing test's status and detail."""
    from crv_dagster.sandbox.cases import parse_cases
    from crv_dagster.sandbox.grading import all_passed, grade_program

    spec = json.loads(tests)
    outcomes = grade_program(sandbox, program, parse_cases(spec["cases"], "tests"), spec.get("func_name"))
    failed = [o for o in outcomes if o.status != "pass"]
    tally = f"passed {len(outcomes) - len(failed)}/{len(outcomes)}"
    if failed:
        tally += f"; test {failed[0].index}: {failed[0].status} {failed[0].detail}"
    return all_passed(outcomes), tally


class SolutionChecker:
    """Checks CoTs of the problems it was given tests for (code) and of any other problem (math)."""

    def __init__(self, tests: Mapping[str, str] | None = None, sandbox=None):
        self.tests = dict(tests or {})
        if self.tests and sandbox is None:
            raise ValueError("code problems need a sandbox to run their tests in (the profile's `sandbox`)")
        self.sandbox = sandbox
        # The same CoT is checked again as the chosen or rejected side of several pairs; its tests
        # run once.
        self._programs: dict[tuple[str, str], Check] = {}

    def check(self, problem_id: str, answer: str, cot: str | None) -> Check:
        solution = solution_of(cot)
        if is_code(answer):
            return self._check_program(problem_id, solution)
        extracted = committed_answer(solution)
        if extracted is None:
            return Check(False, NO_ANSWER, None)
        if not answers_match(answer, extracted):
            return Check(False, WRONG_ANSWER, extracted)
        return Check(True, PASSED, extracted)

    def check_all(self, items: Sequence[tuple[str, str, str | None]]) -> list[Check]:
        """Checks of (problem_id, answer, cot) items."""
        return [self.check(*item) for item in items]

    def _check_program(self, problem_id: str, solution: str) -> Check:
        from crv_dagster.sandbox.grading import extract_program

        tests = self.tests.get(problem_id)
        if tests is None:
            raise ValueError(f"problem {problem_id}: a code problem without tests (problems.tests is empty)")
        program = extract_program(solution)
        if program is None:
            return Check(False, NO_ANSWER, None, "no fenced code block in the solution")
        if (problem_id, program) not in self._programs:
            solved, tally = run_tests(self.sandbox, program, tests)
            self._programs[problem_id, program] = Check(solved, PASSED if solved else TESTS_FAILED, program, tally)
        return self._programs[problem_id, program]


# Checks math CoTs only: a code problem given to it is an error naming the problem.
MATH_CHECKER = SolutionChecker()
