"""Any OpenAI-compatible chat endpoint: ``vllm serve``, SGLang, llama.cpp server, hosted APIs.

A backend may name several endpoints serving the same model (replicas): each request goes to the
least busy one that is up; a replica that fails (connection refused or dropped, timeout, 5xx,
429) is out of rotation for ``cooldown_s`` and the request is retried at once on another, so a
replica that dies loses nothing. ``served_by`` counts what each one answered.

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


class Endpoint:
    """One replica: its URL, the requests it has in flight, until when it is out of rotation."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.in_flight = 0
        self.down_until = 0.0
        self.served = 0
        self.failures = 0


class OpenAIBackend:
    def __init__(
        self,
        model: str,
        base_url: str | Sequence[str],
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        cooldown_s: float = 30.0,
    ):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("an openai backend needs at least one base URL")
        self.model = model
        self.endpoints = [Endpoint(url) for url in urls]
        # The cache knows the backend by its first endpoint: which replica answered does not
        # change a reply, and adding replicas keeps what is cached.
        self.base_url = self.endpoints[0].url
        self.cooldown_s = cooldown_s
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
        urls = self.base_url if len(self.endpoints) == 1 else [e.url for e in self.endpoints]
        return f"OpenAIBackend(model={self.model!r}, base_url={urls!r})"

    @property
    def served_by(self) -> dict[str, int]:
        """How many completions each endpoint answered."""
        return {e.url: e.served for e in self.endpoints}

    def _acquire(self) -> Endpoint:
        """The least busy endpoint in rotation (the one back soonest when none is), counted busy."""
        with self._lock:
            now = time.monotonic()
            up = [e for e in self.endpoints if e.down_until <= now]
            chosen = (min(up, key=lambda e: (e.in_flight, e.served)) if up
                      else min(self.endpoints, key=lambda e: e.down_until))
            chosen.in_flight += 1
            return chosen

    def _release(self, endpoint: Endpoint, ok: bool, down_s: float = 0.0) -> None:
        with self._lock:
            endpoint.in_flight -= 1
            if ok:
                endpoint.served += 1
            elif down_s:
                endpoint.failures += 1
                endpoint.down_until = max(endpoint.down_until, time.monotonic() + down_s)

    def _others_up(self, endpoint: Endpoint) -> bool:
        with self._lock:
            now = time.monotonic()
            return any(e is not endpoint and e.down_until <= now for e in self.endpoints)

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
        last_error, url = "", ""
        for attempt in range(self.max_retries + 1):
            endpoint = self._acquire()
            url = f"{endpoint.url}/chat/completions"
            response, down_s = None, 0.0
            try:
                response = self._client.post(url, json=self._payload(request))
            except (httpx.TimeoutException, httpx.TransportError) as err:
                last_error, down_s = f"{type(err).__name__}: {err}", self.cooldown_s
            else:
                if response.status_code == 200:
                    try:
                        completion = _parse_completion(response)
                    except MalformedResponse as err:
                        last_error = str(err)
                    else:
                        self._release(endpoint, ok=True)
                        return completion
                else:
                    last_error = f"HTTP {response.status_code}: {response.text[:300]}"
                    if response.status_code not in RETRYABLE_STATUS:
                        self._release(endpoint, ok=False)
                        raise BackendError(f"{self!r} at {url} refused the request ({last_error})")
                    down_s = self._delay(attempt, response) if response.status_code == 429 else self.cooldown_s
            # One replica alone is retried after a backoff; with others in rotation, at once elsewhere.
            single = len(self.endpoints) == 1
            self._release(endpoint, ok=False, down_s=0.0 if single else down_s)
            if attempt < self.max_retries:
                with self._lock:
                    self.retries += 1
                if single or not self._others_up(endpoint):
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
