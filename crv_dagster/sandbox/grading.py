"""A program against its test cases, each test its own sandboxed run.

Per test the outcome is ``pass``, ``fail`` (it ran, the answer is wrong), ``timeout``, ``crash``
(killed by a signal) or ``runtime_error`` (an exception, a non-zero exit), with a short detail.
A solution is correct when every test passes.

Output comparison follows LiveCodeBench: the printed and expected text are compared line by line
after stripping each line (and leading and trailing blank lines); lines that differ still match
when they have the same tokens, numbers compared as decimals (``1.50`` equals ``1.5``).
Functional tests call ``Solution().<func_name>`` with one argument per input line (each JSON) and
compare the JSON of the return value with the expected JSON (tuples read as lists).
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from crv_dagster.sandbox.cases import TestCase
from crv_dagster.sandbox.runner import RunResult, Sandbox

TestStatus = Literal["pass", "fail", "timeout", "crash", "runtime_error"]
PASS = "pass"

# What LeetCode-style starter code takes for granted (``List[int]``, ``collections.Counter`` ...).
PRELUDE = ("from typing import *\nimport collections, heapq, bisect, itertools, functools, math, string, re\n"
           "from collections import *\nfrom functools import *\nfrom itertools import *\nfrom heapq import *\n"
           "from bisect import *\nfrom math import *\n")

# Runs inside the sandbox: the solution's own prints go to stderr, the return value to stdout.
_HARNESS = '''\
import contextlib, json, sys
with open("solution.py") as f:
    source = f.read()
namespace = {"__name__": "solution"}
with contextlib.redirect_stdout(sys.stderr):
    exec(compile(PRELUDE + source, "solution.py", "exec"), namespace)
    if "Solution" not in namespace:
        raise SystemExit("no class Solution in the program")
    method = getattr(namespace["Solution"](), FUNC_NAME)
    args = [json.loads(line) for line in sys.stdin.read().split("\\n") if line.strip()]
    result = method(*args)
def plain(value):
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
print(json.dumps(plain(result)))
'''

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_program(reply: str | None) -> str | None:
    """The last fenced code block of a reply (LiveCodeBench's rule), or None when it has none."""
    if not reply:
        return None
    blocks = _FENCE.findall(reply)
    if not blocks:
        return None
    return blocks[-1][1].strip("\n") + "\n"


@dataclass(frozen=True)
class TestOutcome:
    index: int
    testtype: str
    status: TestStatus
    detail: str
    wall_s: float

    def as_json(self) -> dict:
        return {"test": self.index, "testtype": self.testtype, "status": self.status, "detail": self.detail,
                "wall_s": round(self.wall_s, 3)}


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().splitlines()]


def _token_equal(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return Decimal(a) == Decimal(b)
    except InvalidOperation:
        return False


def outputs_match(printed: str, expected: str) -> bool:
    got, want = _lines(printed), _lines(expected)
    if got == want:
        return True
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        tg, tw = g.split(), w.split()
        if len(tg) != len(tw) or not all(_token_equal(x, y) for x, y in zip(tg, tw)):
            return False
    return True


def _first_difference(printed: str, expected: str) -> str:
    got, want = _lines(printed), _lines(expected)
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            return f"line {i + 1}: printed {g[:80]!r}, expected {w[:80]!r}"
    return f"printed {len(got)} line(s), expected {len(want)}"


def _judge(case: TestCase, run: RunResult, index: int) -> TestOutcome:
    if run.status != "ok":
        return TestOutcome(index, case.testtype, run.status, run.detail, run.wall_s)
    if case.testtype == "functional":
        try:
            got = json.loads(run.stdout.strip().splitlines()[-1])
            want = json.loads(case.output)
        except (json.JSONDecodeError, IndexError):
            return TestOutcome(index, case.testtype, "fail", f"not a JSON value: {run.stdout[-80:]!r}", run.wall_s)
        if got == want:
            return TestOutcome(index, case.testtype, "pass", "", run.wall_s)
        return TestOutcome(index, case.testtype, "fail", f"returned {json.dumps(got)[:80]}, expected "
                                                         f"{json.dumps(want)[:80]}", run.wall_s)
    if outputs_match(run.stdout, case.output):
        return TestOutcome(index, case.testtype, "pass", "", run.wall_s)
    detail = _first_difference(run.stdout, case.output) + (" (output cut at the limit)" if run.output_truncated else "")
    return TestOutcome(index, case.testtype, "fail", detail, run.wall_s)


def run_case(sandbox: Sandbox, program: str, case: TestCase, func_name: str | None = None,
             index: int = 0) -> TestOutcome:
    if case.testtype == "functional":
        if not func_name:
            raise ValueError("a functional test needs the name of the method to call (metadata.func_name)")
        harness = f"PRELUDE = {PRELUDE!r}\nFUNC_NAME = {func_name!r}\n" + _HARNESS
        run = sandbox.run({"harness.py": harness, "solution.py": program}, ["python", "harness.py"], case.input)
    else:
        run = sandbox.run_python(program, stdin=case.input)
    return _judge(case, run, index)


def grade_program(sandbox: Sandbox, program: str | None, cases: list[TestCase],
                  func_name: str | None = None) -> list[TestOutcome]:
    """Every test of ``cases``, up to ``sandbox.concurrency`` at once. With no program (the reply had
    no code block) every test fails without running."""
    if program is None:
        return [TestOutcome(i, c.testtype, "fail", "no program: the reply has no fenced code block", 0.0)
                for i, c in enumerate(cases)]
    with ThreadPoolExecutor(max_workers=sandbox.concurrency) as pool:
        futures = [pool.submit(run_case, sandbox, program, case, func_name, i) for i, case in enumerate(cases)]
        return [f.result() for f in futures]


def all_passed(outcomes: list[TestOutcome]) -> bool:
    return bool(outcomes) and all(o.status == PASS for o in outcomes)
