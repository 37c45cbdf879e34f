"""Preference metrics on held-out pairs: which problems they come from, and the numbers themselves."""

import math
import random

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from crv_dagster.config import DpoSettings, TrainingConfig
from crv_dagster.data.arith import generate_arith
from crv_dagster.evaluation.benchmarks import heldout_problems
from crv_dagster.evaluation.heldout_pairs import (
    kind_betas,
    metrics_table,
    mlflow_metrics,
    pair_logps,
    pair_metrics,
    report,
)
from crv_dagster.preference.pairs import chat_prompt_renderer, perturb_cot

SCHEDULE = {"small_gap": 1.0, "medium_gap": 0.75, "large_gap": 0.5}


def _pairs(kinds, tokenizer=None, sources=None):
    rows = []
    for i, (kind, p) in enumerate(zip(kinds, generate_arith(len(kinds), seed=21))):
        prompt = chat_prompt_renderer(tokenizer)(p.question, p.answer) if tokenizer else p.question
        source = sources[i] if sources else "original" if kind == "small_gap" else "perturb"
        rows.append({"problem_id": f"p{i}", "pair_type": kind, "beta": SCHEDULE[kind], "prompt": prompt,
                     "chosen": p.cot, "rejected": perturb_cot(p.cot, p.answer, random.Random(i)) or p.cot + " 1",
                     "rejected_source": source})
    return pd.DataFrame(rows)


def test_heldout_problems_are_eval_split_problems_only():
    problems = pd.DataFrame({"problem_id": [f"p{i}" for i in range(8)],
                             "split": ["train", "eval", "contaminated", "eval", "train", "eval", "eval", "train"]})
    assert list(heldout_problems(problems, 3)["problem_id"]) == ["p1", "p3", "p5"]
    assert list(heldout_problems(problems, 10)["problem_id"]) == ["p1", "p3", "p5", "p6"]
    assert heldout_problems(problems, 0).empty


def test_each_method_is_measured_with_the_betas_it_trained_with():
    train = _pairs(["small_gap", "medium_gap", "medium_gap", "large_gap"])
    settings = TrainingConfig(dpo=DpoSettings(beta=0.1))
    assert kind_betas("cogpo", train, settings) == SCHEDULE
    assert kind_betas("cogpo_reversed", train, settings) == {"small_gap": 0.5, "medium_gap": 0.75, "large_gap": 1.0}
    assert kind_betas("cogpo_uniform_0.5", train, settings) == dict.fromkeys(SCHEDULE, 0.5)
    assert kind_betas("dpo_mean_beta", train, settings) == dict.fromkeys(SCHEDULE, 0.75)
    assert kind_betas("simpo", train, settings) == dict.fromkeys(SCHEDULE, 0.1)
    # A kind the method never trained on is measured with CogPO's beta for it (the pair's own).
    left_out = train[train["pair_type"] != "medium_gap"]
    assert kind_betas("cogpo_without_medium_gap", left_out, settings) == {"small_gap": 1.0, "large_gap": 0.5}
    heldout = _pairs(["medium_gap"])
    frame = pd.DataFrame({"chosen": [-1.0], "chosen_tokens": [2], "rejected": [-3.0], "rejected_tokens": [2]})
    zero = frame.assign(chosen=-2.0, rejected=-2.0)
    assert pair_metrics(heldout, frame, zero, kind_betas("cogpo_without_medium_gap", left_out, settings)
                        )["medium_gap"]["beta"] == 0.75


def test_metrics_on_a_known_case():
    pairs = _pairs(["small_gap", "small_gap", "large_gap"])
    reference = pd.DataFrame({"chosen": [-10.0, -10.0, -8.0], "chosen_tokens": [5, 5, 4],
                              "rejected": [-9.0, -9.0, -8.0], "rejected_tokens": [3, 3, 4]})
    # The policy raised the chosen CoTs by 1 and lowered the rejected by 1 on the first pair; on the
    # second it did the opposite; on the large-gap pair it moved both up by 2.
    policy = pd.DataFrame({"chosen": [-9.0, -11.0, -6.0], "chosen_tokens": [5, 5, 4],
                           "rejected": [-10.0, -8.0, -6.0], "rejected_tokens": [3, 3, 4]})
    out = pair_metrics(pairs, policy, reference, SCHEDULE)
    small, large = out["small_gap"], out["large_gap"]
    assert small["n"] == 2 and small["beta"] == 1.0
    assert small["margin"] == pytest.approx((2.0 + -2.0) / 2)
    assert small["logratio_margin"] == pytest.approx((2.0 + -2.0) / 2)
    assert small["loss"] == pytest.approx((math.log1p(math.exp(-2.0)) + math.log1p(math.exp(2.0))) / 2)
    assert small["accuracy"] == 0.5
    # Per token: -9/5 > -10/3 on the first pair; -11/5 > -8/3 on the second too.
    assert small["logp_accuracy"] == 1.0
    assert large == {"n": 1, "beta": 0.5, "loss": pytest.approx(math.log(2)), "margin": 0.0, "logratio_margin": 0.0,
                     "accuracy": 0.0, "logp_accuracy": 0.0}
    report = {"before": pair_metrics(pairs, reference, reference, SCHEDULE), "after": out}
    assert report["before"]["small_gap"]["loss"] == pytest.approx(math.log(2))
    table = metrics_table({("cogpo", 0): report})
    assert list(table["pair_type"]) == ["large_gap", "small_gap"]
    assert table.set_index("pair_type").loc["small_gap", "accuracy_after"] == 0.5
    assert mlflow_metrics(report)["heldout/small_gap/accuracy/after"] == 0.5
    assert "heldout/small_gap/n/after" not in mlflow_metrics(report)


