"""The Python client of the taskbroker API, on httpx: ``Client`` (blocking) and ``AsyncClient``.

    from taskbroker.client import Client

    with Client("http://127.0.0.1:8000", token) as client:
        task = client.schedule("default", {"function": "taskbroker.runtimes.builtin:echo"})
        done = client.wait(task.id, timeout=60)

Both return the API's own pydantic models and raise an ``ApiError`` subclass named after the
answer (``NotFound``, ``Conflict``, ``Unavailable``, ...) carrying ``status_code`` and ``detail``.
"""

from taskbroker.client.asynchronous import AsyncClient
from taskbroker.client.calls import BulkChange, IssuedToken, TaskPage, TaskSpec
from taskbroker.client.errors import (
    ApiError,
    ApiUnreachable,
    ClientError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from taskbroker.client.sync import Client
from taskbroker.event_models import EventKind, TaskEvent
from taskbroker.models import QueueType
from taskbroker.retry_policy import RetryPolicy

__all__ = [
    "ApiError",
    "ApiUnreachable",
    "AsyncClient",
    "BulkChange",
    "Client",
    "ClientError",
    "Conflict",
    "EventKind",
    "Forbidden",
    "InvalidRequest",
    "IssuedToken",
    "NotFound",
    "PayloadTooLarge",
    "QueueType",
    "RateLimited",
    "RetryPolicy",
    "TaskEvent",
    "TaskPage",
    "TaskSpec",
    "Unauthorized",
    "Unavailable",
]
