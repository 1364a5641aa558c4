"""Map each TaskbrokerError to its status code with a JSON ``{"detail": ...}`` that says what to do."""

from __future__ import annotations

import json
from collections.abc import Sequence

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from taskbroker.errors import (
    BrokerUnavailable,
    IdempotencyKeyPending,
    NotReplicated,
    PriorityUnsupported,
    QueueIncompatible,
    QueueMissing,
    QueueUnavailable,
    ScheduleNameTaken,
    ScheduleNotFound,
    SchedulerBusy,
    SchedulerConflict,
    StoreUnavailable,
    TaskAlreadyFinished,
    TaskbrokerError,
    TaskExists,
    TaskNotFound,
    TaskNotRetryable,
    UnknownScheduler,
)
from taskbroker.logs import redact_text

log = structlog.get_logger("taskbroker.api")

STATUS_OF: dict[type[Exception], int] = {
    UnknownScheduler: 404,
    TaskNotFound: 404,
    SchedulerConflict: 409,
    SchedulerBusy: 409,
    TaskAlreadyFinished: 409,
    TaskNotRetryable: 409,
    ScheduleNotFound: 404,
    ScheduleNameTaken: 409,
    TaskExists: 409,
    StoreUnavailable: 503,
    NotReplicated: 503,
    BrokerUnavailable: 503,
    QueueMissing: 503,
    QueueUnavailable: 503,
    PriorityUnsupported: 422,
    QueueIncompatible: 409,
    IdempotencyKeyPending: 409,
}

RETRY_AFTER_SECONDS = "2"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def install_error_handlers(app: FastAPI) -> None:
    async def on_taskbroker_error(request: Request, exc: Exception) -> JSONResponse:
        status = STATUS_OF.get(type(exc), 500)
        retry = status == 503 or isinstance(exc, IdempotencyKeyPending)
        headers = {"Retry-After": RETRY_AFTER_SECONDS} if retry else None
        if status >= 500:
            log.warning("api.unavailable", path=request.url.path, error=str(exc))
        # Server errors can quote a library's message; never let a URL's password through.
        return JSONResponse({"detail": redact_text(str(exc))}, status_code=status, headers=headers)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("api.internal_error", path=request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error: the server logged it"}, status_code=500)

    async def on_invalid(request: Request, exc: Exception) -> Response:
        # FastAPI's own handler echoes the input as UTF-8 and crashes on a lone surrogate (a 500);
        # ASCII-escaped JSON carries any input safely.
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        body = json.dumps({"detail": jsonable_encoder(errors)}, ensure_ascii=True, default=str)
        return Response(body, status_code=422, media_type="application/json")

    async def on_method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's 405 lists the methods of the first route of the path only; a path is
        # often several routes (GET, PATCH and DELETE /schedules/{id}).
        allowed = ", ".join(allowed_methods(request.app.router.routes, request.scope))
        return JSONResponse(
            {"detail": f"{request.method} is not allowed on {request.url.path}: use {allowed}"},
            status_code=405,
            headers={"Allow": allowed},
        )

    app.add_exception_handler(405, on_method_not_allowed)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(TaskbrokerError, on_taskbroker_error)
    app.add_exception_handler(Exception, on_unexpected)


def allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> list[str]:
    """Every method some route serves at the request's path, asked of each route the way the
    router asks (``matches``), so routes nested in included routers answer too. OPTIONS is
    listed only where a route takes it: the API answers no preflight of its own."""
    return [
        method
        for method in METHODS
        if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)
    ]
