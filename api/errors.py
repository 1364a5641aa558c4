"""Map each TaskbrokerError to its status code with a JSON ``{"detail": ...}`` that says what to do."""

from __future__ import annotations

import json

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from taskbroker.errors import (
    BrokerUnavailable,
    IdempotencyKeyPending,
    QueueIncompatible,
    QueueMissing,
    ScheduleNameTaken,
    ScheduleNotFound,
    SchedulerBusy,
    SchedulerConflict,
    StoreUnavailable,
    TaskAlreadyFinished,
    TaskbrokerError,
    TaskExists,
    TaskNotFound,
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
    ScheduleNotFound: 404,
    ScheduleNameTaken: 409,
    TaskExists: 409,
    StoreUnavailable: 503,
    BrokerUnavailable: 503,
    QueueMissing: 503,
    QueueIncompatible: 409,
    IdempotencyKeyPending: 409,
}

RETRY_AFTER_SECONDS = "2"


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

    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(TaskbrokerError, on_taskbroker_error)
    app.add_exception_handler(Exception, on_unexpected)
