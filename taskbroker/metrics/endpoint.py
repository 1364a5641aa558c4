"""The port of a consumer, timeout daemon or schedule firer (``--metrics-port``): the process's
registry in the Prometheus text format on ``/metrics``, and its liveness and readiness on
``/healthz`` and ``/readyz`` (taskbroker.metrics.health).

The port is served by a daemon thread, so a slow scrape never touches the process's event loop;
/metrics reads only memory (no Redis, no RabbitMQ). The health paths ask the loop itself.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
import structlog
from prometheus_client import make_wsgi_app

from taskbroker.metrics import REGISTRY
from taskbroker.metrics.health import ProcessHealth

log = structlog.get_logger("taskbroker.metrics")

_StartResponse = Callable[..., Any]
_STATUS = {200: "200 OK", 404: "404 Not Found", 503: "503 Service Unavailable"}


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so a probe waiting on a stuck loop never holds up a scrape."""

    daemon_threads = True


class _IPv6Server(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """Probes and scrapes every few seconds: no access log line for each."""

    def log_message(self, format: str, *args: Any) -> None:
        return


def _application(health: ProcessHealth | None) -> Callable[[dict[str, Any], _StartResponse], Iterable[bytes]]:
    metrics = make_wsgi_app(REGISTRY)

    def application(environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/healthz", "/readyz"):
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if health is None:
            status, body = 404, {"detail": "this process serves no health checks"}
        elif path == "/healthz":
            status, body = health.liveness()
        else:
            status, body = health.readiness()
        payload = orjson.dumps(body)
        start_response(
            _STATUS[status], [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        )
        return [payload]

    return application


class MetricsEndpoint:
    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_port

    @classmethod
    def start(cls, host: str, port: int, health: ProcessHealth | None = None) -> MetricsEndpoint:
        """Serve until ``close``. Raises OSError when the address cannot be bound."""
        server_class = _IPv6Server if ":" in host else _ThreadingServer
        server = make_server(
            host, port, _application(health), server_class=server_class, handler_class=_QuietHandler
        )
        thread = threading.Thread(target=server.serve_forever, name="metrics-port", daemon=True)
        thread.start()
        endpoint = cls(server, thread)
        log.info("metrics.serving", host=host, port=endpoint.port, paths=["/metrics", "/healthz", "/readyz"])
        return endpoint

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
