import json
import re

import numpy as np
import pandas as pd
import pytest
from scripted import ScriptedBackend

from crv_dagster.config import EvalProtocol
from crv_dagster.evaluation.aggregate import compare_with, pool_seeds
from crv_dagster.evaluation.report import accuracy_plot, parameter_count, results_markdown
from crv_dagster.evaluation.scoring import generate_answers, summarize
from crv_dagster.schemas import eval_scores_schema, results_schema

PROBLEMS = pd.DataFrame({
    "problem_id": ["a", "b", "c", "d"],
    "question": ["1/2 + 1/4?", "nested?", "none?", "7 x 6?"],
    "answer": ["\\frac{3}{4}", "\\frac{\\sqrt{2}}{2}", "5", "42"],
})


def test_scoring_on_known_answers():
    replies = {"1/2 + 1/4?": "Add them: 2/4 + 1/4 = 3/4, so \\boxed{0.75}.",
               "nested?": "It is \\boxed{\\frac{\\sqrt{2}}{2}}.",
               "none?": "I am not sure how to do this.",
               "7 x 6?": "7 x 6 = 48, so \\boxed{48}."}
    backend = ScriptedBackend(lambda prompt, params: next(v for k, v in replies.items() if prompt.startswith(k)))
    details = generate_answers(backend, "sft", "toy", PROBLEMS, EvalProtocol(samples=1))
    assert list(details["correct"]) == [True, True, False, False]
    assert list(details["extracted_answer"].fillna("-")) == ["0.75", "\\frac{\\sqrt{2}}{2}", "-", "48"]
    # The student sees the shared prompt: the question and the \\boxed{} instruction.
    assert all("\\boxed{}" in p for p in backend.prompts)
    [summary] = summarize(details).to_dict("records")
    assert summary["accuracy"] == 0.5 and summary["num_problems"] == 4
    assert summary["no_answer_share"] == 0.25


def test_pass_at_1_is_the_mean_over_samples():
    # Problem a right in 3 of 4 samples, problem d right in 1 of 4: pass@1 = (0.75 + 0.25) / 2.
    outcomes = {"1/2": iter(["\\boxed{3/4}", "\\boxed{3/4}", "\\boxed{1}", "\\boxed{0.75}"]),
                "7 x": iter(["\\boxed{42}", "\\boxed{41}", "\\boxed{40}", "no idea"])}
    seeds = []

    def reply(prompt, params):
        seeds.append(params.seed)
        return next(outcomes[prompt[:3]])

    details = generate_answers(ScriptedBackend(reply), "base", "toy", PROBLEMS.iloc[[0, 3]],
                               EvalProtocol(samples=4, temperature=0.8, seed=10))
    [summary] = summarize(details).to_dict("records")
    assert summary["accuracy"] == pytest.approx(0.5)
    assert summary["num_samples"] == 4 and summary["no_answer_share"] == pytest.approx(1 / 8)
    assert sorted(set(seeds)) == [10, 11, 12, 13]


def _scores(seeds=(0,)):
    """Per-seed eval_scores: 20 problems per benchmark, a share right that grows with size and method."""
    rows = []
    for size, base in (("small", 0.1), ("big", 0.3)):
        for method, bump in (("base", 0.0), ("sft", 0.1), ("cogpo", 0.2)):
            for bench in ("heldout", "bench"):
                for seed in seeds:
                    right = round(20 * (base + bump))
                    problem_scores = {f"p{i:02d}": float(i < right) for i in range(20)}
                    rows.append({"dataset": "d", "model_size": size, "method": method, "seed": seed,
                                 "model_path": "/m", "benchmark": bench, "accuracy": right / 20, "num_problems": 20,
                                 "num_samples": 1, "mean_response_tokens": 10.0, "no_answer_share": 0.0,
                                 "truncated_share": 0.0, "ci_low": 0.0, "ci_high": 1.0,
                                 "problem_scores": json.dumps(problem_scores), "protocol": "{}",
                                 "cons_at_n": right / 20, "benchmark_source": f"file:{bench}.jsonl",
                                 "data_prompt_tokens": 0 if method == "base" else 1000,
                                 "data_completion_tokens": 0 if method == "base" else 3000,
                                 "train_device_s": 0.0 if method == "base" else 30.0,
                                 "cost": 0.0 if method == "base" else 1.25})
    # Each checkpoint against CogPO's of the same size, seed and benchmark, as eval_scores has them.
    return compare_with(pd.DataFrame(rows), "cogpo", by=("model_size", "seed", "benchmark"))


