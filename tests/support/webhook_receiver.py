"""A real HTTP server on 127.0.0.1 that records webhook deliveries, for tests.

It answers each POST with the next status of a script (``answer``; then 200 for ever),
optionally after a pause and with extra headers, and keeps every request it received, so a test
can count deliveries and check headers. Its port is known from construction, so a test can put
``host_port`` on the webhook allow-list before it decides what the receiver answers.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


class WebhookReceiver:
    def __init__(self) -> None:
        self._statuses: list[int] = []
        self._pause = 0.0
        self._headers: dict[str, str] = {}
        self._lock = threading.Lock()
        self.received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                time.sleep(receiver._pause)
                status = receiver._next_status()
                with receiver._lock:
                    receiver.received.append(Received(self.path, dict(self.headers.items()), body, status))
                self.send_response(status)
                for name, value in receiver._headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def answer(
        self, *statuses: int, pause: float = 0.0, headers: dict[str, str] | None = None
    ) -> WebhookReceiver:
        """Answer the next POSTs with ``statuses`` in turn (then 200), each after ``pause``
        seconds, every one with ``headers``."""
        with self._lock:
            self._statuses = list(statuses)
            self._pause = pause
            self._headers = dict(headers or {})
        return self

    def _next_status(self) -> int:
        with self._lock:
            return self._statuses.pop(0) if self._statuses else 200

    @property
    def host_port(self) -> str:
        """The ``TASKBROKER_WEBHOOK_HOSTS`` entry that admits this receiver."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host_port}/hook"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def deliveries(self, status: int | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if status is None or r.status == status]
