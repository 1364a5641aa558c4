"""The metrics port of a consumer or timeout daemon (``--metrics-port``): the process's registry in
the Prometheus text format on ``http://HOST:PORT/metrics``.

prometheus_client's own server runs in a daemon thread, so a slow scrape never touches the
process's event loop; everything it reads is in memory (no Redis, no RabbitMQ).
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import start_http_server

from taskbroker.metrics import REGISTRY

log = structlog.get_logger("taskbroker.metrics")


class MetricsEndpoint:
    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_port

    @classmethod
    def start(cls, host: str, port: int) -> MetricsEndpoint:
        """Serve until ``close``. Raises OSError when the address cannot be bound."""
        endpoint = cls(*start_http_server(port, addr=host, registry=REGISTRY))
        log.info("metrics.serving", host=host, port=endpoint.port, path="/metrics")
        return endpoint

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
