"""A CoT is a reasoning trace plus a solution: the student format, both public long-CoT dataset
formats, what agents are shown and how their rewrites are read, and grading on the solution only."""

import json
import random
from pathlib import Path

import pandas as pd
import pytest
from scripted import ScriptedBackend

from crv_dagster.agents import crv
from crv_dagster.agents.critic import Critic, load_critic_prompt
from crv_dagster.agents.rethinker import Rethinker, load_rethinker_prompts, rewrite_problem
from crv_dagster.agents.verifier import Verifier
from crv_dagster.config import DatasetConfig, EvalProtocol, EvaluationConfig
from crv_dagster.cot import (
    NOT_IN_LAYOUT,
    Cot,
    CotFormatError,
    adjusted_completion,
    agent_view,
    from_dataset,
    parse,
    read_layout,
)
from crv_dagster.data.sources import build_problems, read_source
from crv_dagster.data.teacher import cots_from_dataset, cots_from_teacher, trace_stats
from crv_dagster.evaluation.scoring import generate_answers, summarize
from crv_dagster.llm.base import Completion, SamplingParams
from crv_dagster.llm.reply import read_reply
from crv_dagster.prompts import TEACHER_FIELDS, TEACHER_OPTIONAL, load_prompt
from crv_dagster.schemas import raw_cots_schema, verified_set_schema
from crv_dagster.solutions import MATH_CHECKER
from crv_dagster.preference.pairs import build_pairs, incorrect_by_injection, perturb_cot
from crv_dagster.training.sft import sft_records

DATA = Path(__file__).parent / "data"
TRACE = ("Maybe it is 12? Wait, I added instead of multiplying.\n\n"
         "Trying again: 3 x 4 is \\boxed{7}? No, that is 3 + 4.\n\n3 x 4 = 12, and 12 + 2 = 14.")
SOLUTION = "3 x 4 = 12 and 12 + 2 = 14.\n\nThe answer is \\boxed{14}."


def test_the_student_format_round_trips_and_keeps_an_absent_trace_absent():
    cot = Cot(SOLUTION, TRACE)
    assert cot.text == f"<think>\n{TRACE}\n</think>\n\n{SOLUTION}"
    assert parse(cot.text) == cot and cot.measured == TRACE
    assert Cot(SOLUTION).text == SOLUTION and parse(SOLUTION) == Cot(SOLUTION)
    # `cot.trace: always` gives every CoT a think block; `never` keeps solutions only.
    assert Cot(SOLUTION).with_mode("always").text == f"<think>\n\n</think>\n\n{SOLUTION}"
    assert cot.with_mode("never").text == SOLUTION and cot.with_mode("auto") == cot
    # A trace that quotes the tag: the solution is what follows the last one.
    quoting = Cot(SOLUTION, "The format closes with </think> at the end.")
    assert parse(quoting.text).solution == SOLUTION


def test_a_template_that_opens_think_in_the_prompt_does_not_see_it_twice():
    text = Cot(SOLUTION, TRACE).text
    assert adjusted_completion("<|im_start|>assistant\n", text) == text
    opened = adjusted_completion("<｜Assistant｜><think>\n", text)
    assert opened == f"{TRACE}\n</think>\n\n{SOLUTION}" and parse(opened) == Cot(SOLUTION, TRACE)

    class Template:
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return f"<user>{messages[-1]['content']}</user><think>\n"

    from crv_dagster.preference.pairs import chat_prompt_renderer

    records = sft_records(pd.DataFrame({"question": ["Q"], "answer": ["14"], "cot": [text]}),
                          chat_prompt_renderer(Template()))
    assert records.loc[0, "completion"].startswith(TRACE[:20])


def _dataset(path, answer_format, **columns) -> pd.DataFrame:
    config = DatasetConfig(source={"kind": "file", "path": str(path)}, columns=columns, answer_format=answer_format,
                           eval_fraction=0.0)
    problems = build_problems("long", config, read_source(config)).accepted
    return cots_from_dataset(problems, "long", MATH_CHECKER)


