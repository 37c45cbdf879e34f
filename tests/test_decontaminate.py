"""Benchmark problems kept out of training, duplicates dropped, and bad rows rejected one by one."""

import json

import dagster as dg
import pandas as pd
import pytest
import yaml
from profiles import TEST_PROFILE

from crv_dagster.config import DatasetConfig, DecontaminationConfig
from crv_dagster.data.decontaminate import DuplicateFinder, ReferenceIndex, mark_contaminated, normalize
from crv_dagster.data.sources import TextLimit, build_problems, read_source
from crv_dagster.orchestration.definitions import build_definitions
from crv_dagster.storage import table_path

# Competition-style problems, written for these tests.
BENCHMARK = {
    "b1": r"Let $f(x) = 3x^2 - 5x + 2$. Find the sum of all real values of $x$ for which $f(f(x)) = 2$.",
    "b2": r"How many positive integers $n \le 1000$ have the property that $n^2 + n + 41$ is divisible by $7$?",
    "b3": r"A regular hexagon has side length $4$. What is the area of the circle inscribed in the hexagon? "
          r"Express your answer in terms of $\pi$.",
    "b4": r"Compute $\left\lfloor \frac{2024}{17} \right\rfloor + \left\lceil \frac{2024}{19} \right\rceil$.",
    "b5": "What is 7 + 5?",
}
UNRELATED = [
    r"The sum of three consecutive odd integers is $141$. What is the largest of the three integers?",
    r"A bag holds $5$ red and $7$ blue marbles. Two are drawn without replacement. What is the probability "
    r"that both are blue?",
    r"Find the remainder when $2^{100}$ is divided by $13$.",
    r"Let $f(t) = t^3 - 2t$. For which real values of $t$ does $f(t)$ equal its derivative?",
    r"A rectangle has perimeter $30$ and diagonal $\sqrt{113}$. What is its area?",
    "What is 7 + 6?",
]


def _index(**kwargs):
    return ReferenceIndex({"bench": list(BENCHMARK.items())}, **kwargs)


@pytest.mark.parametrize("planted, expected", [
    # re-spaced, re-cased, re-typeset versions of benchmark problems
    (r"LET $f(x)=3x^2-5x+2$.   find the SUM of all real values of $x$ for which $f(f(x))=2$.", "b1"),
    (r"How many positive integers $n \leq 1000$ have the property that $n^2+n+41$ is divisible by $7$ ?",
     "b2"),
    (r"A regular hexagon has side length 4. What is the area of the circle inscribed in the hexagon?", "b3"),
    (r"Compute $\lfloor \frac{2024}{17} \rfloor + \lceil \frac{2024}{19} \rceil$.", "b4"),
    ("what is 7+5 ?", "b5"),  # too short for an 8-gram: equal normalised text
    # a benchmark problem inside a longer training problem
    (r"Warm-up first. " + BENCHMARK["b3"] + " Then double it.", "b3"),
])
def test_planted_benchmark_problems_are_found(planted, expected):
    match = _index().match(planted)
    assert match is not None and (match.benchmark, match.problem_id) == ("bench", expected)


def test_unrelated_problems_are_never_marked():
    index = _index()
    assert [index.match(q) for q in UNRELATED] == [None] * len(UNRELATED)


def test_phrasing_many_benchmark_problems_share_is_not_evidence():
    boiler = "Think step by step and put your final answer in a box at the end."
    references = {"bench": [(f"p{i}", f"Problem {i}: compute {i} times {i + 3}. {boiler}") for i in range(40)]}
    index = ReferenceIndex(references, common_share=0.05)
    assert index.common_ngrams > 0
    assert index.match(f"Add two and eleven. {boiler}") is None
    assert index.match("Problem 12: compute 12 times 15. Show your work.") is None  # short of 8 shared words
    assert index.match(f"Problem 12: compute 12 times 15. {boiler}") is not None  # the whole problem is there


def test_normalisation_removes_what_the_project_adds_and_latex_spacing():
    assert normalize("What is $x\\,+\\;y$?\n\nA) 1\nB) 2\n\nAnswer with the letter of the correct option.") == \
        "what is x + y a 1 b 2"
    # Operators and relations are kept: these are different problems.
    assert normalize("Solve $2x+3=7$.") != normalize("Solve $2x-3=7$.")
    assert normalize("x > 3") != normalize("x < 3")
    assert normalize("Ｆｕｌｌｗｉｄｔｈ  TEXT") == "fullwidth text"


def test_mark_contaminated_moves_only_training_rows_and_names_the_match():
    problems = pd.DataFrame({"problem_id": ["t1", "t2", "e1"], "split": ["train", "train", "eval"],
                             "question": [BENCHMARK["b2"].upper(), UNRELATED[0], BENCHMARK["b1"]]})
    references = {"bench": pd.DataFrame({"problem_id": list(BENCHMARK), "question": list(BENCHMARK.values())})}
    marked, counts = mark_contaminated(problems, references, DecontaminationConfig())
    assert marked["split"].tolist() == ["contaminated", "train", "eval"]  # an eval row is never moved
    assert marked["contaminated_with"].tolist()[:2] == ["bench:b2", None]
    assert counts == {"bench": 1}