def test_results_table_has_the_paper_shape():
    scores = _scores()
    eval_scores_schema.validate(scores[scores["model_size"] == "small"])
    pooled = pool_seeds(scores)
    results_schema.validate(pooled)
    table = results_markdown(pooled, {"small": "135M", "big": "1.5B"})
    lines = table.splitlines()
    assert lines[0] == "| model size | method | heldout | bench | average | data tokens | training | cost |"
    # base gets 2 of 20 right, CogPO 6 of 20 (the first ones): the paired test alone tells them apart,
    # not after adjusting for the table's 8 comparisons, so no mark.
    base = pooled[(pooled["model_size"] == "small") & (pooled["method"] == "base")]
    assert (base["p_vs_cogpo"] < 0.05).all() and (base["p_vs_cogpo_holm"] >= 0.05).all()
    # One seed: the t interval over problems, 10% +- 2.09 x 6.9 points, clipped at 0.
    assert re.fullmatch(r"\| small \(135M\) \| Base \| 10\.0 \(0\.0–24\.4\) \| 10\.0 \(0\.0–24\.4\) \| 10\.0 \(.*\) \| "
                        r"0 \| 0 s \| 0\.00 \|", lines[2]), lines[2]
    assert lines[4].startswith("|  | SFT + CogPO | 30.0 (8.0–52.0) | 30.0 (8.0–52.0) | 30.0 (")
    # Every difference with its interval beside its p-value; one seed each: checkpoints, and said so.
    assert "| small | bench | Base | -20.0 | -39.2 to -0.8 | 0.042 | 0.337 |" in table
    assert set(pooled["compared_as"].dropna()) == {"checkpoints"} and "between two checkpoints" in table
    assert lines[4].endswith("| 4.0k | 30 s | 1.25 |")  # what its data and training cost
    assert lines[5].startswith("| big (1.5B) | Base | 30.0")  # blocks ordered by size
    assert "mean over 1 seed;" in table


def test_seeds_are_pooled_problem_by_problem():
    scores = _scores(seeds=(0, 1))
    # seed 1 of CogPO (small, bench) gets four more problems right: 10 of 20 instead of 6.
    hit = (scores["method"] == "cogpo") & (scores["seed"] == 1) & (scores["model_size"] == "small") & (
        scores["benchmark"] == "bench")
    scores.loc[hit, "problem_scores"] = json.dumps({f"p{i:02d}": float(i < 10) for i in range(20)})
    scores.loc[hit, "accuracy"] = 0.5
    pooled = pool_seeds(scores).set_index(["model_size", "method", "benchmark"])
    row = pooled.loc[("small", "cogpo", "bench")]
    assert row["accuracy"] == pytest.approx(0.4) and row["num_seeds"] == 2 and row["num_problems"] == 20
    assert json.loads(row["seed_accuracies"]) == {"0": 0.3, "1": 0.5}
    assert row["seed_std"] == pytest.approx(np.std([0.3, 0.5], ddof=1))
    assert row["ci_low"] < 0.4 < row["ci_high"]
    assert pooled.loc[("small", "cogpo", "heldout"), "seed_std"] == 0.0
    # 0.3 and 0.5 on the same problems: the seeds differ far more than problem noise explains.
    assert row["seed_var"] > 0 and pooled.loc[("small", "cogpo", "heldout"), "seed_var"] == 0.0
    # Against the untrained base (2 of 20), that seed spread is what keeps the difference uncertain:
    # its interval is wider than the one over problems alone, and it still counts as methods compared.
    base = pooled.loc[("small", "base", "bench")]
    assert pd.isna(row["p_vs_cogpo"]) and base["compared_as"] == "methods"
    single = pool_seeds(scores[scores["seed"] == 1]).set_index(["model_size", "method", "benchmark"])
    alone = single.loc[("small", "base", "bench")]
    assert alone["compared_as"] == "checkpoints" and alone["p_vs_cogpo"] < 0.01 < base["p_vs_cogpo"]
    assert base["diff_vs_cogpo_high"] - base["diff_vs_cogpo_low"] > alone["diff_vs_cogpo_high"] - alone["diff_vs_cogpo_low"]


