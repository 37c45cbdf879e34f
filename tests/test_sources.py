import json
from pathlib import Path

import pandas as pd
import pytest

from crv_dagster.answers import is_correct
from crv_dagster.config import DatasetConfig
from crv_dagster.data.arith import generate_arith
from crv_dagster.data.sources import (
    AnswerFormatError,
    DataSourceError,
    assign_splits,
    build_problems,
    parse_reference_answer,
    read_source,
)

ROWS = [
    {"q": "What is 2 + 3?", "a": "5", "sol": "2 + 3 = 5.\n\nThe answer is \\boxed{5}."},
    {"q": "What is 10 - 4?", "a": "6", "sol": "10 - 4 = 6.\n\nThe answer is \\boxed{6}."},
    {"q": "What is 3 x 4?", "a": "12", "sol": "3 x 4 = 12.\n\nThe answer is \\boxed{12}."},
    {"q": "What is 9 / 3?", "a": "3", "sol": "9 / 3 = 3.\n\nThe answer is \\boxed{3}."},
]


def _config(source: dict, **extra) -> DatasetConfig:
    extra.setdefault("columns", {"question": "q", "answer": "a", "cot": "sol"})
    return DatasetConfig.model_validate({"source": source, **extra})


def _write(tmp_path, rows, suffix):
    path = tmp_path / f"data{suffix}"
    frame = pd.DataFrame(rows)
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    elif suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def test_builtin_arith_is_deterministic_and_its_cots_are_correct():
    first, again = generate_arith(30, seed=3), generate_arith(30, seed=3)
    assert first == again
    assert generate_arith(30, seed=4) != first
    assert len({p.question for p in first}) == 30
    for problem in first:
        assert "\n\n" in problem.cot
        assert is_correct(problem.cot, problem.answer), problem


def test_every_step_of_a_builtin_cot_computes_what_it_says():
    # The answer and the CoT come from the same code, so their agreeing proves little: each
    # "a op b = c" of every CoT is computed again (once, a speed problem's second leg was its first).
    import operator
    import re

    ops = {"+": operator.add, "-": operator.sub, "x": operator.mul, "/": operator.truediv}
    for problem in generate_arith(500, seed=11):
        steps = re.findall(r"(\d+) ([-+x/]) (\d+) = (\d+)", problem.cot)
        assert steps, problem
        for a, op, b, c in steps:
            assert ops[op](int(a), int(b)) == int(c), (problem.question, f"{a} {op} {b} = {c}")


def test_builtin_source_builds_problems():
    config = DatasetConfig.model_validate({"source": {"kind": "builtin", "name": "arith", "num_problems": 20}})
    rows = build_problems("arith", config, read_source(config))
    assert len(rows.accepted) == 20 and rows.rejected.empty
    assert set(rows.accepted["split"]) == {"train", "eval"}
    assert rows.accepted["reference_cot"].notna().all()


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_local_file_sources(tmp_path, suffix):
    path = _write(tmp_path, ROWS, suffix)
    config = _config({"kind": "file", "path": str(path)}, eval_fraction=0.25)
    rows = build_problems("toy", config, read_source(config))
    assert list(rows.accepted["answer"]) == ["5", "6", "12", "3"]
    assert (rows.accepted["split"] == "eval").sum() == 1
    assert rows.origin == str(path)


def test_hub_source_through_datasets_on_local_files(tmp_path):
    # The real load_dataset call; the "json" builder reads local files instead of the Hub.
    path = _write(tmp_path, ROWS, ".jsonl")
    config = _config({"kind": "hub", "name": "json", "split": "train", "data_files": [str(path)]})
    rows = build_problems("toy", config, read_source(config))
    assert list(rows.accepted["question"]) == [r["q"] for r in ROWS]


def test_hub_source_that_cannot_load_names_the_dataset():
    config = _config({"kind": "hub", "name": "no-such-org/no-such-dataset", "split": "train"})
    with pytest.raises(DataSourceError, match="no-such-org/no-such-dataset"):
        read_source(config)


@pytest.mark.parametrize(
    "raw, fmt, expected",
    [
        ("42", "plain", "42"),
        ("$\\frac{1}{2}$", "plain", "\\frac{1}{2}"),
        ("She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7", "gsm8k", "7"),
        ("Total 1000 + 234\n#### 1,234", "gsm8k", "1234"),
        ("So $x = \\boxed{\\frac{\\sqrt{3}}{2}}$.", "boxed", "\\frac{\\sqrt{3}}{2}"),
        ("first \\boxed{1}, finally \\boxed{2^{10}}", "boxed", "2^{10}"),
    ],
)
def test_answer_formats(raw, fmt, expected):
    assert parse_reference_answer(raw, fmt) == expected


