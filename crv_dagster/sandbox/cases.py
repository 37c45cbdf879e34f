"""Test cases in LiveCodeBench's ``code_generation_lite`` format.

A problem's ``public_test_cases`` is a JSON list of ``{"input", "output", "testtype"}``;
``private_test_cases`` is the same list as JSON, or that JSON pickled, zlib-compressed and
base64-encoded. ``testtype`` is ``stdin`` (the program reads ``input`` on stdin and must print
``output``) or ``functional`` (LeetCode style: ``metadata.func_name`` of ``class Solution`` is
called with one argument per line of ``input``, each line JSON, and must return ``output``).

The pickled form is read with an unpickler that can build nothing but plain data (strings,
bytes, numbers, lists, dicts), so a hostile file cannot run code while it is read.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import zlib
from dataclasses import dataclass
from typing import Literal

TestType = Literal["stdin", "functional"]


class TestCaseError(ValueError):
    """Test cases that cannot be read; the message names the problem and the field."""


@dataclass(frozen=True)
class TestCase:
    input: str
    output: str
    testtype: TestType

    def as_json(self) -> dict:
        return {"input": self.input, "output": self.output, "testtype": self.testtype}


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # every class, function and reducer is refused
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: test cases are plain data")


def _decode(text: str, where: str) -> list:
    text = text.strip()
    if not text:
        return []
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        raw = zlib.decompress(base64.b64decode(text))
        value = _PlainDataUnpickler(io.BytesIO(raw)).load()
        return json.loads(value) if isinstance(value, (str, bytes)) else value
    except Exception as err:  # noqa: BLE001 - any failure means the field is not in either form
        raise TestCaseError(f"{where}: neither JSON nor LiveCodeBench's compressed form ({err})") from None


def parse_cases(field: str | list | None, where: str) -> list[TestCase]:
    """The test cases of one field (public or private) of one problem."""
    if field is None:
        return []
    items = field if isinstance(field, list) else _decode(field, where)
    if not isinstance(items, list):
        raise TestCaseError(f"{where}: expected a list of test cases, got {type(items).__name__}")
    cases = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not {"input", "output"} <= set(item):
            raise TestCaseError(f"{where}[{i}]: a test case needs 'input' and 'output'")
        testtype = item.get("testtype", "stdin")
        if testtype not in ("stdin", "functional"):
            raise TestCaseError(f"{where}[{i}].testtype: '{testtype}' is neither 'stdin' nor 'functional'")
        cases.append(TestCase(str(item["input"]), str(item["output"]), testtype))
    return cases


def apps_cases(field: str | dict | None, where: str) -> list[TestCase]:
    """Test cases in the APPS layout (TACO, OpenThoughts' ``test_cases``): JSON ``{"inputs": [...],
    "outputs": [...]}``, each input a program's standard input and each output what it must print.
    Call-based tests (an ``fn_name``) call a top-level function, which this sandbox's harness (a
    ``class Solution`` method, as LiveCodeBench) does not: they are refused, so the row is counted."""
    if field is None or (isinstance(field, str) and not field.strip()):
        return []
    try:
        record = json.loads(field) if isinstance(field, str) else field
    except json.JSONDecodeError as err:
        raise TestCaseError(f"{where}: not JSON ({err})") from None
    if not isinstance(record, dict) or not {"inputs", "outputs"} <= set(record):
        raise TestCaseError(f"{where}: expected {{inputs, outputs}}")
    if record.get("fn_name"):
        raise TestCaseError(f"{where}: call-based tests (fn_name '{record['fn_name']}') are not run here")
    inputs, outputs = record["inputs"], record["outputs"]
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
        raise TestCaseError(f"{where}: inputs and outputs must be lists of the same length")
    return [TestCase(_joined(i), _joined(o), "stdin") for i, o in zip(inputs, outputs)]


def _joined(value) -> str:
    # APPS keeps some stdin inputs and outputs as lists of lines.
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def problem_cases(record: dict, where: str = "problem") -> tuple[list[TestCase], str | None]:
    """All test cases of a ``code_generation_lite`` record (public, then private) and the function
    name for functional tests (``metadata.func_name``)."""
    cases = (parse_cases(record.get("public_test_cases"), f"{where}.public_test_cases")
             + parse_cases(record.get("private_test_cases"), f"{where}.private_test_cases"))
    metadata = record.get("metadata") or {}
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata) if metadata.strip() else {}
        except json.JSONDecodeError as err:
            raise TestCaseError(f"{where}.metadata: not JSON ({err})") from None
    func_name = metadata.get("func_name")
    if any(c.testtype == "functional" for c in cases) and not func_name:
        raise TestCaseError(f"{where}.metadata.func_name: functional tests need the method to call")
    return cases, func_name
