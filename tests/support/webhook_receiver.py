"""A real HTTP server on 127.0.0.1 that records webhook deliveries, for tests.

It answers each POST with the next status of a script (then 200 for ever), optionally after a
pause, and keeps every request it received, so a test can count deliveries and check headers.
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
    def __init__(self, statuses: tuple[int, ...] = (), pause: float = 0.0) -> None:
        self._statuses = list(statuses)
        self._pause = pause
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
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _next_status(self) -> int:
        with self._lock:
            return self._statuses.pop(0) if self._statuses else 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def deliveries(self, status: int | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if status is None or r.status == status]