@pytest.mark.parametrize("trace_mode", ["auto", "never"])
def test_both_public_long_cot_formats_load_into_one_form(trace_mode):
    r1 = _dataset(DATA / "long_cot_r1.jsonl", "plain", question="problem", answer="answer", cot="generation")
    # Bespoke-Stratos has no answer column: the reference is the \boxed{} of the solution.
    sky = _dataset(DATA / "long_cot_sky_t1.jsonl", "boxed", question="conversations", answer="conversations",
                   cot="conversations")
    for frame in (r1, sky):
        raw_cots_schema.validate(frame)
        ok = frame[frame["cot_status"] == "ok"]
        assert len(ok) == 2 and ok["is_correct"].all()
        # A record cut mid-thought is no CoT, and keeps its text for audit.
        cut = frame[frame["cot_status"] != "ok"]
        assert list(cut["cot_status"]) == ["unfinished_thinking"] and list(cut["cot"]) == [""]
        assert not cut["is_correct"].any() and cut["reasoning"].str.len().gt(0).all()
        for text in ok["cot"]:
            cot = parse(text)
            assert text.startswith("<think>\n") and cot.has_trace and "\\boxed" in cot.solution
            for tag in ("<|begin_of_thought|>", "<|end_of_thought|>", "<|begin_of_solution|>", "<|end_of_solution|>"):
                assert tag not in text
    # The question is the user's turn of the conversation, without the system prompt.
    assert sky["question"].str.startswith("Return your final response").all()
    # A trace's wrong \boxed{} guess is never the CoT's answer: the R1 row guesses 42 first.
    assert set(r1["extracted_answer"].dropna()) == {"47", "12"}
    never = cots_from_dataset(pd.DataFrame({"problem_id": ["a"], "dataset": "d", "question": ["Q"], "answer": ["14"],
                                            "reference_cot": [Cot(SOLUTION, TRACE).text]}), "d", trace=trace_mode)
    if trace_mode == "never":
        assert never.loc[0, "cot"] == SOLUTION and never.loc[0, "reasoning"] == TRACE
    else:
        assert parse(never.loc[0, "cot"]).trace == TRACE and never.loc[0, "reasoning"] == ""


@pytest.mark.parametrize(("text", "status"), [
    ("<think>\nstill thinking", "unfinished_thinking"),
    ("<|begin_of_thought|>\nthought\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n<|end_of_solution|>", "empty"),
    ("<|begin_of_thought|>t<|end_of_thought|>\n<|begin_of_solution|>\nso far \\boxed{3", "truncated"),
    ("<think>a</think>\n\nsolution <think> more", "unfinished_thinking"),
])
def test_dataset_cots_that_are_cut_are_refused_with_a_status(text, status):
    with pytest.raises(CotFormatError) as err:
        from_dataset(text)
    assert err.value.status == status


def test_a_dataset_cot_is_read_as_its_format_says():
    assert from_dataset("no tags at all: \\boxed{3}") == Cot("no tags at all: \\boxed{3}")
    # A solution section is read after the thought, never from inside it.
    sky = from_dataset("<|begin_of_thought|>draft <|begin_of_solution|>x<|end_of_solution|> no"
                       "<|end_of_thought|>\n<|begin_of_solution|>\nreal \\boxed{1}\n<|end_of_solution|>")
    assert sky.solution == "real \\boxed{1}"


