"""An OpenAI-compatible chat server over any backend, for the tests: the API as vLLM answers it.

What the tests serve through it is mostly what no real server can be made to serve: the scripted
reasoning models that muse, ramble or never close their thinking (``tests/reasoning_double.py``,
``tests/scripted.py``) and a backend that raises; also tiny real models, in process and with
counters of what each replica served. It does what ``vllm serve --reasoning-parser`` does with a
reasoning model's reply (the thinking in ``message.reasoning``, a null content when the thinking
never ended), so the ``openai`` backend is tested against replies as a served reasoning model sends
them. The tests put a proxy that fails chosen requests in front of it (``tests/faulty_proxy.py``)
to exercise client retries. A real local model is served with ``transformers serve PATH`` (tested
in ``tests/test_transformers_serve.py``) or ``vllm serve``.

What it does of the chat completions API, and what it refuses rather than ignore:

- ``model`` must be one of the served names (otherwise 404, as vLLM answers); several names are
  aliases of the one model, as with ``vllm serve --served-model-name a b``;
- ``n`` samples, each with its own seed (``seed``, ``seed + 1``, ...);
- ``stream: true`` answers with server-sent events (``chat.completion.chunk`` objects, then
  ``data: [DONE]``; ``stream_options.include_usage`` adds the usage chunk). The model generates
  the whole reply first and it is then sent in pieces: a client sees the API's stream, not
  tokens as they are generated;
- ``max_tokens`` (or ``max_completion_tokens``), ``temperature``, ``top_p`` and ``seed``;
- any other parameter is a 400 that names it, unless it asks for the API's default (``logprobs:
  false``, a penalty of 0, ...).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler

from crv_dagster.llm.base import ChatRequest, SamplingParams
from loopback import LoopbackServer

SUPPORTED = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "n",
             "stream", "stream_options"}
# Parameters it does not implement but accepts when they ask for what it does anyway.
DEFAULTS = {"logprobs": False, "presence_penalty": 0, "frequency_penalty": 0, "parallel_tool_calls": None}
MAX_N = 16


class ApiError(Exception):
    """A request the server refuses: the HTTP status and the API's error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code

    def body(self) -> dict:
        kind = "not_found_error" if self.status == 404 else "invalid_request_error"
        return {"error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ChatCall:
    """One parsed chat completions request: ``n`` generations of the same messages."""

    request: ChatRequest
    n: int = 1
    stream: bool = False
    include_usage: bool = False

    def requests(self) -> list[ChatRequest]:
        """One request per sample, each with its own seed, so sampled choices differ."""
        params = self.request.params
        return [replace(self.request, params=replace(params, seed=params.seed + i)) for i in range(self.n)]


def parse_call(body: object, served_name: str | tuple[str, ...]) -> ChatCall:
    """The request ``body`` as a ``ChatCall``, or the ``ApiError`` the API would answer with."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unsupported = sorted(k for k, v in body.items()
                         if k not in SUPPORTED and v is not None and not (k in DEFAULTS and v == DEFAULTS[k]))
    if unsupported:
        raise ApiError(400, f"this server does not support {', '.join(unsupported)} (it serves "
                            f"{', '.join(sorted(SUPPORTED))})", param=unsupported[0], code="unsupported_parameter")
    if not body.get("model"):
        raise ApiError(400, "model is required", param="model")
    names = (served_name,) if isinstance(served_name, str) else tuple(served_name)
    if body["model"] not in names:
        raise ApiError(404, f"The model `{body['model']}` does not exist; this server serves "
                            + ", ".join(f"`{n}`" for n in names), param="model", code="model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise ApiError(400, "messages must be a non-empty list of {role, content} objects with text content",
                       param="messages")
    n = 1 if body.get("n") is None else body["n"]
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N:
        raise ApiError(400, f"n must be an integer from 1 to {MAX_N}", param="n")
    stream = bool(body.get("stream"))
    options = body.get("stream_options") or {}
    if options and not stream:
        raise ApiError(400, "stream_options is only allowed with stream: true", param="stream_options")
    if set(options) - {"include_usage"}:
        raise ApiError(400, f"stream_options supports include_usage only, not {sorted(set(options) - {'include_usage'})}",
                       param="stream_options")
    try:
        params = SamplingParams(
            max_new_tokens=int(body.get("max_completion_tokens") or body.get("max_tokens") or 256),
            temperature=float(body.get("temperature") if body.get("temperature") is not None else 0.0),
            top_p=float(body.get("top_p") if body.get("top_p") is not None else 1.0),
            seed=int(body.get("seed") or 0))
    except (TypeError, ValueError) as err:
        raise ApiError(400, f"bad sampling parameter: {err}") from None
    request = ChatRequest.of([{"role": m["role"], "content": m["content"]} for m in messages], params)
    return ChatCall(request, n, stream, bool(options.get("include_usage")))


def text_pieces(text: str) -> list[str]:
    """``text`` in the pieces a stream sends: each word with the space after it."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


class ChatServer(LoopbackServer):
    def __init__(self, backend, served_name: str | tuple[str, ...], host: str = "127.0.0.1", port: int = 0,
                 reasoning_parser: bool = False):
        self.backend = backend
        self.served_names = (served_name,) if isinstance(served_name, str) else tuple(served_name)
        self.served_name = self.served_names[0]  # the name replies carry
        # As `vllm serve --reasoning-parser`: thinking goes to `message.reasoning`, and the content
        # is null when the thinking never ended.
        self.reasoning_parser = reasoning_parser
        self.requests_seen = 0
        self.completions_served = 0
        self._lock = threading.Lock()
        self._generate_lock = threading.Lock()
        super().__init__(self._handler(), host, port)

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": name, "object": "model"}
                                                                for name in server.served_names]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                with server._lock:
                    server.requests_seen += 1
                    number = server.requests_seen
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    call = parse_call(json.loads(raw), server.served_names)
                except ApiError as err:
                    self._send(err.status, err.body())
                    return
                except ValueError as err:  # not JSON
                    self._send(400, ApiError(400, f"the request body is not JSON: {err}").body())
                    return
                try:
                    with server._generate_lock:
                        completions = server.backend.generate(call.requests())
                except Exception as err:  # the client is told, rather than left with a closed connection
                    self._send(500, {"error": {"message": f"generation failed: {type(err).__name__}: {err}",
                                               "type": "server_error", "param": None, "code": None}})
                    return
                with server._lock:
                    server.completions_served += len(completions)
                identity = {"id": f"chatcmpl-{number}", "created": int(time.time()), "model": server.served_name}
                usage = {"prompt_tokens": completions[0].prompt_tokens,
                         "completion_tokens": sum(c.completion_tokens for c in completions)}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                if call.stream:
                    self._stream(identity, completions, usage if call.include_usage else None)
                    return
                self._send(200, {**identity, "object": "chat.completion", "usage": usage,
                                 "choices": [{"index": i, "finish_reason": c.finish_reason,
                                              "message": server.message(c.text)}
                                             for i, c in enumerate(completions)]})

            def _stream(self, identity: dict, completions, usage: dict | None) -> None:
                """The completions as server-sent events; the connection closes at the end (HTTP/1.0)."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()

                def event(choices: list, **extra) -> None:
                    chunk = {**identity, "object": "chat.completion.chunk", "choices": choices, **extra}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())

                for index, completion in enumerate(completions):
                    message = server.message(completion.text)
                    event([{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
                    for field_name in ("reasoning", "content"):
                        for piece in text_pieces(message.get(field_name) or ""):
                            event([{"index": index, "delta": {field_name: piece}, "finish_reason": None}])
                    event([{"index": index, "delta": {}, "finish_reason": completion.finish_reason}])
                if usage is not None:
                    event([], usage=usage)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        return Handler

    def message(self, text: str) -> dict:
        if not self.reasoning_parser:
            return {"role": "assistant", "content": text}
        thinking, sep, answer = text.rpartition("</think>")
        if not sep:  # no end of thinking: all of it is reasoning
            return {"role": "assistant", "content": None, "reasoning": text.replace("<think>", "").strip()}
        return {"role": "assistant", "content": answer.strip() or None,
                "reasoning": thinking.replace("<think>", "").strip()}

