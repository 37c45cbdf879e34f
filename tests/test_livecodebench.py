"""LiveCodeBench as a benchmark: records in code_generation_lite's format, programs run against
their tests in the sandbox, scored through the eval_scores asset."""

import base64
import json
import pickle
import zlib

import dagster as dg
import pandas as pd
import pytest
import yaml
from profiles import TEST_PROFILE
from scripted import ScriptedBackend

from crv_dagster.config import DatasetConfig, LiveCodeBenchSource
from crv_dagster.data.sources import build_problems, read_source
from chat_server import ChatServer
from crv_dagster.orchestration.definitions import build_definitions
from crv_dagster.storage import table_path

STDIN_PROBLEM = "Read two integers and print their sum."
FUNCTIONAL_PROBLEM = "Return the largest element of nums."
RIGHT = {STDIN_PROBLEM: "a, b = map(int, input().split())\nprint(a + b)\n",
         FUNCTIONAL_PROBLEM: "class Solution:\n    def largest(self, nums: List[int]) -> int:\n        return max(nums)\n"}
WRONG = {STDIN_PROBLEM: "a, b = map(int, input().split())\nprint(a - b)\n",
         FUNCTIONAL_PROBLEM: "class Solution:\n    def largest(self, nums: List[int]) -> int:\n        return nums[0]\n"}


def _compressed(cases) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


def write_release(folder) -> None:
    """A two-problem release_v1 file in LiveCodeBench's layout: one stdin, one functional problem
    (its private tests in the compressed form)."""
    folder.mkdir(parents=True, exist_ok=True)
    stdin_cases = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"},
                   {"input": "10 -4\n", "output": "6\n", "testtype": "stdin"}]
    functional = [{"input": "[3, 9, 2]", "output": "9", "testtype": "functional"}]
    functional_private = [{"input": "[1, 5, 7]", "output": "7", "testtype": "functional"}]
    records = [
        {"question_title": "sum", "question_content": STDIN_PROBLEM, "platform": "atcoder", "question_id": "abc001_a",
         "contest_id": "abc001", "contest_date": "2023-05-01T00:00:00", "starter_code": "", "difficulty": "easy",
         "public_test_cases": json.dumps(stdin_cases[:1]), "private_test_cases": json.dumps(stdin_cases[1:]),
         "metadata": "{}"},
        {"question_title": "largest", "question_content": FUNCTIONAL_PROBLEM, "platform": "leetcode",
         "question_id": "lc-1", "contest_id": "weekly-1", "contest_date": "2023-06-01T00:00:00",
         "starter_code": "class Solution:\n    def largest(self, nums: List[int]) -> int:\n        ",
         "difficulty": "easy", "public_test_cases": json.dumps(functional),
         "private_test_cases": _compressed(functional_private), "metadata": json.dumps({"func_name": "largest"})},
    ]
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_a_release_reads_as_code_problems_with_their_tests(tmp_path):
    write_release(tmp_path / "lcb")
    config = DatasetConfig(source=LiveCodeBenchSource(kind="livecodebench", release="release_v1",
                                                      local_dir=str(tmp_path / "lcb")),
                           answer_format="code", eval_fraction=0.0, cot_source="teacher")
    problems = build_problems("lcb", config, read_source(config)).accepted.set_index("problem_id")
    assert list(problems.index) == ["abc001_a", "lc-1"]
    stdin_tests, functional_tests = (json.loads(problems.loc[k, "tests"]) for k in ("abc001_a", "lc-1"))
    assert [c["output"] for c in stdin_tests["cases"]] == ["3\n", "6\n"] and stdin_tests["func_name"] is None
    assert [c["output"] for c in functional_tests["cases"]] == ["9", "7"]  # public, then the decompressed private
    assert functional_tests["func_name"] == "largest"
    assert "```python\nclass Solution:" in problems.loc["lc-1", "question"]
    assert "standard input" in problems.loc["abc001_a", "question"]


def test_release_names_map_to_the_cumulative_files():
    files = lambda release: LiveCodeBenchSource(kind="livecodebench", release=release).files  # noqa: E731
    assert files("release_v1") == ["test.jsonl"] and len(files("release_v6")) == 6 == len(files("release_latest"))
    assert files("v4_v5") == ["test4.jsonl", "test5.jsonl"] and files("v2") == ["test2.jsonl"]
    with pytest.raises(ValueError):
        LiveCodeBenchSource(kind="livecodebench", release="release_v9")


def _coder(programs: dict[str, str]):
    """A model that answers each problem with the program given for it, after some reasoning."""
    def reply(prompt, params):
        question = next((q for q in programs if q in prompt), None)
        if question is None:  # any other question (critiques asks it the training problems): no program
            return "I am not sure how to solve this one."
        return f"Let me think about the input format first.\n\n```python\n{programs[question]}```\n"
    return ScriptedBackend(reply)


def _profile(tmp_path, base_url: str, served: str) -> str:
    """The test profile for one size and seed, scored only on the LiveCodeBench file, by a coder
    behind an OpenAI-compatible server."""
    profile = yaml.safe_load(TEST_PROFILE.read_text())
    profile["datasets"] = {"arith": profile["datasets"]["arith"]}
    profile["model_sizes"] = {"tiny-a": profile["model_sizes"]["tiny-a"]}
    profile["seeds"] = [0]
    profile["training"]["cogpo"]["baselines"] = []
    profile["training"]["sft_baselines"] = []
    profile["backends"]["coder"] = {"kind": "openai", "model": served, "base_url": base_url, "api_key_env": None}
    profile["evaluation"] = {"backend": "coder", "heldout": False, "protocol": {"samples": 1, "max_new_tokens": 256},
                             "benchmarks": {"lcb": {"source": {"kind": "livecodebench", "release": "release_v1",
                                                               "local_dir": str(tmp_path / "lcb")},
                                                    "answer_format": "code"}}}
    path = tmp_path / f"{served}.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return str(path)


def test_eval_scores_give_a_right_solution_1_and_a_wrong_one_0(tmp_path, artifacts):
    write_release(tmp_path / "lcb")
    scores = {}
    with dg.instance_for_test() as instance:
        for served, programs in (("coder-right", RIGHT), ("coder-wrong", WRONG)):
            with ChatServer(_coder(programs), served) as server:
                defs = build_definitions(_profile(tmp_path, server.base_url, served))
                result = defs.resolve_job_def("crv_pipeline").execute_in_process(
                    partition_key="arith|tiny-a", instance=instance, asset_selection=[
                        dg.AssetKey(a) for a in ("problems", "raw_cots", "critiques", "rewritten_cots", "verified_set",
                                                 "preference_pairs", "heldout_pairs", "sft_model", "cogpo_model",
                                                 "eval_scores")])
                assert result.success
            scores[served] = pd.read_parquet(table_path(artifacts / "tables", "eval_scores", "arith|tiny-a"))
            details = pd.read_parquet(table_path(artifacts / "tables", "eval_details", "arith|tiny-a"))
            if served == "coder-wrong":
                assert details["verdict"].str.contains("fail").all()
    right, wrong = scores["coder-right"], scores["coder-wrong"]
    assert set(right["benchmark"]) == {"lcb"} and set(right["method"]) == {"base", "sft", "cogpo"}
    assert (right["accuracy"] == 1.0).all() and (wrong["accuracy"] == 0.0).all()
    assert (right["num_problems"] == 2).all()
