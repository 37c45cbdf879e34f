import json

import pandas as pd
import pytest
from scripted import ScriptedBackend

from crv_dagster.agents import crv
from crv_dagster.agents.critic import Critic, load_critic_prompt
from crv_dagster.agents.replies import clean_reasoning, parse_label, parse_verdict
from crv_dagster.agents.rethinker import Rethinker, load_rethinker_prompts
from crv_dagster.agents.verifier import Verifier, load_judge_prompt
from crv_dagster.formatting import CODE_ANSWER, CODE_REFERENCE, agent_fields
from crv_dagster.llm.base import Completion, SamplingParams
from crv_dagster.llm.reply import read_reply
from crv_dagster.prompts import PromptError, load_prompt
from crv_dagster.schemas import critiques_schema, rewritten_cots_schema, verified_set_schema


def _label(text: str, finish_reason: str = "stop") -> str | None:
    reply = read_reply(Completion(text, finish_reason))
    return parse_label(reply.content) if reply.usable else None


@pytest.mark.parametrize(
    "reply, label",
    [
        ("medium", "medium"), ("Hard.", "hard"), ("**Easy**", "easy"), ("  EASY\n", "easy"),
        ("<think>It could be easy or hard... the steps are fine.</think>\nmedium", "medium"),
        # A reasoning model's template opens <think> in the prompt: the reply has only the closing tag.
        ("It could be easy. Or hard? The steps are fine.\n</think>\n\n**medium**", "medium"),
        ("Label: hard", "hard"), ("My answer: medium. It is neither easy nor hard.", "medium"),
        ("The reasoning is too terse for this student.", "easy"),
        ("This solution is well balanced.", "medium"),
        ("It is far too convoluted.", "hard"),
        ("easy or hard, I cannot decide", None), ("banana", None), ("", None),
        ("<think>still thinking about whether it is easy", None),
    ],
)
def test_label_parser_on_messy_replies(reply, label):
    assert _label(reply) == label


def test_a_reply_cut_mid_thought_is_never_a_label():
    cut = "Okay, the steps seem a bit difficult to follow because"
    assert parse_label(cut) == "hard"  # what reading the raw text would do
    assert _label(cut, "length") is None
    # Even text after </think> is an answer cut short when the budget ran out.
    assert _label("hmm</think>\n\nhard, or", "length") is None


@pytest.mark.parametrize(
    "reply, verdict",
    [("correct", True), ("Incorrect.", False), ("The solution is not correct.", False),
     ("<think>hmm, incorrect?</think> Correct", True), ("maybe", None), ("correct? incorrect!", None)],
)
def test_verdict_parser(reply, verdict):
    assert parse_verdict(read_reply(Completion(reply)).content) is verdict


def test_clean_reasoning_drops_preamble_thinking_and_fences():
    content = read_reply(Completion("<think>x</think>Here is the expanded reasoning:\n\nStep 1.\n\nStep 2.")).content
    assert clean_reasoning(content) == "Step 1.\n\nStep 2."
    assert clean_reasoning("```\nA\n\nB\n```") == "A\n\nB"
    # A code CoT ends with its program, and a reply may be the program alone: both are kept.
    code_cot = "Read n.\n\n```python\nprint(int(input()) * 2)\n```"
    assert clean_reasoning(code_cot) == code_cot
    assert clean_reasoning("```python\nprint(1)\n```") == "```python\nprint(1)\n```"


def test_prompts_render_with_the_student_size():
    critic = load_critic_prompt("critic.txt")
    text = critic.render(question="Q?", answer="4", cot="2+2=4", student_size="1.5B")
    assert "about 1.5B parameters" in text and "Q?" in text and "2+2=4" in text
    for template in load_rethinker_prompts("rethink_expand.txt", "rethink_simplify.txt").values():
        rendered = template.render(question="Q", cot="C", student_size="7B", feedback="", layout="L",
                                   **agent_fields("4"))
        assert "7B parameters" in rendered and "\\boxed{}" in rendered and "Reference answer: 4" in rendered
        # A code problem: told to end with a program, and that its tests are the reference.
        rendered = template.render(question="Q", cot="C", student_size="7B", feedback="", layout="L",
                                   **agent_fields(CODE_ANSWER))
        assert "```python code block" in rendered and "\\boxed" not in rendered and CODE_REFERENCE in rendered
    assert "{" not in load_judge_prompt("verify_judge.txt").render(question="Q", answer="1", cot="C").replace("{}", "")


def test_prompt_missing_a_placeholder_is_a_clear_error(tmp_path):
    path = tmp_path / "critic.txt"
    path.write_text("Judge this: {cot}\nfor a student.")
    with pytest.raises(PromptError, match=r"critic.txt: missing placeholder\(s\).*student_size"):
        load_critic_prompt(str(path))
    path.write_text("{question} {answer} {cot} {student_size} {typo}")
    with pytest.raises(PromptError, match=r"unknown placeholder.*typo"):
        load_critic_prompt(str(path))
    with pytest.raises(PromptError, match="not found"):
        load_prompt(tmp_path / "absent.txt", required={"x"})


