"""The student's own view of a CoT (its NLL), the Critic checked against it, and the student Critic."""

import math

import pandas as pd
import pytest
import torch
from scripted import ScriptedBackend

from crv_dagster.agents import crv
from crv_dagster.agents.critic import StudentCritic
from crv_dagster.agents.student_view import label_agreement, labels_by_nll, labels_by_solves, student_nll, student_solves
from crv_dagster.config import EvalProtocol, TinyModel
from crv_dagster.cot import Cot
from crv_dagster.formatting import student_messages
from crv_dagster.models.store import resolve_model
from crv_dagster.schemas import critiques_schema
from crv_dagster.models.loading import load_student

ITEMS = [("What is 2 + 3?", "5", "2 + 3 = 5.\n\nThe answer is \\boxed{5}."),
         ("What is 4 x 4?", "16", Cot("So it is \\boxed{16}.", "4 x 4: four fours make 16.").text),
         ("What is 9 - 7?", "2", "")]


@pytest.fixture(scope="module")
def student(session_models):
    spec = TinyModel(source="tiny", architecture="qwen2", hidden_size=32, num_layers=2, num_heads=4, seed=7)
    return resolve_model("student", spec, session_models)


def test_the_nll_is_the_students_loss_on_the_cot_after_its_prompt(student):
    values = student_nll(student, ITEMS, batch_size=2)
    assert math.isnan(values[2])  # no CoT, nothing to measure
    # The same number by hand: the model's loss on the CoT tokens only, one item at a time.
    model, tokenizer = load_student(student)
    for (question, answer, cot), value in zip(ITEMS[:2], values[:2]):
        prompt = tokenizer.apply_chat_template(student_messages(question, answer), tokenize=False,
                                               add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + tokenizer(cot, add_special_tokens=False)["input_ids"]])
        labels = ids.clone()
        labels[0, :len(prompt_ids)] = -100
        with torch.no_grad():
            expected = model(input_ids=ids, labels=labels).loss.item()
        assert value == pytest.approx(expected, rel=1e-4)
    # Batched with padding or one by one: the same values.
    assert student_nll(student, ITEMS[:2], batch_size=1) == pytest.approx(values[:2], rel=1e-4)


def test_the_student_critic_labels_by_nll_terciles_and_agreement_is_measured():
    nll = [0.5, 3.0, 1.0, 2.0, 1.5, 2.5, float("nan")]
    assert labels_by_nll(nll) == ["easy", "hard", "easy", "medium", "medium", "hard", "unparsed"]
    agreement = label_agreement(labels_by_nll(nll), nll)
    assert agreement["spearman"] == pytest.approx(1.0, abs=0.2) and agreement["num_labelled"] == 6
    assert agreement["by_nll_tercile"]["low"] == {"easy": 2}
    assert label_agreement(["hard", "easy", "medium"] * 2, [0.1, 0.9, 0.5] * 2)["spearman"] < 0
    assert label_agreement(["easy"], [1.0])["spearman"] is None


def test_critiques_carry_the_students_nll_whichever_critic_labels():
    raw = pd.DataFrame({"problem_id": ["a", "b", "c"], "dataset": "d", "question": ["q1", "q2", "q3"],
                        "answer": ["1", "2", "3"], "cot": ["x", "y", "z"], "is_correct": True,
                        "cot_status": ["ok", "ok", "truncated"]})
    nll = [2.0, 0.5]
    frame = crv.critique(raw, StudentCritic(nll, "tiny"), "1B", nll)
    critiques_schema.validate(frame)
    assert list(frame["label"]) == ["hard", "easy"] and list(frame["student_nll"]) == nll
    assert set(frame["agent_model"]) == {"student-nll:tiny"}
    with pytest.raises(ValueError, match="2 NLL values for 1 CoTs"):
        StudentCritic(nll, "tiny").judge([("q", "1", "x")], "1B")


def test_a_budget_shorter_than_the_prompt_measures_nothing(student):
    assert all(math.isnan(v) for v in student_nll(student, ITEMS[:2], max_tokens=3))


def test_the_base_student_is_asked_each_problem_as_evaluation_asks_it():
    problems = pd.DataFrame({"problem_id": ["a", "b", "c"], "question": ["What is 2 + 3?", "What is 4 x 4?",
                                                                         "Which is prime?"],
                             "answer": ["5", "16", "B"], "choices": [None, None, '{"A": "4", "B": "7"}']})
    # Right on the first problem in every sample, on the second in one of three, and the multiple-
    # choice one is graded by its letter.
    calls = {"n": 0}

    def reply(prompt, params):
        calls["n"] += 1
        if "2 + 3" in prompt:
            return "\\boxed{5}"
        if "4 x 4" in prompt:
            return "\\boxed{16}" if params.seed % 3 == 0 else "\\boxed{15}"
        return "The answer is (B)."

    protocol = EvalProtocol(samples=3, temperature=0.7)
    assert student_solves(ScriptedBackend(reply), problems, protocol) == [True, False, True]
    assert calls["n"] == 9
    assert labels_by_solves(["easy", "easy", "hard"], [True, False, pd.NA]) == {"solved": {"easy": 1},
                                                                               "unsolved": {"easy": 1}}
    assert labels_by_solves(["easy"], [pd.NA]) == {}
    frame = crv.critique(problems.assign(dataset="d", cot="x", is_correct=True, cot_status="ok"),
                         StudentCritic([1.0, 2.0, 3.0], "tiny"), "1B", [1.0, 2.0, 3.0], [True, False, True])
    critiques_schema.validate(frame)
    assert list(frame["student_solves"]) == [True, False, True]