def test_a_thinking_teachers_thinking_is_the_trace_and_its_answer_the_solution():
    train = pd.DataFrame({"problem_id": ["a", "b", "c"], "dataset": "d",
                          "question": ["What is 3 x 4 + 2?", "What is 1 + 1?", "What is 5 x 5?"],
                          "answer": ["14", "2", "25"]})
    replies = {"3 x 4": (f"{TRACE}\n</think>\n\n{SOLUTION}", "stop"),
               "1 + 1": ("The sum of 1 and 1 is \\boxed{2}.", "stop"),  # a teacher that does not think
               "5 x 5": ("5 x 5 is \\boxed{25}? Let me", "length")}  # cut mid-thought
    finish = {}

    class Teacher(ScriptedBackend):
        def generate(self, requests, on_result=None):
            out = super().generate(requests, on_result)
            return [Completion(c.text, finish[c.text]) for c in out]

    def reply(prompt, params):
        text, reason = next(v for k, v in replies.items() if k in prompt)
        finish[text] = reason
        return text

    prompt = load_prompt("teacher.txt", required=TEACHER_FIELDS, optional=TEACHER_OPTIONAL)
    frame = cots_from_teacher(train, Teacher(reply), prompt, SamplingParams(), MATH_CHECKER)
    raw_cots_schema.validate(frame)
    assert frame.loc[0, "cot"] == Cot(SOLUTION, TRACE).text and frame.loc[0, "extracted_answer"] == "14"
    assert frame.loc[1, "cot"] == "The sum of 1 and 1 is \\boxed{2}." and frame.loc[1, "is_correct"]
    assert frame.loc[2, "cot"] == "" and frame.loc[2, "cot_status"] == "truncated"
    assert "5 x 5" in frame.loc[2, "reasoning"] and frame.loc[0, "reasoning"] == ""
    assert trace_stats(frame["cot"]) == {"cots_with_trace": 1, "mean_trace_chars": float(len(TRACE)),
                                         "mean_solution_chars": (len(SOLUTION) + len(frame.loc[1, "cot"])) / 2}
    always = cots_from_teacher(train, Teacher(reply), prompt, SamplingParams(), MATH_CHECKER, trace="always")
    assert always.loc[1, "cot"].startswith("<think>\n\n</think>\n\n")


def test_the_solution_alone_is_graded():
    traced = Cot("So the total is \\boxed{14}.", "Is it \\boxed{15}? Perhaps 13. No: 14.").text
    check = MATH_CHECKER.check("p", "14", traced)
    assert check.solved and check.answer == "14"
    wrong_solution = Cot("So the total is 13.", "I get \\boxed{14} here.").text
    assert MATH_CHECKER.check("p", "14", wrong_solution).reason == "no_answer"


def test_agents_see_the_whole_trace_in_their_own_delimiters_never_in_think_tags():
    text = Cot(SOLUTION, TRACE).text
    view = agent_view(text)
    assert "<think>" not in view and TRACE in view and SOLUTION in view
    assert view.index("<reasoning>") < view.index("</reasoning>") < view.index("<solution>")
    assert agent_view(SOLUTION) == SOLUTION
    backend = ScriptedBackend(lambda p, s: "medium")
    critic = Critic(backend, load_critic_prompt("critic.txt"), SamplingParams())
    critic.judge([("What is 3 x 4 + 2?", "14", text)], "0.5B")
    assert TRACE in backend.prompts[0] and "<think>" not in backend.prompts[0]


def test_a_rewrite_is_read_from_the_delimiters_and_never_mixed_with_the_agents_thinking():
    original = Cot(SOLUTION, TRACE).text
    rewrite = "First step.\n\nSecond step.\n\nThird step.\n\nFourth step: 14."
    laid_out = f"<reasoning>\n{rewrite}\n</reasoning>\n\n<solution>\n{SOLUTION}\n</solution>"
    # The agent's own musing comes first and names wrong numbers; only the content is read.
    reply = read_reply(Completion(f"Hmm, maybe \\boxed{{15}}.\n</think>\n\n{laid_out}"))
    assert read_layout(reply.content, original) == Cot(SOLUTION, rewrite)
    # A rewrite in the student's own <think> tags: the agent's split at the last </think> would
    # have taken the rewritten trace for the agent's thinking. It is refused, not half-read.
    mixed = read_reply(Completion(f"musing\n</think>\n\n<think>\n{rewrite}\n</think>\n\n{SOLUTION}"))
    assert read_layout(mixed.content, original) is None
    # Two solutions, or none, are not one rewrite.
    assert read_layout(laid_out + "\n<solution>\nmore\n</solution>", original) is None
    assert read_layout(f"<reasoning>\n{rewrite}\n</reasoning>", original) is None


def test_rewrite_rules_measure_the_trace():
    original = Cot(SOLUTION, TRACE).text
    longer_trace = Cot(SOLUTION, TRACE + "\n\nSpelled out: 3 groups of 4 make 12, and 2 more make 14.").text
    longer_solution = Cot(SOLUTION + " " + "Indeed. " * 50, TRACE).text
    assert rewrite_problem(original, longer_trace, "expand") is None
    assert rewrite_problem(original, longer_solution, "expand") == "not_expanded"
    shorter = Cot(SOLUTION, "3 x 4 = 12, and 12 + 2 = 14.").text
    assert rewrite_problem(original, shorter, "simplify") is None
    # A trace that checks itself ("the reasoning is correct") is not commentary on the original.
    checked = Cot(SOLUTION, TRACE + "\n\nChecking: the reasoning is correct.").text
    assert rewrite_problem(original, checked, "expand") is None