@pytest.mark.parametrize(
    "raw, fmt, reason",
    [("", "plain", "empty"), (None, "plain", "empty"), ("no marker", "gsm8k", "####"),
     ("\\boxed{unclosed", "boxed", "boxed")],
)
def test_unparseable_answers(raw, fmt, reason):
    with pytest.raises(AnswerFormatError, match=reason):
        parse_reference_answer(raw, fmt)


def test_gsm8k_answer_column_doubles_as_cot(tmp_path):
    rows = [{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"}]
    path = _write(tmp_path, rows, ".jsonl")
    config = DatasetConfig.model_validate({
        "source": {"kind": "file", "path": str(path)}, "answer_format": "gsm8k",
        "columns": {"question": "question", "answer": "answer", "cot": "answer"}, "eval_fraction": 0.0,
    })
    problem = build_problems("g", config, read_source(config)).accepted.iloc[0]
    assert problem["answer"] == "7"
    assert "<<" not in problem["reference_cot"] and "####" not in problem["reference_cot"]
    assert is_correct(problem["reference_cot"], "7")


def test_bad_rows_are_counted_with_row_field_and_reason(tmp_path):
    rows = ROWS + [
        {"q": "", "a": "1", "sol": "x"},
        {"q": "What is 1 + 1?", "a": "", "sol": "1 + 1 = 2"},
        {"q": "What is 2 + 3?", "a": "5", "sol": "dup"},
        {"q": "What is 7 + 1?", "a": "8", "sol": ""},
    ]
    path = _write(tmp_path, rows, ".jsonl")
    config = _config({"kind": "file", "path": str(path)})
    result = build_problems("toy", config, read_source(config))
    assert len(result.accepted) == 4
    rejected = result.rejected.set_index("source_row")
    assert rejected.loc[5, "reason"] == "question is empty" and rejected.loc[5, "field"] == "q"
    assert rejected.loc[6, "reason"] == "answer is empty" and rejected.loc[6, "field"] == "a"
    assert rejected.loc[7, "reason"].endswith("(same text)")
    assert rejected.loc[8, "reason"] == "chain of thought is empty" and rejected.loc[8, "field"] == "sol"


def test_missing_file_names_the_file(tmp_path):
    config = _config({"kind": "file", "path": str(tmp_path / "absent.jsonl")})
    with pytest.raises(DataSourceError, match="absent.jsonl.*not found"):
        read_source(config)


def test_missing_column_names_file_and_column(tmp_path):
    path = _write(tmp_path, ROWS, ".csv")
    config = _config({"kind": "file", "path": str(path)}, columns={"question": "problem", "answer": "a", "cot": "sol"})
    with pytest.raises(DataSourceError) as err:
        build_problems("toy", config, read_source(config))
    assert str(path) in str(err.value) and "'problem'" in str(err.value)


def test_source_with_no_usable_rows_fails_with_reasons(tmp_path):
    path = _write(tmp_path, [{"q": "What?", "a": "no marker", "sol": "s"}], ".jsonl")
    config = _config({"kind": "file", "path": str(path)}, answer_format="gsm8k")
    with pytest.raises(DataSourceError, match=r"no usable rows.*answer column 'a'"):
        build_problems("toy", config, read_source(config))


def test_unreadable_file_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"q": "a", "a": 1}, {not json')
    with pytest.raises(DataSourceError, match="broken.json"):
        read_source(_config({"kind": "file", "path": str(path)}))


def test_jsonl_bad_lines_are_rejected_by_file_line_and_every_good_row_kept(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"question": "What is 1 + 1?", "answer": "2", "cot": "1 + 1 = 2. \\boxed{2}"}\n'
                     b'\n'                                                    # blank: skipped, still counted
                     b'{"question": "broken", "answer": \n'                   # line 3: cut JSON
                     b'{"question": "caf\xe9?", "answer": "3", "cot": "x"}\n'  # line 4: Latin-1 byte
                     b'["a", "list"]\n'                                        # line 5: not an object
                     b'{"question": "What is 2 + 2?", "answer": "", "cot": "c"}\n'   # line 6: empty answer
                     b'{"question": "What is 3 + 3?", "answer": "6", "cot": "3 + 3 = 6. \\boxed{6}"}\n')
    config = _config({"kind": "file", "path": str(path)}, columns={"cot": "cot"})
    rows = build_problems("toy", config, read_source(config))
    assert list(rows.accepted["source_row"]) == [1, 7]
    assert list(rows.rejected["source_row"]) == [3, 4, 5, 6]
    reasons = dict(zip(rows.rejected["source_row"], rows.rejected["reason"]))
    assert reasons[3].startswith("invalid JSON") and "UTF-8" in reasons[4] and "not an object" in reasons[5]
    assert reasons[6] == "answer is empty"


def test_an_empty_file_says_it_has_no_rows(tmp_path):
    for name in ("empty.jsonl", "empty.csv"):
        (tmp_path / name).write_text("")
        with pytest.raises(DataSourceError, match=rf"{name}.*no rows"):
            read_source(_config({"kind": "file", "path": str(tmp_path / name)}))


def test_splits_are_seeded_and_independent_of_row_order():
    ids = pd.Series([f"p{i}" for i in range(50)])
    splits = dict(zip(ids, assign_splits(ids, 0.2, seed=7)))
    shuffled = ids.sample(frac=1.0, random_state=1)
    assert dict(zip(shuffled, assign_splits(shuffled, 0.2, seed=7))) == splits
    assert sum(s == "eval" for s in splits.values()) == 10
    assert dict(zip(ids, assign_splits(ids, 0.2, seed=8))) != splits


def _openthoughts(**extra) -> DatasetConfig:
    """OpenThoughts-114k's `metadata` layout: the thinking and the solution in their own columns, a
    domain per row, APPS-style test cases for code (a sample of its rows' shapes, written here)."""
    return DatasetConfig(
        source={"kind": "file", "path": str(Path(__file__).parent / "data" / "openthoughts_metadata_sample.jsonl")},
        columns={"question": "problem", "answer": "ground_truth_solution", "cot": "deepseek_solution",
                 "reasoning": "deepseek_reasoning", "tests": "test_cases", "starter_code": "starter_code"},
        format_column="domain", formats={"math": "boxed", "code": "code", "biology": "boxed", "chemistry": "boxed"},
        cot_source="dataset", **{"eval_fraction": 0.0, **extra})


def test_one_dataset_mixes_math_code_and_science_by_each_rows_domain():
    result = build_problems("r1", _openthoughts(), read_source(_openthoughts()))
    accepted = result.accepted.set_index("source_row")
    assert sorted(accepted.index) == [1, 2, 4]
    assert accepted.loc[1, "answer"] == "5" and accepted.loc[4, "answer"] == "mitochondria"
    # The teacher's thinking becomes the trace, the solution follows it.
    assert all(cot.startswith("<think>\n") and "\n</think>\n\n" in cot for cot in accepted["reference_cot"])
    tests = json.loads(accepted.loc[2, "tests"])
    assert tests["cases"] == [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"},
                              {"input": "4 5", "output": "9", "testtype": "stdin"}]
    reasons = dict(zip(result.rejected["source_row"], result.rejected["reason"]))
    assert "call-based tests (fn_name 'add') are not run here" in reasons[3]
    assert reasons[5] == "answer is empty" or "empty" in reasons[5]
    assert reasons[6] == "'puzzle' is not one of formats ['biology', 'chemistry', 'code', 'math']"


def test_a_seeded_sample_mixes_kinds_and_nests_across_sizes():
    def rows(name: str, count: int, seed: int) -> pd.DataFrame:
        config = _openthoughts(max_problems=count, sample_seed=seed, eval_fraction=0.5)
        return build_problems(name, config, read_source(config)).accepted.set_index("source_row")

    for seed in range(20):
        # Two data scales are two datasets of one source: the smaller's problems, and each one's
        # split, are the larger's, whatever the seed.
        small, large = rows("r1_2k", 2, seed), rows("r1_8k", 3, seed)
        assert len(small) == 2 and set(small.index) < set(large.index)
        assert (small["split"] == large.loc[small.index, "split"]).all()
    first_rows = _openthoughts(max_problems=2)
    assert list(build_problems("r1", first_rows, read_source(first_rows)).accepted["source_row"]) == [1, 2]


def test_formats_need_their_column():
    with pytest.raises(ValueError, match="format_column and formats go together"):
        DatasetConfig(source={"kind": "file", "path": "x.jsonl"}, columns={"cot": "c"}, formats={"math": "boxed"})
