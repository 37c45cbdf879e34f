"""Code in the CRV stage: code CoTs are right or wrong by their problem's tests, run in the sandbox,
from the teacher's raw CoTs through the Verifier to the preference pairs' correctness guard, and a
code dataset goes through the whole graph on the test profile with a reasoning double as agent."""

import json

import dagster as dg
import pandas as pd
import pytest
import yaml
from profiles import TEST_PROFILE
from reasoning_double import TRACE_MARKER, ReasoningDouble
from scripted import ScriptedBackend

from crv_dagster.agents import crv
from crv_dagster.agents.rethinker import Rethinker, load_rethinker_prompts
from crv_dagster.agents.verifier import Verifier
from crv_dagster.config import SandboxConfig
from crv_dagster.cot import parse
from crv_dagster.factory import code_sandbox
from crv_dagster.formatting import CODE_ANSWER, CODE_INSTRUCTION
from crv_dagster.llm.base import SamplingParams
from chat_server import ChatServer
from crv_dagster.orchestration.definitions import build_definitions
from crv_dagster.solutions import SolutionChecker
from crv_dagster.storage import table_path
from crv_dagster.preference.pairs import IncorrectCot, build_pairs, incorrect_by_perturbation

# Statement, tests, right program, buggy program (each bug fails at least one test).
STDIN = "stdin"
CODE_PROBLEMS = {
    "sum": ("Read two integers and print their sum.", STDIN,
            [("1 2\n", "3\n"), ("10 -4\n", "6\n")],
            "a, b = map(int, input().split())\nprint(a + b)\n",
            "a, b = map(int, input().split())\nprint(a - b)\n"),
    "max": ("Read a line of integers and print the largest.", STDIN,
            [("3 9 2\n", "9\n"), ("-5 -1\n", "-1\n")],
            "print(max(map(int, input().split())))\n",
            "print(list(map(int, input().split()))[0])\n"),
    "reverse": ("Read a word and print it reversed.", STDIN,
                [("abc\n", "cba\n"), ("x\n", "x\n")],
                "print(input().strip()[::-1])\n",
                "print(input().strip())\n"),
    "vowels": ("Read a word and print how many vowels it has.", STDIN,
               [("banana\n", "3\n"), ("sky\n", "0\n")],
               "print(sum(c in 'aeiou' for c in input()))\n",
               "print(sum(c in 'aeio' for c in input()) + 1)\n"),
    "factorial": ("Read n and print n factorial.", STDIN,
                  [("5\n", "120\n"), ("0\n", "1\n")],
                  "import math\nprint(math.factorial(int(input())))\n",
                  "n = int(input())\nr = 1\nfor i in range(1, n):\n    r *= i\nprint(r)\n"),
    "evens": ("Read a line of integers and print how many are even.", STDIN,
              [("1 2 4\n", "2\n"), ("7\n", "0\n")],
              "print(sum(int(x) % 2 == 0 for x in input().split()))\n",
              "print(sum(int(x) % 2 for x in input().split()))\n"),
    "square": ("Return the square of x.", "square",
               [("4", "16"), ("-3", "9")],
               "class Solution:\n    def square(self, x: int) -> int:\n        return x * x\n",
               "class Solution:\n    def square(self, x: int) -> int:\n        return x + x\n"),
    "palindrome": ("Return whether s reads the same backwards.", "isPalindrome",
                   [('"abba"', "true"), ('"ab"', "false")],
                   "class Solution:\n    def isPalindrome(self, s: str) -> bool:\n        return s == s[::-1]\n",
                   "class Solution:\n    def isPalindrome(self, s: str) -> bool:\n        return s[0] == s[-1]\n"),
    "total": ("Return the sum of nums.", "total",
              [("[1, 2, 3]", "6"), ("[]", "0")],
              "class Solution:\n    def total(self, nums: List[int]) -> int:\n        return sum(nums)\n",
              "class Solution:\n    def total(self, nums: List[int]) -> int:\n        return sum(nums[1:])\n"),
    "count": ("Read a line of words and print how many there are.", STDIN,
              [("a b c\n", "3\n"), ("one\n", "1\n")],
              "print(len(input().split()))\n",
              "print(input().count(' '))\n"),
}


