"""A fault-injecting HTTP proxy on 127.0.0.1 in front of one real Directus instance.

Every ``every``-th request gets the next fault of the cycle: a 503, a 429 with ``Retry-After: 1``, a slow
answer, a connection dropped before forwarding, and one dropped after forwarding (the write happened,
the answer is lost). Everything else is forwarded as is. ``before_forward(method, path)``, when given, is
called first for every request (a test may hold one back there).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

FAULTS = ("503", "429", "slow", "drop_before", "drop_after")
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class FaultProxy:
    def __init__(self, target: str, every: int = 3, slow_seconds: float = 1.5,
                 before_forward: Callable[[str, str], None] | None = None) -> None:
        self.target = target.rstrip("/")
        self.before_forward = before_forward
        self.every = every
        self.slow_seconds = slow_seconds
        self.requests = 0
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def next_fault(self) -> str | None:
        with self._lock:
            self.requests += 1
            if self.requests % self.every:
                return None
            fault = FAULTS[(self.requests // self.every - 1) % len(FAULTS)]
            self.injected[fault] += 1
            return fault

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.before_forward:
                    proxy.before_forward(self.command, self.path)
                fault = proxy.next_fault()
                if fault in ("503", "429"):
                    payload = b'{"errors":[{"message":"injected fault"}]}'
                    self.send_response(int(fault))
                    if fault == "429":
                        self.send_header("Retry-After", "1")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fault == "drop_before":
                    self.close_connection = True
                    return
                if fault == "slow":
                    time.sleep(proxy.slow_seconds)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS | {"host"}}
                answer = requests.request(self.command, proxy.target + self.path, headers=headers, data=body,
                                          timeout=120)
                if fault == "drop_after":
                    self.close_connection = True
                    return
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in HOP_HEADERS:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PATCH = do_DELETE = do_SEARCH = _handle

        return Handler