def test_accuracy_plot_has_the_sizes_on_its_axis_and_no_accuracy_below_zero():
    pooled = pool_seeds(_scores())
    png, axes = accuracy_plot(pooled, {"small": "135M", "big": "1.5B"})
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # One tick per student, smallest first, named as the profile names it: not methods around a size.
    assert axes["x_ticks"] == ["small\n(135M)", "big\n(1.5B)"]
    # A margin around 0-100%, so that a point at 0 stands clear of the x axis.
    assert axes["y_range"][0] < 0 and axes["y_range"][1] > 100 and axes["lines"] == pooled["method"].nunique()
    assert axes["max_offset_from_tick"] < 0.1


def test_accuracy_plot_of_one_size_keeps_the_methods_at_its_tick():
    scores = _scores()
    scores = scores[scores["model_size"] == "small"].assign(accuracy=0.0)
    png, axes = accuracy_plot(pool_seeds(scores), {"small": "135M", "big": "1.5B"})
    assert axes["x_ticks"] == ["small\n(135M)"]
    # Around the size's tick, not spread to the axis' edges.
    assert axes["max_offset_from_tick"] < 0.1
    assert axes["y_range"][0] < 0


def test_results_keep_the_benchmark_order_of_eval_scores():
    from crv_dagster.stages.results import results_frame

    scores = _scores()
    frame = results_frame(scores)
    # eval_scores lists the held-out split first; sorted by name, "bench" would come first.
    assert list(dict.fromkeys(frame["benchmark"])) == ["heldout", "bench"]
    sizes = {"small": "135M", "big": "1.5B"}
    assert results_markdown(frame, sizes).split("\n")[0] == results_markdown(pool_seeds(scores), sizes).split("\n")[0]


@pytest.mark.parametrize("text, value", [("135M", 1.35e8), ("1.5B", 1.5e9), ("7b", 7e9), ("big", float("inf"))])
def test_parameter_count(text, value):
    assert parameter_count(text) == value


# --------------------------------------------------------------------------- multiple choice

GPQA_ROWS = [
    {"Question": f"Which particle is number {i}?", "Correct Answer": f"the right one {i}",
     "Incorrect Answer 1": f"wrong a{i}", "Incorrect Answer 2": f"wrong b{i}", "Incorrect Answer 3": f"wrong c{i}",
     "Explanation": "..."}
    for i in range(12)
]