def _cases(kind: str, cases) -> list[dict]:
    testtype = "stdin" if kind == STDIN else "functional"
    return [{"input": i, "output": o, "testtype": testtype} for i, o in cases]


def _tests_json(kind: str, cases) -> str:
    return json.dumps({"cases": _cases(kind, cases), "func_name": None if kind == STDIN else kind})


def write_code_dataset(folder) -> None:
    """CODE_PROBLEMS as a LiveCodeBench release_v1 file."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for key, (statement, kind, cases, _, _) in CODE_PROBLEMS.items():
        tests = _cases(kind, cases)
        starter = "" if kind == STDIN else f"class Solution:\n    def {kind}(self, *args):\n        "
        records.append({"question_title": key, "question_content": statement, "platform": "atcoder",
                        "question_id": key, "contest_id": "c1", "contest_date": "2023-05-01T00:00:00",
                        "starter_code": starter, "difficulty": "easy", "public_test_cases": json.dumps(tests[:1]),
                        "private_test_cases": json.dumps(tests[1:]),
                        "metadata": "{}" if kind == STDIN else json.dumps({"func_name": kind})})
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def fenced(program: str) -> str:
    return f"```python\n{program}```"


@pytest.fixture(scope="module")
def sandbox():
    return code_sandbox(SandboxConfig(timeout_s=5, cpu_seconds=5, memory_mb=512))


@pytest.fixture(scope="module")
def checker(sandbox):
    return SolutionChecker({key: _tests_json(kind, cases) for key, (_, kind, cases, _, _) in CODE_PROBLEMS.items()},
                           sandbox)


def test_a_code_cot_is_checked_by_its_program_against_the_tests(checker):
    _, _, _, right, buggy = CODE_PROBLEMS["factorial"]
    # The last fenced block is the program: a draft before it does not count.
    passed = checker.check("factorial", CODE_ANSWER, f"A draft:\n\n{fenced(buggy)}\n\nBetter:\n\n{fenced(right)}")
    assert passed.solved and passed.reason == "passed" and passed.answer == right
    failed = checker.check("factorial", CODE_ANSWER, f"Loop up to n.\n\n{fenced(buggy)}")
    assert not failed.solved and failed.reason == "tests_failed"
    assert failed.detail.startswith("passed 1/2; test 0: fail")  # 0! is right by accident, 5! is not
    assert checker.check("factorial", CODE_ANSWER, "The answer is \\boxed{120}.").reason == "no_answer"
    # Math problems are checked as before, by the same checker.
    assert checker.check("m1", "12", "So \\boxed{12}.").solved
    assert checker.check("m1", "12", "So \\boxed{13}.").reason == "wrong_answer"
    with pytest.raises(ValueError, match="problem unknown: a code problem without tests"):
        checker.check("unknown", CODE_ANSWER, fenced(right))
    with pytest.raises(ValueError, match="need a sandbox"):
        SolutionChecker({"sum": "{}"})


def _code_critiques(keys, label="easy"):
    rows = []
    for key in keys:
        statement, _, _, right, _ = CODE_PROBLEMS[key]
        cot = f"Read the input.\n\nCompute the result.\n\n{fenced(right)}"
        rows.append({"problem_id": key, "dataset": "code", "question": statement, "answer": CODE_ANSWER, "cot": cot,
                     "cot_correct": True, "student_size": "1B", "label": label, "reply": label, "reasoning": "",
                     "unreadable": "[]", "attempts": 1, "agent_model": "m"})
    return pd.DataFrame(rows)


def test_the_verifier_runs_the_tests_on_a_rewrite_and_the_retry_is_told_which_failed(checker):
    _, _, _, right, buggy = CODE_PROBLEMS["vowels"]
    prompts = []

    def rethink(prompt, params):
        prompts.append(prompt)
        program = buggy if len(prompts) == 1 else right  # the first rewrite breaks the program
        return ("First read the word from the input.\n\nThen look at each letter in turn.\n\n"
                f"Count the letters that are vowels.\n\n{fenced(program)}")

    rethinker = Rethinker(ScriptedBackend(rethink), load_rethinker_prompts("rethink_expand.txt", "rethink_simplify.txt"),
                          SamplingParams())
    frame = crv.refine(_code_critiques(["vowels"]), rethinker, Verifier(checker=checker), "1B", max_attempts=2)
    row = frame.iloc[0]
    verdicts = json.loads(row["verdicts"])
    assert [v["reason"] for v in verdicts] == ["tests_failed", "passed"] and row["passed"]
    assert verdicts[0]["detail"].startswith("passed 0/2") and verdicts[0]["extracted"] is None
    # The retry is told that the tests failed, and which one; the first prompt asked for a program.
    assert "```python code block" in prompts[0] and "\\boxed" not in prompts[0]
    assert "failed the problem's tests (passed 0/2; test 0: fail" in prompts[1]
    assert crv.verified_set(frame)["cot"].str.contains("'aeiou'").all()


def test_code_pairs_are_guarded_by_test_outcomes(checker):
    keys = ["sum", "max", "reverse"]
    verified = []
    for key in keys:
        statement, _, _, right, _ = CODE_PROBLEMS[key]
        for role, cot in (("suited", f"Step one.\n\nStep two, in detail.\n\n{fenced(right)}"),
                          ("unsuited_original", f"Step.\n\n{fenced(right)}")):
            verified.append({"problem_id": key, "dataset": "code", "question": statement, "answer": CODE_ANSWER,
                             "label": "easy", "action": "expand", "cot": cot, "role": role,
                             "provenance": "rewritten" if role == "suited" else "original"})
    verified = pd.DataFrame(verified)
    bug = {k: f"Step.\n\n{fenced(CODE_PROBLEMS[k][4])}" for k in keys}
    incorrect = [IncorrectCot("sum", bug["sum"], "inject"),
                 # an injected "bug" that still passes, and a reply with no program at all
                 IncorrectCot("max", f"Take the largest.\n\n{fenced(CODE_PROBLEMS['max'][3])}", "inject"),
                 IncorrectCot("reverse", "I would reverse it.", "inject")]
    betas = {"small_gap": 1.0, "medium_gap": 0.75, "large_gap": 0.5}
    pairs, refused = build_pairs(verified, incorrect, betas, lambda q, a: f"{q} / {a}", checker)
    assert sorted(zip(pairs["problem_id"], pairs["pair_type"])) == [
        ("max", "small_gap"), ("reverse", "small_gap"), ("sum", "large_gap"), ("sum", "medium_gap"), ("sum", "small_gap")]
    assert dict(refused) == {"medium_gap:rejected_not_wrong": 2, "large_gap:rejected_not_wrong": 2}
    # A code problem's prompt is rendered knowing it is one (the student gets the code instruction).
    assert (pairs["prompt"].str.endswith(CODE_ANSWER)).all()
    # A slip in a number cannot make a program wrong: code problems are never perturbed.
    found, skipped = incorrect_by_perturbation(verified[verified["role"] == "suited"], seed=0, checker=checker)
    assert found == [] and skipped == {"not_perturbable": 3}


def _code_profile(tmp_path, base_url: str) -> str:
    """The test profile with a code dataset (LiveCodeBench format, local) and the reasoning double
    behind an OpenAI-compatible server as teacher and agents; students, training and evaluation
    are the test profile's."""
    write_code_dataset(tmp_path / "lcb")
    profile = yaml.safe_load(TEST_PROFILE.read_text())
    profile["datasets"] = {"code": {"source": {"kind": "livecodebench", "release": "release_v1",
                                               "local_dir": str(tmp_path / "lcb")},
                                    "answer_format": "code", "eval_fraction": 0.2, "cot_source": "teacher"}}
    profile["model_sizes"] = {"tiny-a": profile["model_sizes"]["tiny-a"]}
    profile["seeds"] = [0]
    profile["backends"]["agent"] = {"kind": "openai", "model": "qwq-double", "base_url": base_url, "api_key_env": None,
                                    "generation": {"max_new_tokens": 2048, "temperature": 0.0}}
    profile["teacher"] = {"backend": "agent", "max_new_tokens": 400}
    profile["crv"].update(critic={"max_new_tokens": 400}, rethinker={"max_new_tokens": 400})
    profile["training"]["pairs"] = {"incorrect_source": ["inject", "perturb"], "inject_max_new_tokens": 400}
    profile["training"]["cogpo"]["baselines"] = ["dpo"]
    profile["training"]["sft_baselines"] = ["sft_raw"]
    profile["evaluation"]["benchmarks"] = {}
    profile["evaluation"]["protocol"] = {"samples": 1, "max_new_tokens": 16}
    profile["sandbox"] = {"timeout_s": 5, "cpu_seconds": 5, "memory_mb": 512}
    path = tmp_path / "code.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return str(path)


