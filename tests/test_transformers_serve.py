"""The ``openai`` backend against ``transformers serve``, the OpenAI-compatible server that
transformers ships and the docs point to for a local model (docs/usage.md): a real server process
on loopback, serving a tiny model from a local folder, offline. The model is warmed up on the
agents' reply formats, so it answers a judge prompt with a word and its end token: replies with
text in them, ended by the model or cut by ``max_tokens``."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from crv_dagster.config import TinyModel
from crv_dagster.data.arith import generate_arith
from crv_dagster.llm.base import ChatRequest, SamplingParams
from crv_dagster.llm.openai_backend import OpenAIBackend
from crv_dagster.llm.transformers_backend import TransformersBackend
from crv_dagster.models.store import resolve_model
from crv_dagster.prompts import JUDGE_FIELDS, load_prompt
from crv_dagster.training.launch_command import free_port

pytestmark = pytest.mark.slow  # a warm-up of the tiny agent (about 10 s) and a server start-up


@pytest.fixture(scope="module")
def agent_model(session_models) -> str:
    spec = TinyModel(source="tiny", architecture="qwen2", hidden_size=32, num_layers=1, num_heads=4, seed=0,
                     agent_warmup_steps=120)
    return resolve_model("served-agent", spec, session_models)


@pytest.fixture(scope="module")
def served(agent_model, tmp_path_factory):
    """``transformers serve`` on the tiny agent: (base URL, model name, the server's log)."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [str(Path(sys.executable).parent / "transformers"), "serve", agent_model,
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                pytest.fail(f"transformers serve exited with {server.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not answer /health in 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", agent_model, log
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def _requests(n, max_new_tokens=8):
    judge = load_prompt("verify_judge.txt", required=JUDGE_FIELDS)
    return [ChatRequest.of([{"role": "user", "content": judge.render(question=p.question, answer=p.answer,
                                                                     cot=p.cot)}],
                           SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))
            for p in generate_arith(n, seed=5)]


def test_greedy_replies_equal_local_generation(served, agent_model):
    url, name, log = served
    client = OpenAIBackend(name, url, api_key_env=None, max_concurrency=2, backoff_s=0.01)
    remote = client.generate(_requests(4))
    local = TransformersBackend(agent_model, batch_size=1).generate(_requests(4))
    assert [c.text for c in remote] == [c.text for c in local], log.read_text()[-2000:]
    assert all(c.text.strip() for c in remote)  # the warmed-up agent's verdict
    assert [c.finish_reason for c in remote] == ["stop"] * 4  # it wrote its end token
    assert [c.completion_tokens for c in remote] == [c.completion_tokens for c in local]
    assert all(c.prompt_tokens > 0 for c in remote) and client.retries == 0


def test_a_reply_cut_by_max_tokens_reads_as_truncated(served):
    from crv_dagster.llm.reply import TRUNCATED, read_reply

    url, name, _ = served
    [completion] = OpenAIBackend(name, url, api_key_env=None).generate(_requests(1, max_new_tokens=1))
    assert completion.finish_reason == "length" and completion.completion_tokens == 1
    assert read_reply(completion).problem == TRUNCATED
