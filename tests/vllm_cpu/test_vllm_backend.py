"""The vLLM backend for real: vLLM's CPU build, SmolLM2-135M-Instruct converted to safetensors.

The offline engine runs in its child process and answers greedy prompts as transformers does (in
float32 the two engines agree token for token), the response cache serves repeats without the
engine, the engine settings reach vLLM, and `vllm serve`'s OpenAI-compatible server answers the
`openai` backend. `make test-vllm` runs this file in its own environment (.venv-vllm).
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: `make test-vllm` runs these in .venv-vllm")

from crv_dagster.formatting import prompt_messages  # noqa: E402
from crv_dagster.llm.base import BackendError, ChatRequest, SamplingParams  # noqa: E402
from crv_dagster.llm.cache import CachedBackend, ResponseCache  # noqa: E402
from crv_dagster.llm.openai_backend import OpenAIBackend  # noqa: E402
from crv_dagster.llm.transformers_backend import TransformersBackend  # noqa: E402
from crv_dagster.llm.vllm_backend import VllmBackend  # noqa: E402

QUESTIONS = [
    "Ava has 12 apples and buys 7 more. How many apples does she have?",
    "A box holds 6 rows of 4 eggs. How many eggs are in the box?",
    "Ben reads 15 pages a day for 3 days. How many pages does he read?",
    "There are 40 cookies shared equally by 8 children. How many does each child get?",
    "A train travels 60 km per hour for 2 hours. How far does it go?",
    "Chloe had 30 stickers and gave away 11. How many are left?",
    "What is 9 times 7, minus 20?",
    "A pen costs 3 dollars. How much do 5 pens cost?",
]


def _requests(max_new_tokens: int = 48, temperature: float = 0.0, seed: int = 0) -> list[ChatRequest]:
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    return [ChatRequest.of(prompt_messages(q), params) for q in QUESTIONS]


@pytest.fixture(scope="module")
def engine(smollm2):
    backend = VllmBackend(smollm2, dtype="float32", max_model_len=1024, enforce_eager=True)
    yield backend
    backend.close()


def test_the_offline_engine_answers_as_transformers_does(engine, smollm2):
    ours = engine.generate(_requests())
    reference = TransformersBackend(smollm2, batch_size=8, dtype="float32").generate(_requests())
    assert [c.text for c in ours] == [c.text for c in reference]
    assert [c.completion_tokens for c in ours] == [c.completion_tokens for c in reference]
    assert [c.finish_reason for c in ours] == [c.finish_reason for c in reference]
    assert {c.finish_reason for c in ours} <= {"stop", "length"} and "length" in {c.finish_reason for c in ours}
    assert all(c.prompt_tokens > 10 for c in ours)


def test_the_engine_lives_in_a_child_process_that_close_ends(smollm2):
    backend = VllmBackend(smollm2, dtype="float32", max_model_len=512, enforce_eager=True)
    child = backend._proc
    assert child.pid != os.getpid() and child.is_alive()
    [completion] = backend.generate(_requests(max_new_tokens=8)[:1])
    assert completion.completion_tokens == 8 and completion.finish_reason == "length"
    backend.close()
    assert not child.is_alive()


def test_repeats_come_from_the_response_cache(engine, tmp_path):
    cached = CachedBackend(engine, ResponseCache(tmp_path / "cache.sqlite"))
    first = cached.generate(_requests(max_new_tokens=24))
    again = cached.generate(_requests(max_new_tokens=24))
    assert [c.text for c in again] == [c.text for c in first]
    assert cached.stats.new_calls == len(QUESTIONS) and cached.stats.hits == len(QUESTIONS)


def test_sampling_seeds_reach_the_engine(engine):
    a = engine.generate(_requests(max_new_tokens=24, temperature=1.0, seed=1))
    b = engine.generate(_requests(max_new_tokens=24, temperature=1.0, seed=1))
    c = engine.generate(_requests(max_new_tokens=24, temperature=1.0, seed=2))
    assert [x.text for x in a] == [x.text for x in b]
    assert [x.text for x in a] != [x.text for x in c]


# A run of the teacher that is killed mid-generation: half the replies are short, half long.
KILLED_RUN = """
import json, sys
from crv_dagster.formatting import prompt_messages
from crv_dagster.llm.base import ChatRequest, SamplingParams
from crv_dagster.llm.cache import CachedBackend, ResponseCache
from crv_dagster.llm.vllm_backend import VllmBackend
model, cache, budgets = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
requests = [ChatRequest.of(prompt_messages(q), SamplingParams(max_new_tokens=n)) for q, n in budgets]
backend = VllmBackend(model, dtype="float32", max_model_len=1024, enforce_eager=True)
CachedBackend(backend, ResponseCache(cache)).generate(requests)
"""
# 4 tokens: finished at once; 900: the engine is still busy with them when the run is killed.
BUDGETS = [(q, 4 if i % 2 else 900) for i, q in enumerate(QUESTIONS)]


def killed_run_requests() -> list[ChatRequest]:
    return [ChatRequest.of(prompt_messages(q), SamplingParams(max_new_tokens=n)) for q, n in BUDGETS]


def test_a_run_killed_mid_generation_keeps_every_finished_reply(smollm2, engine, tmp_path):
    import json

    import psutil

    cache_file = tmp_path / "cache.sqlite"
    run = subprocess.Popen([sys.executable, "-c", KILLED_RUN, smollm2, str(cache_file), json.dumps(BUDGETS)],
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        # Killed as soon as the short replies are in the cache, while the long ones are generating.
        while not (cache_file.exists() and len(ResponseCache(cache_file)) >= len(QUESTIONS) // 2):
            assert run.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no reply reached the cache"
            time.sleep(0.2)
        engine_processes = psutil.Process(run.pid).children(recursive=True)
        assert engine_processes, "the engine runs in a child process"
        # Only the run itself, as the OOM killer or `kill -9` of a step worker would: the engine
        # child and the processes it started must end too, freeing their memory for the re-run.
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=60)
        _, left = psutil.wait_procs(engine_processes, timeout=60)
        assert not left, f"engine processes outlived the killed run: {[p.pid for p in left]}"
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left of the run's group
            os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=60)
    kept = len(ResponseCache(cache_file))
    assert len(QUESTIONS) // 2 <= kept < len(QUESTIONS)
    # The re-run takes the finished replies from the cache and generates only the rest.
    again = CachedBackend(engine, ResponseCache(cache_file))
    results = again.generate(killed_run_requests())
    assert again.stats.hits == kept and again.stats.new_calls == len(QUESTIONS) - kept
    assert [c.completion_tokens for c in results[1::2]] == [4] * (len(QUESTIONS) // 2)
    assert len(ResponseCache(cache_file)) == len(QUESTIONS)


def test_engine_settings_reach_vllm(smollm2, monkeypatch, capfd):
    # max_model_len is the engine's: a prompt longer than it is refused, with the engine's reason.
    backend = VllmBackend(smollm2, dtype="float32", max_model_len=128, enforce_eager=True)
    try:
        long = ChatRequest.of(prompt_messages(" ".join(QUESTIONS * 2)), SamplingParams(max_new_tokens=8))
        with pytest.raises(BackendError, match="maximum context length is 128"):
            backend.generate([long])
        # The engine is still serving after a refused request.
        assert backend.generate(_requests(max_new_tokens=4)[:1])[0].completion_tokens == 4
    finally:
        backend.close()
    # gpu_memory_utilization is the engine's too (on a CPU, the share of the NUMA node's memory it
    # claims when the KV cache has no size of its own): all of it cannot be free, so start-up fails
    # in the parent. vLLM's exception says only that a worker failed; its log names the value.
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE")
    capfd.readouterr()
    with pytest.raises(BackendError, match="failed to start.*root cause"):
        VllmBackend(smollm2, dtype="float32", max_model_len=512, enforce_eager=True, gpu_memory_utilization=0.99).close()
    log = capfd.readouterr()
    assert "desired CPU memory utilization (0.99" in log.out + log.err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(smollm2, tmp_path_factory):
    """`vllm serve` (its module entry point: the CPU build's `vllm` command cannot find its own
    version) on a free port, stopped with SIGTERM."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", smollm2,
         "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
         "--max-model-len", "1024", "--enforce-eager"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, open(log.name).read()[-3000:]
            assert time.monotonic() < deadline, "vllm serve did not come up"
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_vllm_serve_behind_the_openai_backend(vllm_server, engine):
    backend = OpenAIBackend("smollm2", vllm_server, api_key_env=None, max_concurrency=4)
    served = backend.generate(_requests())
    offline = engine.generate(_requests())
    # The same engine and weights behind HTTP: the same greedy answers, budgets and token counts.
    assert [c.text for c in served] == [c.text for c in offline]
    assert [c.finish_reason for c in served] == [c.finish_reason for c in offline]
    assert [c.completion_tokens for c in served] == [c.completion_tokens for c in offline]