ASSETS = ["problems", "raw_cots", "critiques", "rewritten_cots", "verified_set", "preference_pairs", "heldout_pairs",
          "sft_model", "cogpo_model", "eval_scores"]


@pytest.mark.slow
def test_a_code_dataset_goes_through_the_whole_graph(tmp_path, artifacts, checker):
    double = ReasoningDouble({}, programs={statement: (right, buggy)
                                           for statement, _, _, right, buggy in CODE_PROBLEMS.values()})
    with ChatServer(double, "qwq-double", reasoning_parser=False) as server, dg.instance_for_test() as instance:
        defs = build_definitions(_code_profile(tmp_path, server.base_url))
        result = defs.resolve_job_def("crv_pipeline").execute_in_process(
            partition_key="code|tiny-a", instance=instance, asset_selection=[dg.AssetKey(a) for a in ASSETS])
    assert result.success
    table = lambda asset: pd.read_parquet(table_path(artifacts / "tables", asset, "code|tiny-a"))  # noqa: E731
    right = {statement: r for statement, _, _, r, _ in CODE_PROBLEMS.values()}

    # Raw CoTs: the teacher's thinking, with its buggy draft, is the trace; they are graded by running
    # the program of the solution, never the draft.
    raw = table("raw_cots")
    ok = raw[raw["cot_status"] == "ok"]
    traces = ok["cot"].map(lambda text: parse(text).trace or "")
    assert traces.str.contains(TRACE_MARKER).all() and traces.str.contains("```python").all()
    assert ok["is_correct"].any() and not ok["is_correct"].all()  # the teacher sometimes ends on the buggy one
    for row in ok.itertuples():
        assert row.is_correct == (row.extracted_answer == right[row.question.split("\n\n")[0]])
    assert (raw["cot_status"] == "truncated").any()

    # Rewrites: every one that passed runs right; the one that broke its program was caught by the tests.
    rewritten = table("rewritten_cots")
    reasons = [v["reason"] for cell in rewritten["verdicts"] for v in json.loads(cell)]
    assert "tests_failed" in reasons and "passed" in reasons
    assert (rewritten.loc[rewritten["passed"] & (rewritten["action"] != "keep"), "rewritten_cot"]
            .str.contains("```python").all())

    # Pairs: the chosen CoT passes its tests, the rejected one (an injected bug) fails one.
    pairs = table("preference_pairs")
    assert len(pairs) and set(pairs["rejected_source"]) <= {"inject", "original"}
    for row in pairs.itertuples():
        assert checker.check(row.problem_id, CODE_ANSWER, row.chosen).solved
        assert checker.check(row.problem_id, CODE_ANSWER, row.rejected).solved == (row.pair_type == "small_gap")
        assert CODE_INSTRUCTION in row.prompt
    meta = {k: v.value for k, v in result.asset_materializations_for_node("preference_pairs")[0].metadata.items()}
    assert meta["incorrect_replies_passed_over"]["inject"].get("correct", 0) > 0  # a "bug" that kept it right

    # Training and evaluation on the held-out code problems, graded in the sandbox.
    assert {"sft", "sft_raw"} <= set(table("sft_model")["method"])
    assert {"cogpo", "dpo"} <= set(table("cogpo_model")["method"])
    scores = table("eval_scores")
    assert set(scores["method"]) == {"base", "sft", "sft_raw", "cogpo", "dpo"}
    assert (scores["num_problems"] == 2).all()
    details = pd.read_parquet(table_path(artifacts / "tables", "eval_details", "code|tiny-a"))
    assert details["verdict"].notna().all()
