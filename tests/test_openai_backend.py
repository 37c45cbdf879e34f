"""The HTTP backend against a real OpenAI-compatible server on loopback serving a real model."""

import socket

import httpx
import pytest
from faulty_proxy import FaultPlan, FaultyProxy

from crv_dagster.llm.base import BackendError, ChatRequest, SamplingParams
from crv_dagster.llm.cache import CachedBackend, ResponseCache
from crv_dagster.llm.openai_backend import OpenAIBackend
from chat_server import ChatServer
from crv_dagster.llm.transformers_backend import TransformersBackend


@pytest.fixture(scope="module")
def local_model(tiny_model):
    return TransformersBackend(tiny_model, batch_size=4)


def _requests(n):
    return [ChatRequest.of([{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": f"Compute {i} * 3."}], SamplingParams(max_new_tokens=8))
            for i in range(n)]


def _client(server, **kwargs):
    kwargs.setdefault("backoff_s", 0.01)
    return OpenAIBackend("tiny", server.base_url, api_key_env=None, **kwargs)


def test_served_completions_equal_local_generation(local_model):
    with ChatServer(local_model, "tiny") as server:
        client = _client(server, max_concurrency=4)
        remote = client.generate(_requests(6))
        assert httpx.get(server.base_url + "/models").json()["data"][0]["id"] == "tiny"
    local = local_model.generate(_requests(6))
    assert [c.text for c in remote] == [c.text for c in local]
    assert all(c.completion_tokens > 0 for c in remote)
    assert client.retries == 0


def test_retries_429_and_5xx_then_succeeds(local_model):
    faults = FaultPlan(status_by_request={1: 500, 2: 429, 3: 503, 5: 502})
    with ChatServer(local_model, "tiny") as upstream, FaultyProxy(upstream.base_url, faults) as server:
        client = _client(server, max_concurrency=1, max_retries=3)
        results = client.generate(_requests(3))
        assert upstream.completions_served == 3
        assert server.requests_seen == 7
    assert client.retries == 4
    assert [c.text for c in results] == [c.text for c in local_model.generate(_requests(3))]


def test_gives_up_after_max_retries(local_model):
    faults = FaultPlan(status_by_request={n: 503 for n in range(1, 10)})
    with ChatServer(local_model, "tiny") as upstream, FaultyProxy(upstream.base_url, faults) as server:
        client = _client(server, max_retries=2)
        with pytest.raises(BackendError, match="3 attempts.*HTTP 503"):
            client.complete(_requests(1)[0])
        assert server.requests_seen == 3


def test_a_200_with_invalid_json_is_retried_and_named(local_model):
    with ChatServer(local_model, "tiny") as upstream, \
            FaultyProxy(upstream.base_url, FaultPlan(malformed_requests={1, 3, 4})) as server:
        client = _client(server, max_retries=1)
        assert client.complete(_requests(1)[0]).completion_tokens > 0  # request 1 broken, 2 fine
        assert client.retries == 1
        with pytest.raises(BackendError) as info:  # requests 3 and 4 broken: out of retries
            client.complete(_requests(1)[0])
    message = str(info.value)
    assert "HTTP 200 with invalid JSON" in message and server.base_url in message and "'tiny'" in message


def test_client_errors_are_not_retried(local_model):
    with ChatServer(local_model, "tiny") as upstream, \
            FaultyProxy(upstream.base_url, FaultPlan(status_by_request={1: 400})) as server:
        client = _client(server, max_retries=5)
        with pytest.raises(BackendError, match="refused.*HTTP 400"):
            client.complete(_requests(1)[0])
        assert server.requests_seen == 1


def test_timeouts_are_retried(local_model):
    with ChatServer(local_model, "tiny") as upstream, \
            FaultyProxy(upstream.base_url, FaultPlan(delay_by_request={1: 1.5})) as server:
        client = _client(server, timeout_s=0.5, max_retries=2)
        assert client.complete(_requests(1)[0]).completion_tokens > 0
        assert client.retries == 1


def test_unreachable_server_fails_clearly():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    client = OpenAIBackend("m", f"http://127.0.0.1:{port}/v1", api_key_env=None, max_retries=1, backoff_s=0.01)
    with pytest.raises(BackendError, match="ConnectError"):
        client.complete(_requests(1)[0])


def test_api_key_from_environment_is_sent_but_never_shown(monkeypatch, local_model):
    monkeypatch.setenv("CRV_TEST_KEY", "sk-secret-123")
    seen = []

    with ChatServer(local_model, "tiny") as server:
        original = server.httpd.RequestHandlerClass.do_POST

        def spy(handler):
            seen.append(handler.headers.get("Authorization"))
            return original(handler)

        server.httpd.RequestHandlerClass.do_POST = spy
        client = OpenAIBackend("tiny", server.base_url, api_key_env="CRV_TEST_KEY")
        client.complete(_requests(1)[0])
    assert seen == ["Bearer sk-secret-123"]
    assert "sk-secret" not in repr(client) and "sk-secret" not in client.model_id


def test_cache_in_front_of_the_http_backend_resumes_after_failures(tmp_path, local_model):
    # Two of five requests fail for good on the first pass; the three that succeeded are kept.
    faults = FaultPlan(status_by_request={2: 500, 3: 500, 4: 500, 5: 500})
    with ChatServer(local_model, "tiny") as upstream, FaultyProxy(upstream.base_url, faults) as server:
        cache = ResponseCache(tmp_path / "c.sqlite")
        first = CachedBackend(_client(server, max_concurrency=1, max_retries=1), cache)
        with pytest.raises(BackendError):
            first.generate(_requests(5))
        kept = len(cache)
        assert kept >= 1
        second = CachedBackend(_client(server, max_concurrency=1, max_retries=1), cache)
        second.generate(_requests(5))
    assert (second.stats.hits, second.stats.new_calls) == (kept, 5 - kept)


def test_two_replicas_survive_one_dying_with_nothing_lost_or_generated_twice(local_model, tmp_path):
    a, b = ChatServer(local_model, "tiny").start(), ChatServer(local_model, "tiny").start()
    backend = OpenAIBackend("tiny", [a.base_url, b.base_url], api_key_env=None, max_concurrency=2, backoff_s=0.01,
                            cooldown_s=60)
    cached = CachedBackend(backend, ResponseCache(tmp_path / "cache.sqlite"))
    requests = _requests(16)
    done = []

    def on_result(i, completion):
        done.append(i)
        if len(done) == 4:  # replica a dies mid-run; what it had in flight is still answered
            a.stop()

    try:
        results = cached.generate(requests, on_result=on_result)
    finally:
        b.stop()
    assert len(results) == 16 and all(r is not None for r in results)
    assert [r.text for r in results] == [c.text for c in local_model.generate(requests)]
    # Every request generated once over both replicas, and each stored once.
    assert a.completions_served + b.completions_served == 16
    assert len(ResponseCache(tmp_path / "cache.sqlite")) == 16
    assert backend.served_by == {a.base_url: a.completions_served, b.base_url: b.completions_served}
    assert 0 < a.completions_served < 16 and b.completions_served > a.completions_served
    meta = cached.stats.as_metadata("agent")
    assert (meta["agent_endpoint_0_served"], meta["agent_endpoint_1_served"]) == (a.completions_served,
                                                                                  b.completions_served)
    # The dead replica was tried once per request in flight to it and then left out of rotation.
    [dead] = [e for e in backend.endpoints if e.url == a.base_url]
    assert dead.failures >= 1 and dead.down_until > 0 and backend.retries == dead.failures


def test_a_replica_that_is_down_from_the_start_is_skipped(local_model):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    with ChatServer(local_model, "tiny") as live:
        backend = OpenAIBackend("tiny", [dead_url, live.base_url], api_key_env=None, max_concurrency=1,
                                backoff_s=0.01)
        results = backend.generate(_requests(5))
    assert all(r.text is not None for r in results) and live.completions_served == 5
    assert backend.served_by == {dead_url: 0, live.base_url: 5} and backend.retries == 1