def test_duplicates_within_training_are_found_exactly_and_nearly():
    finder = DuplicateFinder(n=8, near_duplicate=0.5)
    assert finder.seen(BENCHMARK["b1"], 1) is None
    assert finder.seen(BENCHMARK["b3"], 2) is None
    assert finder.seen("  " + BENCHMARK["b1"].upper(), 3) == (1, "same normalised text")
    near = BENCHMARK["b3"].replace("Express your answer in terms of $\\pi$.", "Give the answer as a decimal.")
    earlier, how = finder.seen(near, 4)
    assert earlier == 2 and "8-grams" in how
    assert finder.seen(UNRELATED[2], 5) is None
    exact_only = DuplicateFinder(n=None)
    assert exact_only.seen(BENCHMARK["b3"], 1) is None and exact_only.seen(near, 2) is None


def _write(path, rows):
    path.write_text("\n".join(rows) + "\n")
    return path


def _config(path, **kwargs):
    return DatasetConfig(source={"kind": "file", "path": str(path)}, columns={"question": "q", "answer": "a"},
                         cot_source="teacher", eval_fraction=0.0, **kwargs)


def test_each_bad_row_is_rejected_with_its_line_and_field_and_the_others_are_kept(tmp_path):
    # A lone surrogate (a broken escape) in a question, a JSON list as an answer, an object as an
    # answer, a boolean, and a question far longer than the student could read.
    path = _write(tmp_path / "train.jsonl", [
        json.dumps({"q": "What is 2 + 2?", "a": 4}),
        '{"q": "Broken \\ud800 text?", "a": "1"}',
        json.dumps({"q": "Which two primes sum to 5?", "a": [2, 3]}),
        json.dumps({"q": "Name it.", "a": {"x": 1}}),
        json.dumps({"q": "True or false?", "a": True}),
        json.dumps({"q": "Long? " + "word " * 200_000, "a": "1"}),
        json.dumps({"q": "What is 3 + 3?", "a": 6.0}),
    ])
    calls = []

    def count(text):
        calls.append(len(text))
        return len(text.split())

    rows = build_problems("toy", _config(path), read_source(_config(path)), limit=TextLimit(2048, count, "test limit"))
    assert rows.accepted["question"].tolist() == ["What is 2 + 2?", "What is 3 + 3?"]
    rejected = {r.source_row: (r.field, r.reason) for r in rows.rejected.itertuples()}
    assert rejected[2][0] == "q" and "cannot be encoded as UTF-8" in rejected[2][1]
    assert rejected[3] == ("a", "answer is a list ([2, 3]), not text or a number")
    assert rejected[4][0] == "a" and "a dict" in rejected[4][1]
    assert rejected[5][0] == "a" and "a bool" in rejected[5][1]
    assert rejected[6][0] == "q" and "200001 tokens, over the limit of 2048 (test limit)" in rejected[6][1]
    assert len(calls) == 1  # only the text longer than the limit in bytes was tokenized


def test_duplicate_rows_are_dropped_and_named(tmp_path):
    path = _write(tmp_path / "train.jsonl", [json.dumps({"q": q, "a": "1"}) for q in (
        BENCHMARK["b1"], UNRELATED[0], BENCHMARK["b1"].lower().replace(" ", "  "))])
    rows = build_problems("toy", _config(path), read_source(_config(path)), DecontaminationConfig())
    assert len(rows.accepted) == 2
    assert rows.rejected[["source_row", "field", "reason"]].values.tolist() == [
        [3, "q", "duplicate of row 1 (same normalised text)"]]


def test_problems_sets_planted_benchmark_problems_aside_and_warns(artifacts, tmp_path):
    bench = _write(tmp_path / "bench.jsonl", [json.dumps({"q": q, "a": "1"}) for q in BENCHMARK.values()])
    planted = [BENCHMARK["b2"].upper(), BENCHMARK["b4"].replace("$", "")]
    train = _write(tmp_path / "train.jsonl", [json.dumps({"q": q, "a": "1", "c": "Because. \\boxed{1}"})
                                              for q in UNRELATED[:5] + planted])
    profile = yaml.safe_load(TEST_PROFILE.read_text())
    profile["datasets"]["arith"] = {"source": {"kind": "file", "path": str(train)},
                                    "columns": {"question": "q", "answer": "a", "cot": "c"}, "eval_fraction": 0.0}
    profile["evaluation"]["benchmarks"] = {"math_like": {"source": {"kind": "file", "path": str(bench)},
                                                         "columns": {"question": "q", "answer": "a"}}}
    profile["decontamination"] = {"ngram": 8}
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    defs = build_definitions(path)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("crv_pipeline").execute_in_process(
            partition_key="arith|tiny-a", instance=instance, asset_selection=[dg.AssetKey("problems")])
    problems = pd.read_parquet(table_path(artifacts / "tables", "problems", "arith|tiny-a"))
    marked = problems[problems["split"] == "contaminated"]
    assert sorted(marked["source_row"]) == [6, 7]
    assert marked["contaminated_with"].str.startswith("math_like:math_like-").all()
    assert marked["contaminated_with"].nunique() == 2
    assert (problems.loc[problems["source_row"] <= 5, "split"] == "train").all()
    [event] = result.asset_materializations_for_node("problems")
    assert event.metadata["num_contaminated"].value == 2
    assert event.metadata["contaminated_by_benchmark"].value == {"math_like": 2}
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "no_contamination" and not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
