"""Any OpenAI-compatible chat endpoint: ``vllm serve``, SGLang, llama.cpp server, hosted APIs.

Requests run concurrently on a thread pool. Rate limits (429), server errors (5xx), timeouts
dropped connections and malformed 200 responses (invalid JSON, no choices: a proxy or an
overloaded server) are retried with exponential backoff and jitter, honouring ``Retry-After``;
other 4xx errors are the caller's fault and fail at once. Every error names the backend's model
and URL. The API key is read
from an environment variable, sent only in the Authorization header, and never logged.
"""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Sequence

import httpx

from crv_dagster.llm.base import BackendError, ChatRequest, Completion, ResultCallback

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIBackend:
    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
    ):
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        headers = {"Content-Type": "application/json"}
        api_key = os.environ.get(api_key_env) if api_key_env else None
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            headers=headers,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )
        self._lock = threading.Lock()
        self.retries = 0  # how many attempts were repeated, for metadata and tests

    @property
    def model_id(self) -> str:
        return f"openai:{self.base_url}:{self.model}"

    def __repr__(self) -> str:  # never show headers (the key)
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r})"

    def _payload(self, request: ChatRequest) -> dict:
        params = request.params
        return {
            "model": self.model,
            "messages": request.message_dicts(),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
        }

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            retry_after = response.headers.get("retry-after")
            if retry_after:
                try:
                    return min(float(retry_after), 60.0)
                except ValueError:
                    pass
        return self.backoff_s * (2**attempt) * (0.5 + random.random() / 2)

    def complete(self, request: ChatRequest) -> Completion:
        url = f"{self.base_url}/chat/completions"
        last_error = ""
        for attempt in range(self.max_retries + 1):
            response = None
            try:
                response = self._client.post(url, json=self._payload(request))
            except (httpx.TimeoutException, httpx.TransportError) as err:
                last_error = f"{type(err).__name__}: {err}"
            else:
                if response.status_code == 200:
                    try:
                        return _parse_completion(response)
                    except MalformedResponse as err:
                        last_error = str(err)
                else:
                    last_error = f"HTTP {response.status_code}: {response.text[:300]}"
                    if response.status_code not in RETRYABLE_STATUS:
                        raise BackendError(f"{self!r} at {url} refused the request ({last_error})")
            if attempt < self.max_retries:
                with self._lock:
                    self.retries += 1
                time.sleep(self._delay(attempt, response))
        raise BackendError(f"{self!r} at {url}: no answer after {self.max_retries + 1} attempts "
                           f"(last: {last_error})")

    def generate(self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None) -> list[Completion]:
        results: list[Completion | None] = [None] * len(requests)
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency)
        futures = {pool.submit(self.complete, r): i for i, r in enumerate(requests)}
        try:
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                if on_result is not None:
                    on_result(i, results[i])
        except BaseException:
            # Interrupted or failed: do not wait for requests in flight (a stuck server would hold
            # the step for its whole timeout); what finished is already in the cache.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self._client.close()


class MalformedResponse(ValueError):
    """A 200 response that is not a chat completion."""


def _parse_completion(response: httpx.Response) -> Completion:
    try:
        body = response.json()
    except ValueError:
        raise MalformedResponse(f"HTTP 200 with invalid JSON: {response.text[:200]!r}") from None
    try:
        choice = body["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        # vLLM's reasoning parsers: `reasoning` now, `reasoning_content` before January 2026.
        reasoning = message.get("reasoning") or message.get("reasoning_content") or ""
        usage = body.get("usage") or {}
        return Completion(
            text=text.strip(),
            finish_reason=choice.get("finish_reason") or "stop",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            reasoning=reasoning.strip(),
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as err:
        raise MalformedResponse(f"HTTP 200 that is not a chat completion ({type(err).__name__}): "
                                f"{str(body)[:200]}") from None
