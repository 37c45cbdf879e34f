"""Run one program against its tests in the sandbox and say why each test passes or fails.

    python -m crv_dagster.sandbox PROGRAM.py --tests TESTS.json [--func-name NAME]

TESTS.json is a list of LiveCodeBench test cases ({"input", "output", "testtype"}) or a whole
``code_generation_lite`` record (its public and private cases, and ``metadata.func_name``).
Prints one JSON object per test, then a summary line; exits 0 when every test passes, 1 when one
does not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from crv_dagster.sandbox.cases import TestCaseError, parse_cases, problem_cases
from crv_dagster.sandbox.grading import all_passed, grade_program
from crv_dagster.sandbox.runner import Limits, Sandbox


def _load_cases(path: Path) -> tuple[list, str | None]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TestCaseError(f"{path}: cannot read test cases: {err}") from None
    if isinstance(data, dict):
        return problem_cases(data, where=str(path))
    return parse_cases(data, where=str(path)), None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("program", type=Path)
    parser.add_argument("--tests", type=Path, required=True)
    parser.add_argument("--func-name", help="the Solution method functional tests call (default: the record's)")
    parser.add_argument("--timeout", type=float, default=Limits.wall_seconds, help="wall-clock seconds per test")
    parser.add_argument("--cpu-seconds", type=int, default=Limits.cpu_seconds)
    parser.add_argument("--memory-mb", type=int, default=Limits.memory_mb)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--isolation", choices=["auto", "namespaces", "limits"], default="auto")
    args = parser.parse_args(argv)
    try:
        cases, func_name = _load_cases(args.tests)
        program = args.program.read_text()
    except (TestCaseError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    limits = Limits(wall_seconds=args.timeout, cpu_seconds=args.cpu_seconds, memory_mb=args.memory_mb)
    try:
        sandbox = Sandbox(limits, isolation=args.isolation, concurrency=args.concurrency)
        outcomes = grade_program(sandbox, program, cases, args.func_name or func_name)
    except (RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for outcome in outcomes:
        print(json.dumps(outcome.as_json()))
    passed = sum(o.status == "pass" for o in outcomes)
    print(json.dumps({"passed": passed, "tests": len(outcomes), "all_passed": all_passed(outcomes),
                      "isolation": sandbox.isolation}))
    return 0 if all_passed(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