def _raw(n=3, correct=True):
    return pd.DataFrame({
        "problem_id": [f"p{i}" for i in range(n)], "dataset": "d",
        "question": [f"What is {i} + {i}?" for i in range(n)], "answer": [str(2 * i) for i in range(n)],
        "cot": [f"{i} + {i} = {2 * i}.\n\nThe answer is \\boxed{{{2 * i}}}." for i in range(n)],
        "is_correct": correct, "cot_status": "ok",
    })


def test_critic_retries_unreadable_replies_then_records_unparsed():
    replies = {"What is 0": ["hmm", "medium"], "What is 1": ["??", "???", "????"], "What is 2": ["hard"]}
    seen = {k: 0 for k in replies}

    def reply(prompt, params):
        key = next(k for k in replies if k in prompt)
        seen[key] += 1
        return replies[key][seen[key] - 1]

    backend = ScriptedBackend(reply)
    critic = Critic(backend, load_critic_prompt("critic.txt"), SamplingParams(max_new_tokens=4), max_retries=2)
    frame = crv.critique(_raw(), critic, "1.5B")
    critiques_schema.validate(frame)
    assert list(frame["label"]) == ["medium", "unparsed", "hard"]
    assert list(frame["attempts"]) == [2, 3, 1]
    assert frame.loc[1, "reply"] == "????"
    assert all("1.5B" in p for p in backend.prompts)


def _critiques(labels, correct=True):
    raw = _raw(len(labels), correct)
    return pd.DataFrame({**{c: raw[c] for c in ("problem_id", "dataset", "question", "answer", "cot")},
                         "cot_correct": correct, "label": labels})


def test_rethinker_retry_loop_passes_on_the_third_attempt():
    calls = []

    def reply(prompt, params):
        calls.append((prompt, params))
        attempt = len(calls)
        return {1: "We add the two numbers together.\n\nSo the total is \\boxed{5}.",
                2: "We add the two numbers.\n\nAdding the numbers step by step gives their sum."}.get(
            attempt, "We add the two numbers together.\n\n2 + 2 = 4.\n\nThe answer is \\boxed{4}.")

    critiques = _critiques(["easy"]).iloc[[0]].copy()
    critiques["answer"], critiques["question"] = "4", "What is 2 + 2?"
    rethinker = Rethinker(ScriptedBackend(reply), load_rethinker_prompts("rethink_expand.txt", "rethink_simplify.txt"),
                          SamplingParams(max_new_tokens=64))
    frame = crv.refine(critiques, rethinker, Verifier(), "1.5B", max_attempts=3)
    rewritten_cots_schema.validate(frame)
    row = frame.iloc[0]
    assert (row["action"], row["passed"], row["final_attempt"], row["attempts"]) == ("expand", True, 3, 3)
    assert [v["reason"] for v in json.loads(row["verdicts"])] == ["wrong_answer", "no_answer", "passed"]
    # Each retry is told why the previous one failed, and samples with a new seed.
    assert "concluded 5 instead of 4" in calls[1][0]
    assert "never stated a final answer" in calls[2][0]
    assert len({params.seed for _, params in calls}) == 3


def test_a_cot_that_never_verifies_is_dropped_and_counted():
    rethinker = Rethinker(ScriptedBackend(lambda p, s: "The answer is \\boxed{999}."),
                          load_rethinker_prompts("rethink_expand.txt", "rethink_simplify.txt"), SamplingParams())
    critiques = _critiques(["hard", "medium", "unparsed", "easy"])
    frame = crv.refine(critiques, rethinker, Verifier(), "1.5B", max_attempts=2)
    rewritten_cots_schema.validate(frame)
    assert list(frame["action"]) == ["simplify", "keep", "skip", "expand"]
    assert list(frame["passed"]) == [False, True, False, False]
    # The one-line "expansion" is shorter than its original: it fails as such before any answer check.
    assert list(frame["drop_reason"].fillna("-")) == ["verify_failed:wrong_answer", "-", "unparsed_critique",
                                                      "verify_failed:not_expanded"]
    stats = crv.refine_stats(frame, 2)
    assert stats["drop_reasons"] == {"unparsed_critique": 1, "verify_failed:not_expanded": 1,
                                     "verify_failed:wrong_answer": 1}
    assert stats["pass_rate_by_attempt"] == {"attempt_1": 0.0, "attempt_2": 0.0}

    verified = crv.verified_set(frame)
    verified_set_schema.validate(verified)
    assert list(zip(verified["problem_id"], verified["role"])) == [
        ("p0", "unsuited_original"), ("p1", "suited"), ("p3", "unsuited_original")]


