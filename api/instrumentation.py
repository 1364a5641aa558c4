"""Request latency for Prometheus, labelled by route template (``/task/{task_id}``), never by the
raw path, so a client cannot grow the label set by inventing URLs. Requests refused before
routing (an unknown path, a body over the size limit) share the route ``<unmatched>``."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskbroker import metrics

UNMATCHED = "<unmatched>"


class RequestMetrics:
    """A pure ASGI middleware (no BaseHTTPMiddleware: it would buffer and cost a task per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception escaping the app becomes a 500 further out

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_and_record_status)
        finally:
            metrics.request_observed(
                scope["method"], _route_template(scope), status, time.perf_counter() - started
            )


def _route_template(scope: Scope) -> str:
    """The template of the route that served the request; ``<unmatched>`` for a request refused
    before routing (an unknown path, a body over the size limit). The template is written without
    path convertors (``/task/{task_id}``, as OpenAPI shows it)."""
    route = scope.get("route")
    return UNMATCHED if route is None else str(getattr(route, "path_format", UNMATCHED))
