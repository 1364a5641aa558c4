"""The common scheduling request, served without the app's middleware stack.

Scheduling one task per request is the API's hottest path. Around its endpoint, Starlette and
FastAPI run about a dozen layers: the error middleware, telemetry, our metrics and body limit,
the exception middleware, an exit stack, the routing through included routers, and the
request/response wrapper. Together they cost about 30% of the API's CPU for that request.

``LanedFastAPI`` hands a request that a DirectRoute would bind directly (a POST to its path, a
JSON body of a declared length within the limit, none of the endpoint's headers sent) straight
to the route's binding. It then does itself what those layers do for such a request: the app's
exception handlers answer errors, found the way Starlette finds them; the request metric is
recorded. Every other request goes through the whole app, as before. So do the requests of a
body that does not validate (the body is replayed, and FastAPI words the error) and every
request while OpenTelemetry is configured. Only a router included without a prefix or
dependencies can have lanes: ``include_laned_router`` includes it so, and checks.

The lane stands in for the app's middleware, so it knows them: the body size limit (of the same
bound) and the request metrics. An app given any other middleware (CORS, an allow-list, auth)
serves every request through the whole stack, lanes included: the middleware stack is built,
and the middleware checked, before the first request, and Starlette refuses a middleware added
after that. FastAPI's telemetry switch (``FastAPI._native_telemetry``, private) is checked when
the app is built: a FastAPI without it is refused (fastapi is bounded in pyproject.toml).
"""

from __future__ import annotations

import time
from typing import Any

import fastapi
import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskbroker import metrics
from taskbroker.api.direct_route import DirectBinding, DirectRoute
from taskbroker.api.instrumentation import RequestMetrics
from taskbroker.api.limits import BodySizeLimit
from taskbroker.errors import IncompatibleLibrary

log = structlog.get_logger("taskbroker.api")


class LanedFastAPI(FastAPI):
    """A FastAPI app whose DirectRoutes' common requests skip the middleware stack, as long as
    the app has no middleware but the ones the lane does itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        telemetry = getattr(self, "_native_telemetry", None)
        if not callable(getattr(telemetry, "enabled", None)):
            raise IncompatibleLibrary(
                "FastAPI",
                fastapi.__version__,
                "has no FastAPI._native_telemetry.enabled()",
                "send a request through its telemetry whenever telemetry is on",
            )
        self._lanes: dict[str, DirectBinding] = {}
        self._lanes_open = False
        """Set when the middleware stack is built: whether the app's middleware are all the lane's."""
        self._max_body_bytes = 0

    def include_laned_router(self, router: APIRouter, *, lanes: bool, max_body_bytes: int) -> None:
        """Include ``router``, and with ``lanes`` serve its DirectRoutes by lane. Inclusion and
        lanes go together, so a lane never skips a dependency or prefix added at inclusion: the
        router is included without either, and refused if it or the app has its own (its
        routes' own dependencies still run)."""
        if self.router.dependencies or router.dependencies or router.prefix:
            raise TypeError("a lane serves a route alone: no app or router dependencies, no prefix")
        self.include_router(router)
        if not lanes:
            return
        self._max_body_bytes = max_body_bytes
        for route in router.routes:
            if isinstance(route, DirectRoute) and route.methods == {"POST"}:
                self._lanes[route.path] = route.own_binding()

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        unknown = [entry for entry in self.user_middleware if not self._lane_does(entry.cls, entry.kwargs)]
        self._lanes_open = bool(self._lanes) and not unknown
        if self._lanes and unknown:
            log.info(
                "api.lanes_closed",
                reason="the app has middleware the scheduling lane does not do",
                middleware=[getattr(entry.cls, "__name__", repr(entry.cls)) for entry in unknown],
            )
        return stack

    def _lane_does(self, middleware: Any, options: dict[str, Any]) -> bool:
        """Whether the lane does, for the requests it takes, what this middleware would."""
        if middleware is RequestMetrics:
            return not options
        if middleware is BodySizeLimit:
            return options == {"max_bytes": self._max_body_bytes}
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.middleware_stack is None:
            # Built before the first request, lanes or not: so the middleware are checked once,
            # and Starlette refuses any added later.
            self.middleware_stack = self.build_middleware_stack()
        binding = self._lane_for(scope) if self._lanes_open else None
        if binding is None:
            await super().__call__(scope, receive, send)
        else:
            await self._serve(binding, scope, receive, send)

    def _lane_for(self, scope: Scope) -> DirectBinding | None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        binding = self._lanes.get(scope["path"])
        if binding is None:
            return None
        length = _content_length(scope)
        if length is None or length > self._max_body_bytes:
            return None  # the body limit's own answer (413), or a chunked body: the whole app
        if not binding.takes(scope["headers"], self):
            return None
        if self._native_telemetry.enabled():
            return None
        return binding

    async def _serve(self, binding: DirectBinding, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        scope["app"] = self
        request = Request(scope, receive)
        try:
            body = await request.body()
        except ClientDisconnect:  # gone before its body came: nobody to answer (the body limit's way)
            _observe(binding, 500, started)
            return
        try:
            response = await binding.respond(request, body)
        except Exception as exc:
            handler, unexpected = self._error_handler(exc)
            if handler is None:
                raise
            answer: Response = await handler(request, exc)
            await answer(scope, receive, send)
            _observe(binding, answer.status_code, started)
            if unexpected:
                raise  # as Starlette's error middleware does, after answering: the server logs it
            return
        if response is None:  # the body does not validate: the whole app answers
            await super().__call__(scope, _replay(body, receive), send)
            return
        await response(scope, receive, send)
        _observe(binding, response.status_code, started)

    def _error_handler(self, exc: Exception) -> tuple[Any, bool]:
        """The app's handler for ``exc``, found as Starlette finds it, and whether it is the
        error middleware's (unexpected: answered, then re-raised). The exception middleware
        looks up an HTTPException's status code, then the exception's classes in order; what it
        does not handle reaches the error middleware's handler for Exception (or 500)."""
        handlers = self.exception_handlers
        if isinstance(exc, HTTPException) and exc.status_code in handlers:
            return handlers[exc.status_code], False
        for cls in type(exc).__mro__:
            if cls is not Exception and cls in handlers:
                return handlers[cls], False
        return handlers.get(Exception) or handlers.get(500), True


def _observe(binding: DirectBinding, status: int, started: float) -> None:
    metrics.request_observed("POST", binding.path, status, time.perf_counter() - started)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands out the body already read, then the connection's own messages."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