def _critiques(label: str, text: str) -> pd.DataFrame:
    return pd.DataFrame({"problem_id": ["p"], "dataset": "d", "question": ["What is 3 x 4 + 2?"], "answer": ["14"],
                         "cot": [text], "cot_correct": [True], "label": [label]})


def test_the_rethinker_rewrites_the_trace_and_a_layout_slip_is_retried():
    original = Cot(SOLUTION, TRACE).text
    expanded = TRACE + "\n\nIn other words: three groups of four are twelve, and two more make fourteen."
    replies = iter([f"musing\n</think>\n\n<think>\n{expanded}\n</think>\n\n{SOLUTION}",  # the wrong tags
                    f"musing\n</think>\n\n<reasoning>\n{expanded}\n</reasoning>\n<solution>\n{SOLUTION}\n</solution>"])
    backend = ScriptedBackend(lambda p, s: next(replies))
    rethinker = Rethinker(backend, load_rethinker_prompts("rethink_expand.txt", "rethink_simplify.txt"),
                          SamplingParams())
    frame = crv.refine(_critiques("easy", original), rethinker, Verifier(), "0.5B", max_attempts=2)
    row = frame.iloc[0]
    assert [v["reason"] for v in json.loads(row["verdicts"])] == [NOT_IN_LAYOUT, "passed"]
    assert row["rewritten_cot"] == Cot(SOLUTION, expanded).text and row["reasoning"] == "musing"
    assert TRACE in backend.prompts[0] and "<reasoning>" in backend.prompts[0]
    assert "<reasoning> and </reasoning>" in backend.prompts[1]  # told how to lay it out


@pytest.mark.parametrize("policy", ["drop", "keep_original"])
def test_a_rewrite_that_never_passes_is_dropped_or_kept_as_the_profile_says(policy):
    original = Cot(SOLUTION, TRACE).text
    never = Rethinker(ScriptedBackend(lambda p, s: "no layout"), load_rethinker_prompts(
        "rethink_expand.txt", "rethink_simplify.txt"), SamplingParams())
    rewritten = crv.refine(_critiques("hard", original), never, Verifier(), "0.5B", max_attempts=2)
    verified = crv.verified_set(rewritten, policy)
    verified_set_schema.validate(verified)
    roles = sorted(zip(verified["role"], verified["provenance"]))
    counts = crv.unrewritten_counts(rewritten, policy)
    if policy == "drop":
        assert roles == [("unsuited_original", "original")]
        assert counts == {"unrewritten_dropped": 1, "unrewritten_kept": 0}
    else:
        assert roles == [("suited", "unrewritten"), ("unsuited_original", "original")]
        assert counts == {"unrewritten_dropped": 0, "unrewritten_kept": 1}
    # The kept original is the medium-gap pair's chosen CoT already: no second, identical pair.
    wrong = perturb_cot(original, "14", random.Random(0))
    from crv_dagster.preference.pairs import IncorrectCot

    pairs, _ = build_pairs(verified, [IncorrectCot("p", wrong, "perturb")], {"small_gap": 1.0, "medium_gap": 0.75,
                                                                            "large_gap": 0.5}, lambda q, a: q)
    assert list(pairs["pair_type"]) == ["medium_gap"]


