"""Errors the client raises: one type per answer a caller can act on, each naming the HTTP status
and the API's ``detail`` (which says what to do)."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base of everything taskbroker's client raises."""


class ApiUnreachable(ClientError):
    """No answer from the API (connection refused, reset, timed out): check the URL, retry later."""


class ApiError(ClientError):
    """The API answered with an error status; ``detail`` is its explanation."""

    def __init__(self, status_code: int, detail: Any, *, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
        self.retry_after = retry_after


class InvalidRequest(ApiError):
    """400 or 422: the request is malformed; ``detail`` lists what is wrong."""


class Unauthorized(ApiError):
    """401: the token is missing, unknown, revoked or expired."""


class Forbidden(ApiError):
    """403: the token's role or scheduler list does not allow this."""


class NotFound(ApiError):
    """404: no such task (or another client's), scheduler or token."""


class Conflict(ApiError):
    """409: the task is already final, or the scheduler exists differently or still has tasks."""


class PayloadTooLarge(ApiError):
    """413: the request body is over the API's size limit."""


class RateLimited(ApiError):
    """429: this token's scheduling rate is used up; retry after ``retry_after`` seconds."""


class Unavailable(ApiError):
    """503: Redis or RabbitMQ is unreachable and nothing was done; retry after ``retry_after``."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
}


def error_for(status_code: int, detail: Any, retry_after: str | None = None) -> ApiError:
    """The exception for an error answer (ApiError itself for statuses without their own type)."""
    seconds: float | None = None
    if retry_after is not None:
        try:
            seconds = float(retry_after)
        except ValueError:
            seconds = None
    return _BY_STATUS.get(status_code, ApiError)(status_code, detail, retry_after=seconds)