def _gpqa_problems(tmp_path, seed=0):
    from crv_dagster.config import BenchmarkConfig, DatasetConfig
    from crv_dagster.data.sources import build_problems, read_source

    path = tmp_path / "gpqa.csv"
    pd.DataFrame(GPQA_ROWS).to_csv(path, index=False)
    bench = BenchmarkConfig.model_validate({
        "source": {"kind": "file", "path": str(path)}, "answer_format": "multiple_choice",
        "columns": {"question": "Question", "answer": "Correct Answer",
                    "choices": ["Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]}})
    config = DatasetConfig(source=bench.source, columns=bench.columns, answer_format=bench.answer_format,
                           eval_fraction=0.0, cot_source="teacher", split_seed=seed)
    return build_problems("gpqa", config, read_source(config)).accepted


def test_a_gpqa_style_file_loads_as_multiple_choice_in_a_seeded_order(tmp_path):
    import json

    problems = _gpqa_problems(tmp_path)
    for row in problems.itertuples():
        options = json.loads(row.choices)
        assert sorted(options) == ["A", "B", "C", "D"] and options[row.answer].startswith("the right one")
        for letter, text in options.items():
            assert f"{letter}) {text}" in row.question
    # The right option is not always first (the file lists it first), and the order is reproducible.
    assert len(set(problems["answer"])) > 1
    assert list(_gpqa_problems(tmp_path)["answer"]) == list(problems["answer"])
    assert list(_gpqa_problems(tmp_path, seed=1)["answer"]) != list(problems["answer"])


def test_multiple_choice_grades_the_letter(tmp_path):
    import json
    import re

    problems = _gpqa_problems(tmp_path)
    by_question = dict(zip(problems["question"], problems["choices"]))

    def letter_of(prompt, wanted):
        options = json.loads(next(c for q, c in by_question.items() if prompt.startswith(q)))
        return next(k for k, v in options.items() if v.startswith(wanted))

    right = ScriptedBackend(lambda p, s: f"The option that fits is \\boxed{{{letter_of(p, 'the right one')}}}.")
    details = generate_answers(right, "sft", "gpqa", problems, EvalProtocol())
    assert summarize(details)["accuracy"].item() == 1.0

    # The option's text in the box counts; a wrong letter, and a number in passing, do not.
    replies = iter(["\\boxed{the right one 0}", "Answer: " + letter_of(problems["question"][1], "wrong a"),
                    "There are 4 options and option 2 looks right."] + ["no"] * 9)
    details = generate_answers(ScriptedBackend(lambda p, s: next(replies)), "base", "gpqa", problems, EvalProtocol())
    assert list(details["correct"][:3]) == [True, False, False]
    assert details["extracted_answer"][2] is None
    assert re.fullmatch(r"[A-D]", details["extracted_answer"][1])


def test_a_response_cut_at_the_budget_has_no_answer():
    backend = ScriptedBackend(lambda p, s: "7 x 6 = 42, so \\boxed{42}", finish_reason="length")
    details = generate_answers(backend, "base", "toy", PROBLEMS.iloc[[3]], EvalProtocol())
    assert not details["correct"].any() and details["extracted_answer"].isna().all()
    assert summarize(details)["truncated_share"].item() == 1.0


def test_the_last_number_fallback_is_part_of_the_protocol():
    backend = ScriptedBackend(lambda p, s: "7 x 6 makes 42")
    lenient = generate_answers(backend, "base", "toy", PROBLEMS.iloc[[3]], EvalProtocol())
    strict = generate_answers(backend, "base", "toy", PROBLEMS.iloc[[3]], EvalProtocol(last_number_fallback=False))
    assert lenient["correct"].all() and not strict["correct"].any()


# --------------------------------------------------------------------------- uncertainty


def test_bootstrap_interval_on_known_cases():
    import numpy as np

    from crv_dagster.evaluation.statistics import bootstrap_interval

    assert bootstrap_interval([1.0] * 30) == (1.0, 1.0)
    assert bootstrap_interval([0.0] * 30) == (0.0, 0.0)
    n = 400
    low, high = bootstrap_interval([1.0, 0.0] * (n // 2))
    half_width = 1.96 * np.sqrt(0.25 / n)
    assert low == pytest.approx(0.5 - half_width, abs=0.01) and high == pytest.approx(0.5 + half_width, abs=0.01)


def test_paired_test_finds_a_planted_difference_and_not_an_absent_one():
    from crv_dagster.evaluation.statistics import method_difference, method_estimate, seed_component

    rng = np.random.default_rng(1)
    base = (rng.random(200) < 0.4).astype(float)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:30]] = 1.0  # 30 more problems right, nothing else changed
    one = seed_component(better[None, :])  # one checkpoint: no seed variance to estimate
    found = method_difference(better, base, one, one)
    assert found.p_value < 0.01 and found.low > 0 and found.value == pytest.approx(0.15)
    assert not found.counts_seeds
    noise = base.copy()
    flip = rng.choice(200, size=20, replace=False)
    noise[flip[:10]], noise[flip[10:]] = 1.0 - noise[flip[:10]], noise[flip[10:]]  # no systematic change
    assert method_difference(noise, base, one, one).p_value > 0.05
    assert method_difference(base, base, one, one).p_value == 1.0
    # Every problem moved the same way: no spread for a t statistic, the sign test's p instead.
    assert method_difference(np.ones(6), np.zeros(6), one, one).p_value == pytest.approx(2 * 0.5 ** 6)
    # Its interval agrees with that test: 4 of 4 problems moved is no evidence, 40 of 40 is; and no
    # difference of scores in [0, 1] reaches past 1.
    four, forty = (method_difference(np.ones(n), np.zeros(n), one, one) for n in (4, 40))
    assert four.low < 0 < four.high and four.p_value > 0.05
    assert forty.low > 0 and forty.p_value < 0.05
    assert method_difference([1, 1, 0, 0], [0, 0, 0, 0], one, one).high == 1.0
    # An accuracy of none in 40 is not known to be exactly 0: Clopper-Pearson's 0 to 8.8%.
    none = method_estimate(np.zeros((1, 40)))
    assert none.low == 0.0 and none.high == pytest.approx(1 - 0.025 ** (1 / 40))
    with pytest.raises(ValueError, match="same problems"):
        method_difference(base, base[:10], one, one)


def test_scores_carry_their_interval_and_a_paired_p_value_against_cogpo():
    from crv_dagster.evaluation.aggregate import compare_with
    from crv_dagster.evaluation.scoring import summarize

    rows = []
    for method, right in (("cogpo", 60), ("sft", 20), ("dpo", 60)):
        for i in range(80):
            rows.append({"method": method, "seed": 0, "benchmark": "b", "problem_id": f"p{i}", "sample": 0,
                         "correct": i < right, "response_tokens": 5, "extracted_answer": "1", "unreadable": None})
    scores = compare_with(summarize(pd.DataFrame(rows)), "cogpo").set_index("method")
    assert scores.loc["cogpo", "ci_low"] < 0.75 < scores.loc["cogpo", "ci_high"]
    assert pd.isna(scores.loc["cogpo", "p_vs_cogpo"])
    assert scores.loc["sft", "p_vs_cogpo"] < 0.001 and scores.loc["dpo", "p_vs_cogpo"] == 1.0


def test_holm_adjustment_on_a_known_case():
    from crv_dagster.evaluation.statistics import holm_adjusted

    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 gives 0.02, 0.03, 0.06, 0.04; the running
    # maximum keeps the order (0.04 becomes 0.06). Not-a-comparison stays empty and is not counted.
    adjusted = holm_adjusted([0.01, 0.04, float("nan"), 0.03, 0.005])
    assert adjusted[[0, 1, 3, 4]] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adjusted[2])
    assert holm_adjusted([0.6, 0.9]).tolist() == [1.0, 1.0]  # capped at 1
    assert holm_adjusted([]).size == 0


def test_the_results_table_marks_significance_on_adjusted_p_values():
    pooled = pool_seeds(_scores()).assign(p_vs_cogpo=0.001, p_vs_cogpo_holm=0.5)
    pooled.loc[(pooled["model_size"] == "big") & (pooled["method"] == "sft") & (pooled["benchmark"] == "bench"),
               "p_vs_cogpo_holm"] = 0.01
    table = results_markdown(pooled, {"small": "1B", "big": "7B"})
    assert "after Holm's adjustment" in table
    results = "\n\n".join(table.split("\n\n")[:2])  # the table and its caption
    assert results.count("†") == 2  # the one adjusted p below 0.05, and the caption naming the mark
    assert "| SFT (CRV data) | 40.0 (16.5–63.5) | 40.0 (16.5–63.5)† |" in table  # big, bench: the second column


def test_scores_are_written_as_lighteval_writes_them(tmp_path):
    from crv_dagster.evaluation.lighteval_format import results_document, write_results

    # Four samples per problem, so pass@1 and the majority vote differ: sample k answers right when k < correct[problem].
    correct = {row.question: n for row, n in zip(PROBLEMS.itertuples(), (4, 3, 1, 0))}
    answers = dict(zip(PROBLEMS["question"], PROBLEMS["answer"]))

    def reply(prompt, params):
        question = next(q for q in answers if prompt.startswith(q))
        return f"So \\boxed{{{answers[question] if params.seed % 1000 < correct[question] else 'wrong'}}}."

    protocol = EvalProtocol(samples=4, temperature=0.6)
    details = generate_answers(ScriptedBackend(reply), "sft", "toy", PROBLEMS, protocol)
    summary = summarize(details)
    document = results_document("sft-seed-0", summary, details, {"toy": protocol.model_dump()}, {"toy": "file:toy"},
                                100.0, 160.5, {"method": "sft"})
    path = write_results(tmp_path, document, details, 160.5)

    # lighteval's layout: results/<model>/results_<timestamp>.json, details/<model>/<timestamp>/details_<task>_<timestamp>.parquet
    assert path.parent == tmp_path / "results" / "sft-seed-0" and re.fullmatch(r"results_[0-9T\-.]+\.json", path.name)
    read = json.loads(path.read_text())
    assert set(read) == {"config_general", "results", "versions", "config_tasks"}
    assert read["config_general"]["model_name"] == "sft-seed-0"
    assert float(read["config_general"]["total_evaluation_time_secondes"]) == 60.5
    task = read["results"]["crv|toy|0"]
    per_problem = np.array([1.0, 0.75, 0.25, 0.0])
    assert task["pass@1"] == pytest.approx(per_problem.mean())
    assert task["pass@1_stderr"] == pytest.approx(per_problem.std(ddof=1) / 2)
    assert task["maj@4"] == pytest.approx(0.5)  # the vote is right on the first two problems
    assert task["maj@4_stderr"] == pytest.approx(np.array([1, 1, 0, 0]).std(ddof=1) / 2)
    assert read["results"]["all"] == {k: pytest.approx(v) for k, v in task.items()}
    assert read["versions"] == {"crv|toy|0": 0}
    assert read["config_tasks"]["crv|toy"]["generation"]["samples"] == 4
    stamp = path.stem[len("results_"):]
    saved = pd.read_parquet(tmp_path / "details" / "sft-seed-0" / stamp / f"details_crv|toy|0_{stamp}.parquet")
    assert len(saved) == 4 * len(PROBLEMS) and set(saved["problem_id"]) == set(PROBLEMS["problem_id"])


def test_each_method_is_charged_for_the_stages_its_data_passed_through_and_its_training():
    from crv_dagster.config import Prices
    from crv_dagster.evaluation.accounting import asset_tokens, method_costs

    metadata = {"raw_cots": {"teacher_prompt_tokens": 1000, "teacher_completion_tokens": 9000,
                             "teacher_new_completion_tokens": 9000, "teacher_cache_hits": 3},
                "critiques": {"agent_prompt_tokens": 2000, "agent_completion_tokens": 500},
                "rewritten_cots": {"agent_prompt_tokens": 3000, "agent_completion_tokens": 4000},
                "preference_pairs": {"student_prompt_tokens": 100, "student_completion_tokens": 200,
                                     "inject_prompt_tokens": 10, "inject_completion_tokens": 20}}
    tokens = {asset: asset_tokens(meta) for asset, meta in metadata.items()}
    assert tokens["raw_cots"] == (1000, 9000)  # this run's share (new_*) is not counted twice
    manifest = pd.DataFrame({"method": ["sft", "sft_raw", "cogpo", "cogpo_from_raw"], "seed": [0] * 4,
                             "train_runtime_s": [100.0, 300.0, 50.0, 60.0]})
    scores = pd.DataFrame({"method": ["base", "sft_raw", "sft_filter", "sft", "cogpo", "cogpo_from_raw"], "seed": [0] * 6})
    prices = Prices(per_million_prompt_tokens=1.0, per_million_completion_tokens=4.0, per_gpu_hour=3600.0)
    costed = method_costs(scores, tokens, manifest, processes=2, prices=prices).set_index("method")
    assert costed.loc["base", ["data_prompt_tokens", "data_completion_tokens", "train_device_s"]].tolist() == [0, 0, 0]
    assert costed.loc["sft_raw", "data_completion_tokens"] == 9000  # the teacher only
    assert costed.loc["sft_filter", "data_completion_tokens"] == 9500  # and the Critic
    assert costed.loc["sft", "data_completion_tokens"] == 13500  # and the Rethinker
    assert costed.loc["cogpo", "data_completion_tokens"] == 13720  # and the pairs' incorrect CoTs
    assert costed.loc["sft", "train_device_s"] == 200.0  # two processes
    assert costed.loc["cogpo", "train_device_s"] == 2 * (50 + 100)  # its SFT run included
    assert costed.loc["cogpo_from_raw", "train_device_s"] == 2 * (60 + 300)  # from the raw-CoT checkpoint
    assert costed.loc["sft", "cost"] == pytest.approx(6000 / 1e6 * 1 + 13500 / 1e6 * 4 + 200.0)
    assert method_costs(scores, tokens, manifest, 1, None)["cost"].isna().all()  # no prices, no cost


def test_the_primary_comparison_is_tested_as_its_own_family():
    from crv_dagster.config import EvaluationConfig
    from crv_dagster.evaluation.aggregate import primary_comparisons
    from crv_dagster.evaluation.report import primary_markdown

    assert EvaluationConfig().primary.model_dump() == {"method": "cogpo",
                                                       "against": ["sft", "dpo", "dpo_mean_beta", "cogpo_reversed"]}
    with pytest.raises(ValueError, match="not methods this project evaluates: \\['dpoo'\\]"):
        EvaluationConfig(primary={"against": ["dpoo"]})
    pooled = pool_seeds(_scores())
    primary = primary_comparisons(pooled, "cogpo", EvaluationConfig().primary.against)  # of those, sft alone scored
    assert set(primary["against"]) == {"sft"} and len(primary) == 4  # two sizes x two benchmarks
    row = primary[(primary["model_size"] == "small") & (primary["benchmark"] == "bench")].iloc[0]
    assert row["difference"] == pytest.approx(0.1) and row["num_problems"] == 20
    # Holm over this family of 4 only, never below the raw p-value.
    assert (primary["p_holm"] >= primary["p_value"]).all() and (primary["p_holm"] <= 1).all()
    table = primary_markdown(primary)
    assert "| small | bench | SFT + CogPO vs SFT (CRV data) | +10.0 |" in table
    assert "Holm-adjusted over the 4 comparisons above" in table


def test_the_headline_says_what_happened_in_words_and_numbers():
    from crv_dagster.evaluation.report import accuracy_plot, headline

    pooled = pool_seeds(_scores())
    lines = headline(pooled, "heldout")
    # Per size: SFT against base (2 -> 4 of 20), CogPO against SFT (4 -> 6 of 20), with intervals.
    assert len(lines) == 4
    assert lines[0] == ("SFT on CRV data against the base student (small): +10.0 points on 20 problems of heldout, "
                        "95% interval -4.4 to +24.4 (includes zero; one seed: two checkpoints compared).")
    assert lines[1].startswith("CogPO against SFT (small): +10.0 points on 20 problems of heldout")
    # A held-out set named as the graph names it reads as such; an unscored one gives way to the first.
    renamed = pooled.assign(benchmark=pooled["benchmark"].replace({"heldout": "arith_heldout"}))
    assert "on 20 held-out problems" in headline(renamed, "arith_heldout")[0]
    assert headline(pooled, "no such benchmark") == lines
    # The plot carries the same lines under its axes.
    png, axes = accuracy_plot(pooled, {"small": "135M", "big": "1.5B"}, note=lines)
    assert axes["note"] == lines and png[:4] == b"\x89PNG"