def test_errors_are_made_in_the_trace_and_carried_to_the_answer():
    original = Cot(SOLUTION, TRACE).text
    slipped = parse(perturb_cot(original, "14", random.Random(3)))
    assert slipped.trace != TRACE and "14" not in slipped.trace.split("\n\n")[-1]
    assert not MATH_CHECKER.check("p", "14", slipped.text).solved and slipped.trace.startswith("Maybe it is 12?")
    # An agent is shown the trace and asked for the same layout; its slip lands in the trace.
    injected = TRACE.replace("12 + 2 = 14", "12 + 2 = 15")
    backend = ScriptedBackend(lambda p, s: f"<reasoning>\n{injected}\n</reasoning>\n<solution>\n"
                                           f"{SOLUTION.replace('14', '15')}\n</solution>")
    from crv_dagster.prompts import INJECT_FIELDS, INJECT_OPTIONAL

    prompt = load_prompt("inject_error.txt", required=INJECT_FIELDS, optional=INJECT_OPTIONAL)
    material = pd.DataFrame({"problem_id": ["p"], "question": ["What is 3 x 4 + 2?"], "answer": ["14"],
                             "cot": [original]})
    found, skipped = incorrect_by_injection(material, backend, prompt, SamplingParams())
    assert [parse(c.cot) for c in found] == [Cot(SOLUTION.replace("14", "15"), injected)] and not skipped
    assert TRACE in backend.prompts[0]


def test_a_student_reply_with_a_long_trace_is_graded_on_its_solution():
    problems = pd.DataFrame({"problem_id": ["a", "b"], "question": ["3 x 4 + 2?", "5 x 5?"], "answer": ["14", "25"]})
    replies = {"3 x 4": "<think>\nIs it \\boxed{15}? Or 13? The answer is 15.\n</think>\n\nSo it is \\boxed{14}.",
               "5 x 5": "<think>\nClearly \\boxed{25}, the answer is 25.\n</think>\n\nI think it is 24."}
    backend = ScriptedBackend(lambda p, s: next(v for k, v in replies.items() if p.startswith(k)))
    details = generate_answers(backend, "sft", "toy", problems, EvalProtocol(last_number_fallback=True))
    assert list(details["extracted_answer"]) == ["14", "24"] and list(details["correct"]) == [True, False]
    assert details["reasoning"].str.contains("boxed").all()


def test_cons_at_n_is_the_majority_answer_and_benchmarks_override_the_protocol():
    problems = pd.DataFrame({"problem_id": ["a", "b"], "question": ["one?", "two?"], "answer": ["1", "2"]})
    # a: right 1 of 3 times but the majority (7) is wrong; b: right 2 of 3 times.
    answers = {"one?": iter(["\\boxed{1}", "\\boxed{7}", "\\boxed{7.}"]),
               "two?": iter(["\\boxed{2}", "nothing", "\\boxed{2}"])}
    backend = ScriptedBackend(lambda p, s: next(answers[p.split("\n")[0]]))
    evaluation = EvaluationConfig(protocol=EvalProtocol(samples=1, max_new_tokens=64),
                                  benchmarks={"aime": {"source": {"kind": "file", "path": "x.jsonl"},
                                                       "protocol": {"samples": 3, "temperature": 0.6,
                                                                    "top_p": 0.95}}})
    protocol = evaluation.protocol_for("aime")
    assert (protocol.samples, protocol.temperature, protocol.top_p, protocol.max_new_tokens) == (3, 0.6, 0.95, 64)
    assert evaluation.protocol_for("heldout") == evaluation.protocol
    [summary] = summarize(generate_answers(backend, "sft", "aime", problems, protocol)).to_dict("records")
    assert summary["accuracy"] == pytest.approx((1 / 3 + 2 / 3) / 2) and summary["cons_at_n"] == 0.5
    assert summary["num_samples"] == 3


def test_a_rewritten_trace_keeps_its_first_line():
    original = Cot(SOLUTION, TRACE).text
    reply = f"Here is the rewrite:\n<reasoning>\nOkay, so I need 3 x 4 + 2.\n\n12 + 2 = 14.\n</reasoning>\n" \
            f"<solution>\n{SOLUTION}\n</solution>"
    assert read_layout(reply, original).trace == "Okay, so I need 3 x 4 + 2.\n\n12 + 2 = 14."


def test_a_cot_without_a_trace_closes_the_block_a_template_opened():
    completion = adjusted_completion("<｜Assistant｜><think>\n", SOLUTION)
    assert completion == f"</think>\n\n{SOLUTION}" and parse(completion) == Cot(SOLUTION, "")
    assert adjusted_completion("<|im_start|>assistant\n", SOLUTION) == SOLUTION
