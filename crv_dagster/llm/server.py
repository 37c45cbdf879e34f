"""A small OpenAI-compatible chat server over a local transformers model.

Useful on its own (point the ``openai`` backend at a model on another machine), and it is
what the tests talk to: a real HTTP server on loopback serving a real model. ``FaultPlan``
makes it fail chosen requests on purpose, to exercise client retries.

    python -m crv_dagster.llm.server --model PATH --port 8000
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from crv_dagster.llm.base import ChatRequest, SamplingParams


@dataclass
class FaultPlan:
    """Which request numbers (1-based, counted over all POSTs) fail, and how."""

    status_by_request: dict[int, int] = field(default_factory=dict)
    delay_by_request: dict[int, float] = field(default_factory=dict)
    malformed_requests: set[int] = field(default_factory=set)  # answered 200 with a body that is not JSON


class ChatServer:
    def __init__(self, backend, served_name: str, host: str = "127.0.0.1", port: int = 0, faults: FaultPlan | None = None,
                 reasoning_parser: bool = False):
        self.backend = backend
        self.served_name = served_name
        # As `vllm serve --reasoning-parser`: thinking goes to `message.reasoning`, and the content
        # is null when the thinking never ended.
        self.reasoning_parser = reasoning_parser
        self.faults = faults or FaultPlan()
        self.requests_seen = 0
        self.completions_served = 0
        self._lock = threading.Lock()
        self._generate_lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

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
                    self._send(200, {"object": "list", "data": [{"id": server.served_name, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                with server._lock:
                    server.requests_seen += 1
                    number = server.requests_seen
                if number in server.faults.delay_by_request:
                    time.sleep(server.faults.delay_by_request[number])
                if number in server.faults.status_by_request:
                    status = server.faults.status_by_request[number]
                    headers = {"Retry-After": "0"} if status == 429 else None
                    self._send(status, {"error": {"message": f"injected failure {status}"}}, headers)
                    return
                if number in server.faults.malformed_requests:
                    data = b'{"choices": [{"message": '  # cut off, as a broken proxy would
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    body = json.loads(raw)
                    request = ChatRequest.of(
                        body["messages"],
                        SamplingParams(
                            max_new_tokens=int(body.get("max_tokens") or 256),
                            temperature=float(body.get("temperature", 0.0) or 0.0),
                            top_p=float(body.get("top_p", 1.0) or 1.0),
                            seed=int(body.get("seed") or 0),
                        ),
                    )
                except (ValueError, KeyError, TypeError) as err:
                    self._send(400, {"error": {"message": f"bad request: {err}"}})
                    return
                with server._generate_lock:
                    completion = server.backend.generate([request])[0]
                with server._lock:
                    server.completions_served += 1
                self._send(200, {
                    "id": f"chatcmpl-{number}",
                    "object": "chat.completion",
                    "model": server.served_name,
                    "choices": [{"index": 0, "finish_reason": completion.finish_reason,
                                 "message": server.message(completion.text)}],
                    "usage": {"prompt_tokens": completion.prompt_tokens,
                              "completion_tokens": completion.completion_tokens,
                              "total_tokens": completion.prompt_tokens + completion.completion_tokens},
                })

        return Handler

    def message(self, text: str) -> dict:
        if not self.reasoning_parser:
            return {"role": "assistant", "content": text}
        thinking, sep, answer = text.rpartition("</think>")
        if not sep:  # no end of thinking: all of it is reasoning
            return {"role": "assistant", "content": None, "reasoning": text.replace("<think>", "").strip()}
        return {"role": "assistant", "content": answer.strip() or None,
                "reasoning": thinking.replace("<think>", "").strip()}

    def start(self) -> "ChatServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "ChatServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    from crv_dagster.llm.transformers_backend import TransformersBackend

    parser = argparse.ArgumentParser(description="Serve a local HF model over an OpenAI-compatible chat API")
    parser.add_argument("--model", required=True, help="HF folder or Hub id")
    parser.add_argument("--name", help="model name clients send (default: --model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    server = ChatServer(TransformersBackend(args.model, batch_size=args.batch_size), args.name or args.model,
                        args.host, args.port)
    print(f"serving {server.served_name} at {server.base_url}", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        server.httpd.server_close()


if __name__ == "__main__":
    main()
