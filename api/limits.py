"""Input limits and the optional scheduling rate limit: bad or oversized input gets a clear 4xx
before it costs Redis or RabbitMQ anything."""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

import orjson
from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskbroker.models import utcnow
from taskbroker.rate_windows import RateWindows
from taskbroker.settings import Settings


def _shape(value: Any) -> tuple[int, bool]:
    """Nesting depth of a decoded JSON value, and whether it holds a number JSON cannot carry:
    NaN, Infinity, or a literal too large for a double (1e400 decodes as infinity). Stored,
    those would come back as null. One iterative walk (a recursive one is what deep input
    attacks)."""
    deepest = 0
    non_finite = False
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
        elif isinstance(item, float) and not math.isfinite(item):
            non_finite = True
    return deepest, non_finite


def _invalid(field: str, message: str) -> RequestValidationError:
    """A 422 shaped like every other validation error of the API (the schema documents one)."""
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])


def check_start_time(not_before: datetime | None, timeout: datetime | None, settings: Settings) -> None:
    """422 for a delayed task that would only become due at or after its timeout (the default
    timeout, when it gives none)."""
    if not_before is None:
        return
    if not_before >= (timeout or utcnow() + settings.default_timeout):
        raise _invalid(
            "not_before",
            "the task would become due at or after its timeout: give a shorter delay or a later timeout",
        )


def check_task_input(attributes: dict[str, Any], timeout: datetime | None, settings: Settings) -> None:
    """422 for attributes too large or too deep, and for a timeout too far ahead."""
    try:
        size = len(orjson.dumps(attributes))
    except TypeError as exc:  # e.g. a lone surrogate escaped in the JSON text
        raise _invalid("attributes", f"attributes cannot be stored as JSON: {exc}") from exc
    if size > settings.max_attributes_bytes:
        raise _invalid(
            "attributes",
            f"attributes are {size} bytes of JSON; the limit is {settings.max_attributes_bytes}: "
            "pass large data by reference (a URL or object key) instead",
        )
    depth, non_finite = _shape(attributes)
    if non_finite:
        raise _invalid(
            "attributes",
            "attributes hold NaN, Infinity or a number beyond a double's range (such as 1e400), "
            "which JSON cannot carry: send such a value as a string",
        )
    if depth > settings.max_attributes_depth:
        raise _invalid(
            "attributes",
            f"attributes are nested {depth} levels deep; the limit is {settings.max_attributes_depth}",
        )
    if timeout is not None and timeout - utcnow() > settings.max_timeout:
        raise _invalid(
            "timeout",
            f"timeout is more than {settings.max_timeout} ahead: use a recurring schedule for later work",
        )


async def enforce_rate_limit(windows: RateWindows, settings: Settings, token_id: str, tasks: int) -> None:
    """429 with Retry-After once a token has scheduled more than its tasks per minute. A fixed
    one-minute window in Redis, so every API replica counts against the same budget."""
    limit = settings.schedule_rate_limit
    if limit == 0:
        return
    now = time.time()
    window = int(now // 60)
    count = await windows.add(token_id, window, tasks)
    if count > limit:
        retry_after = max(1, int((window + 1) * 60 - now) + 1)
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"this token may schedule {limit} tasks per minute: retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


class BodySizeLimit:
    """413 for a request body over the limit, whether it declares its length or streams. The body
    is read (at most the limit) before the app sees it, so the refusal always comes first."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self._max):
                await self._refuse(send)
                return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self._max:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self._app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps({"detail": f"request body over {self._max} bytes: send less per request"})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