def test_pair_logps_are_the_model_s_own_log_probabilities(tiny_model, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    pairs = _pairs(["small_gap", "large_gap"], tokenizer)
    logps = pair_logps(tiny_model, pairs)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    prompt = tokenizer(pairs["prompt"][1], add_special_tokens=False)["input_ids"]
    completion = tokenizer(pairs["chosen"][1].strip(), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        scores = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    expected = sum(float(scores[t - 1, ids[0, t]]) for t in range(len(prompt), ids.shape[1]))
    assert logps["chosen"][1] == pytest.approx(expected, rel=1e-4)
    assert logps["chosen_tokens"][1] == len(completion)
    # Before training the policy is its own reference: no margin, a loss of log 2.
    before = pair_metrics(pairs, logps, logps, SCHEDULE)
    assert all(v["margin"] == 0.0 and v["loss"] == pytest.approx(math.log(2)) for v in before.values())
    # Another checkpoint gives other log-probs, so non-zero margins.
    other = tmp_path / "other"
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(other)
    tokenizer.save_pretrained(other)
    after = pair_metrics(pairs, pair_logps(str(other), pairs), logps, SCHEDULE)
    assert any(v["margin"] != 0.0 for v in after.values())


def test_the_log_ratio_margin_is_the_margin_without_beta_per_kind_and_source():
    pairs = _pairs(["large_gap", "large_gap", "large_gap", "small_gap"],
                   sources=["student", "inject", "inject", "original"])
    reference = pd.DataFrame({"chosen": [-10.0] * 4, "chosen_tokens": [5] * 4,
                              "rejected": [-10.0] * 4, "rejected_tokens": [5] * 4})
    # Both methods move every pair's log-ratios apart by the same 4 nats (0.5 on the last).
    policy = reference.assign(chosen=[-8.0, -8.0, -8.0, -9.75], rejected=[-12.0, -12.0, -12.0, -10.25])
    cogpo = report(pairs, reference, policy, SCHEDULE)
    dpo = report(pairs, reference, policy, dict.fromkeys(SCHEDULE, 0.1))
    # The scaled margins differ by the betas alone; the log-ratio margins are the same.
    assert cogpo["after"]["large_gap"]["margin"] == pytest.approx(2.0)
    assert dpo["after"]["large_gap"]["margin"] == pytest.approx(0.4)
    for kind, moved in (("large_gap", 4.0), ("small_gap", 0.5)):
        assert cogpo["after"][kind]["logratio_margin"] == dpo["after"][kind]["logratio_margin"] == pytest.approx(moved)
    assert cogpo["before"]["large_gap"]["logratio_margin"] == 0.0
    # Per rejected source, each kind's pairs split by where their rejected CoT came from.
    by_source = cogpo["after_by_source"]
    assert sorted(by_source) == ["large_gap/inject", "large_gap/student", "small_gap/original"]
    assert by_source["large_gap/inject"]["n"] == 2 and by_source["large_gap/student"]["n"] == 1
    assert by_source["large_gap/inject"]["beta"] == 0.5
    table = metrics_table({("cogpo", 0): cogpo, ("dpo", 0): dpo}, by_source=True)
    assert len(table) == 6 and set(table["rejected_source"]) == {"student", "inject", "original"}
    row = table.set_index(["method", "pair_type", "rejected_source"]).loc[("dpo", "large_gap", "inject")]
    assert (row["margin_after"], row["logratio_margin_after"]) == (pytest.approx(0.4), pytest.approx(4.0))
    assert "logratio_margin_after" in metrics_table({("cogpo", 0): cogpo}).columns
    logged = mlflow_metrics(cogpo)
    assert logged["heldout/large_gap/logratio_margin/after"] == pytest.approx(4.0)
    assert logged["heldout/large_gap/student/margin/after"] == pytest.approx(2.0)
