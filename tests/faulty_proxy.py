"""A proxy in front of an OpenAI-compatible server that fails chosen requests the ways a real
deployment does (a 5xx from an overloaded replica, a 429, a hung connection, a 200 whose body a
broken load balancer cut off), and forwards every other request unchanged. Being a proxy, it
works in front of any server, the tests' own (``tests/chat_server.py``) or a real one."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

import httpx
from loopback import LoopbackServer


@dataclass
class FaultPlan:
    """Which request numbers (1-based, counted over all POSTs) fail, and how."""

    status_by_request: dict[int, int] = field(default_factory=dict)
    delay_by_request: dict[int, float] = field(default_factory=dict)
    malformed_requests: set[int] = field(default_factory=set)  # answered 200 with a body that is not JSON


class FaultyProxy(LoopbackServer):
    def __init__(self, upstream_base_url: str, faults: FaultPlan):
        self.upstream = upstream_base_url.rstrip("/").removesuffix("/v1")
        self.faults = faults
        self.requests_seen = 0
        self._lock = threading.Lock()
        super().__init__(self._handler())

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _forward(self, body: bytes | None) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                answer = httpx.request(self.command, proxy.upstream + self.path, content=body, headers=headers,
                                       timeout=120)
                self._reply(answer.status_code, answer.content, {})

            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy._lock:
                    proxy.requests_seen += 1
                    number = proxy.requests_seen
                faults = proxy.faults
                time.sleep(faults.delay_by_request.get(number, 0))
                if number in faults.status_by_request:
                    status = faults.status_by_request[number]
                    self._reply(status, f'{{"error": {{"message": "injected failure {status}"}}}}'.encode(),
                                {"Retry-After": "0"} if status == 429 else {})
                elif number in faults.malformed_requests:
                    self._reply(200, b'{"choices": [{"message": ', {})  # cut off mid-body
                else:
                    self._forward(body)

        return Handler