def test_medium_cot_with_a_wrong_original_is_not_kept():
    rethinker = Rethinker(ScriptedBackend(lambda p, s: ""), load_rethinker_prompts("rethink_expand.txt", "rethink_simplify.txt"),
                          SamplingParams())
    frame = crv.refine(_critiques(["medium"], correct=False), rethinker, Verifier(), "1B", max_attempts=1)
    assert not frame.loc[0, "passed"] and frame.loc[0, "drop_reason"] == "original_incorrect"
    assert crv.verified_set(frame).empty


def test_llm_judge_can_reject_what_the_rules_accept():
    verdicts = iter(["correct", "incorrect", "no idea"])
    judge = ScriptedBackend(lambda p, s: next(verdicts))
    verifier = Verifier(judge, load_judge_prompt("verify_judge.txt"))
    items = [(f"p{i}", "Q", "4", f"\\boxed{{{v}}}") for i, v in enumerate([4, 4, 4, 5])]
    result = verifier.verify(items)
    assert [v.reason for v in result] == ["passed", "judge_rejected", "judge_unreadable", "wrong_answer"]
    assert len(judge.prompts) == 3  # only what passed the rule-based check is judged


def test_verified_set_keeps_rewritten_suited_and_unsuited_original():
    rethinker = Rethinker(ScriptedBackend(lambda p, s: "0 + 0 = 0, step by step.\n\nSo \\boxed{0}."),
                          load_rethinker_prompts("rethink_expand.txt", "rethink_simplify.txt"), SamplingParams())
    frame = crv.refine(_critiques(["easy"]), rethinker, Verifier(), "1B", max_attempts=1)
    verified = crv.verified_set(frame)
    assert sorted(zip(verified["role"], verified["provenance"])) == [("suited", "rewritten"),
                                                                     ("unsuited_original", "original")]


def test_a_truncated_rewrite_fails_even_with_the_right_answer():
    backend = ScriptedBackend(lambda p, s: "0 + 0 = 0.\n\nSo \\boxed{0}.\n\nSo \\boxed{0}.", finish_reason="length")
    prompts = load_rethinker_prompts("rethink_expand.txt", "rethink_simplify.txt")
    frame = crv.refine(_critiques(["easy"]), Rethinker(backend, prompts, SamplingParams()), Verifier(), "1B", 2)
    assert [v["reason"] for v in json.loads(frame.loc[0, "verdicts"])] == ["truncated", "truncated"]
    assert "cut off at the length limit" in backend.prompts[1]
    assert frame.loc[0, "rewritten_cot"] is None


def test_a_verified_rewrite_of_a_wrong_cot_is_rescued_counted_and_selectable():
    critiques = _critiques(["easy", "easy", "hard"])
    # p1's teacher CoT reached a wrong answer; the Rethinker, shown the reference, writes a right one.
    critiques.loc[1, ["cot", "cot_correct"]] = ["1 + 1 = 3.\n\nThe answer is \\boxed{3}.", False]

    def reply(prompt, params):
        i = next(i for i in range(3) if f"What is {i} + {i}?" in prompt)
        if "Simplified solution:" in prompt:
            return f"\\boxed{{{2 * i}}}"
        return (f"We take {i} and add {i} to it, one unit at a time.\n\nCounting on from {i} by {i} gives {2 * i}."
                f"\n\nSo {i} + {i} = {2 * i}, and the answer is \\boxed{{{2 * i}}}.")

    rethinker = Rethinker(ScriptedBackend(reply), load_rethinker_prompts("rethink_expand.txt", "rethink_simplify.txt"),
                          SamplingParams())
    frame = crv.refine(critiques, rethinker, Verifier(), "1B", max_attempts=1)
    assert list(frame["passed"]) == [True, True, True]
    assert crv.refine_stats(frame, 1)["num_rescued"] == 1

    kept = crv.verified_set(frame)
    verified_set_schema.validate(kept)
    suited = kept[kept["role"] == "suited"].set_index("problem_id")
    assert list(suited["provenance"]) == ["rewritten", "rescued", "rewritten"]
    # A wrong original is never a pair's unsuited (correct) original.
    assert sorted(kept.loc[kept["role"] == "unsuited_original", "problem_id"]) == ["p0", "p2"]
    assert crv.rescued_counts(frame, "keep") == {"rescued_kept": 1, "rescued_dropped": 0}

    dropped = crv.verified_set(frame, rescued="drop")
    assert "rescued" not in set(dropped["provenance"])
    assert sorted(dropped.loc[dropped["role"] == "suited", "problem_id"]) == ["p0", "p2"]
    assert crv.rescued_counts(frame, "drop") == {"rescued_kept": 0, "rescued_dropped": 1}
    with pytest.raises(ValueError, match="crv.rescued"):
        crv.verified_set(frame, rescued="sometimes")
