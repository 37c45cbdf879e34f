"""Reading reasoning-model replies: thinking split off, cut and unfinished replies refused."""

from collections import Counter

import pytest
from reasoning_double import THINK_MARKER, TRACE_MARKER, ReasoningDouble

from crv_dagster.llm.base import ChatRequest, Completion, SamplingParams
from crv_dagster.llm.openai_backend import OpenAIBackend
from crv_dagster.llm.reply import read_reply
from chat_server import ChatServer


@pytest.mark.parametrize(
    "text, finish, content, problem",
    [
        ("\\boxed{4}", "stop", "\\boxed{4}", None),                                  # a chat model
        ("<think>is it 5?</think>\n\n\\boxed{4}", "stop", "\\boxed{4}", None),       # both tags
        ("is it 5? no\n</think>\n\n\\boxed{4}", "stop", "\\boxed{4}", None),         # QwQ/R1: no opening tag
        ("a</think>b</think>\\boxed{4}", "stop", "\\boxed{4}", None),                 # the last close wins
        ("is it 5? maybe 6, because", "length", "", "truncated"),                      # cut mid-thought
        ("done</think>\n\nThe answer is \\boxed{4", "length", "", "truncated"),       # cut mid-answer
        ("<think>is it 5? maybe", "stop", "", "unfinished_thinking"),                 # stop string inside thinking
        ("thinking</think>   ", "stop", "", "unfinished_thinking"),                    # nothing after the thinking
        ("   ", "stop", "", "empty"),
    ],
)
def test_read_reply(text, finish, content, problem):
    reply = read_reply(Completion(text, finish))
    assert (reply.content, reply.problem, reply.usable) == (content, problem, problem is None)
    assert "</think>" not in reply.content and "<think>" not in reply.reasoning


def test_thinking_is_kept_for_audit_and_a_cut_reply_keeps_all_its_text():
    assert read_reply(Completion("is it 5?</think>4")).reasoning == "is it 5?"
    assert read_reply(Completion("is it 5? maybe", "length")).reasoning == "is it 5? maybe"
    replies = [read_reply(Completion(t, f)) for t, f in [("x", "length"), ("y", "length"), ("<think>z", "stop"), ("ok", "stop")]]
    assert Counter(r.problem for r in replies if r.problem) == {"truncated": 2, "unfinished_thinking": 1}


@pytest.mark.parametrize("reasoning_parser", [False, True])
def test_both_server_routes_give_the_same_reading(reasoning_parser):
    """Plain text with </think>, or `vllm serve --reasoning-parser` with the thinking in
    `message.reasoning` and a null content when the thinking never ended."""
    double = ReasoningDouble({"What is 2 + 2?": "4"}, think_words=50)
    with ChatServer(double, "double", reasoning_parser=reasoning_parser) as server:
        client = OpenAIBackend("double", server.base_url, api_key_env=None)
        teacher = "Solve the following problem.\n\nProblem: What is 2 + 2?"
        long_enough, too_short = client.generate([
            ChatRequest.of([{"role": "user", "content": teacher}], SamplingParams(max_new_tokens=4096)),
            ChatRequest.of([{"role": "user", "content": teacher}], SamplingParams(max_new_tokens=20)),
        ])
        client.close()
    whole, cut = read_reply(long_enough), read_reply(too_short)
    assert whole.usable and whole.content.endswith("\\boxed{4}.") and THINK_MARKER not in whole.content
    assert TRACE_MARKER in whole.reasoning and THINK_MARKER not in whole.content
    assert bool(long_enough.reasoning) is reasoning_parser
    assert not cut.usable and cut.problem == "truncated" and cut.content == ""
