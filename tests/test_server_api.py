"""The local server as the official ``openai`` client sees it: streaming, ``n``, and what it refuses."""

import httpx
import openai
import pytest

from crv_dagster.llm.base import ChatRequest, SamplingParams
from chat_server import ChatServer, parse_call, text_pieces
from crv_dagster.llm.transformers_backend import TransformersBackend

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Compute 7 * 3."}]


@pytest.fixture(scope="module")
def served(tiny_model):
    backend = TransformersBackend(tiny_model, batch_size=4)
    with ChatServer(backend, "tiny") as server:
        yield server, backend, openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


# Sampled, with a seed: the random-weight model's greedy reply is often empty, a sampled one is not.
def _local(backend, max_tokens=12, temperature=1.0, seed=0):
    params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, seed=seed)
    return backend.generate([ChatRequest.of(MESSAGES, params)])[0]


def test_a_plain_request_is_the_local_model_s_reply(served):
    server, backend, client = served
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=1.0,
                                           seed=0)
    local = _local(backend)
    assert reply.choices[0].message.content == local.text and local.text
    assert reply.usage.completion_tokens == local.completion_tokens and reply.model == "tiny"
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_streaming_sends_the_same_reply_as_server_sent_events(served):
    server, backend, client = served
    stream = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=1.0,
                                            seed=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    local = _local(backend)
    assert "".join(pieces) == local.text and len(pieces) == len(text_pieces(local.text)) > 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == local.finish_reason
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == local.completion_tokens
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    # On the wire: events, then the end marker.
    with httpx.stream("POST", server.base_url + "/chat/completions", timeout=60, json={
            "model": "tiny", "messages": MESSAGES, "max_tokens": 4, "stream": True}) as response:
        assert response.headers["content-type"] == "text/event-stream"
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"


def test_n_samples_are_n_choices_each_with_its_own_seed(served):
    server, backend, client = served
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=1.0,
                                           seed=5, n=3)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    expected = [_local(backend, temperature=1.0, seed=5 + i).text for i in range(3)]
    assert [c.message.content for c in reply.choices] == expected
    assert len(set(expected)) > 1  # sampled with different seeds, so they differ
    streamed = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=1.0,
                                              seed=5, n=3, stream=True)
    by_choice: dict[int, str] = {}
    for chunk in streamed:
        for choice in chunk.choices:
            by_choice[choice.index] = by_choice.get(choice.index, "") + (choice.delta.content or "")
    assert [by_choice[i] for i in range(3)] == expected


def test_an_unknown_model_is_a_404(served):
    _, _, client = served
    with pytest.raises(openai.NotFoundError, match="`gpt-4o` does not exist; this server serves `tiny`"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)


@pytest.mark.parametrize("extra, named", [({"logprobs": True}, "logprobs"), ({"stop": ["\n"]}, "stop"),
                                          ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
                                          ({"presence_penalty": 0.5}, "presence_penalty")])
def test_unsupported_parameters_are_refused_not_ignored(served, extra, named):
    server, _, client = served
    before = server.completions_served
    with pytest.raises(openai.BadRequestError, match=f"does not support {named}") as refused:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, **extra)
    assert refused.value.body["param"] == named and refused.value.body["code"] == "unsupported_parameter"
    assert server.completions_served == before  # nothing was generated


def test_requests_that_ask_for_the_defaults_are_served():
    call = parse_call({"model": "m", "messages": MESSAGES, "logprobs": False, "presence_penalty": 0,
                       "frequency_penalty": 0, "user": None, "max_completion_tokens": 7}, "m")
    assert call.n == 1 and not call.stream and call.request.params.max_new_tokens == 7


@pytest.mark.parametrize("body, message", [
    ({"messages": MESSAGES}, "model is required"),
    ({"model": "m", "messages": []}, "messages must be"),
    ({"model": "m", "messages": MESSAGES, "n": 0}, "n must be an integer"),
    ({"model": "m", "messages": MESSAGES, "n": 99}, "n must be an integer"),
    ({"model": "m", "messages": MESSAGES, "stream_options": {"include_usage": True}}, "only allowed with stream"),
    ({"model": "m", "messages": MESSAGES, "temperature": "hot"}, "bad sampling parameter"),
])
def test_malformed_requests_say_what_is_wrong(body, message):
    from chat_server import ApiError

    with pytest.raises(ApiError, match=message) as refused:
        parse_call(body, "m")
    assert refused.value.status == 400


def test_pieces_join_back_to_the_text():
    for text in ["", "   ", "one", "  two words  ", "a\n\nb\tc "]:
        assert "".join(text_pieces(text)) == text


def test_a_failing_model_is_a_500_that_says_why():
    class Broken:
        def generate(self, requests):
            raise RuntimeError("CUDA out of memory")

    with ChatServer(Broken(), "broken") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError, match="generation failed: RuntimeError: CUDA out of memory"):
            client.chat.completions.create(model="broken", messages=MESSAGES)
