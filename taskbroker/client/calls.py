"""What each API call sends and how its answer is read, shared by Client and AsyncClient.

A method of either client builds a ``Call`` here and hands it to its transport, so the two differ
only in how they wait. A new endpoint is one builder here and a one-line method on each client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar
from uuid import UUID

import httpx
from pydantic import BaseModel, Field, TypeAdapter

from taskbroker.client.errors import error_for
from taskbroker.event_models import TaskEvent
from taskbroker.models import ConsumerStatus, SchedulerDefinition, SchedulerStatus, Task, TaskState, utcnow
from taskbroker.retry_policy import RetryPolicy
from taskbroker.schedule_models import Schedule, ScheduleRun, ScheduleSpec
from taskbroker.token_models import Role, TokenRecord

T = TypeVar("T")

MAX_BATCH = 1000
"""The API's largest batch (TASKBROKER_MAX_BATCH's default)."""


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task to schedule with ``schedule_many``."""

    scheduler: str
    attributes: dict[str, Any]
    timeout: datetime | timedelta | str | None = None
    priority: int = 0
    """0 (lowest, the default) to 9 (highest)."""
    key: str | None = None
    """Idempotency key: while a live task holds it, scheduling answers with that task."""
    callback_url: str | None = None
    """POSTed the final task (its host and port must be on TASKBROKER_WEBHOOK_HOSTS)."""
    delay: float | timedelta | None = None
    """Run no earlier than this long from now (seconds or a timedelta); not with ``not_before``."""
    not_before: datetime | str | None = None
    """Run no earlier than this (a datetime with a zone, or ISO-8601 text)."""
    retry: RetryPolicy | None = None
    """How failed attempts are retried (default: the scheduler's policy, else none)."""
    attempt_timeout: float | None = None
    """Seconds one attempt may run before it is cancelled and counts as failed."""


class TaskPage(BaseModel):
    tasks: list[Task]
    next_cursor: str | None


class BulkChange(BaseModel):
    """What ``abort_many`` or ``retry_many`` did: how many tasks it changed, and which."""

    changed: int
    ids: list[UUID]
    published: bool = True
    """Of a retry: every re-run task's message was confirmed (if not, reconciliation publishes it)."""


class IssuedToken(TokenRecord):
    token: str = Field(description="The token itself: shown this once only.")


def read_answer(call: Call[T], response: httpx.Response) -> T:
    """The parsed body of a success; the matching ApiError for an error status."""
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        raise error_for(response.status_code, detail, response.headers.get("Retry-After"))
    return call.parse(response.json() if response.content else None)


def _timeout_text(timeout: datetime | timedelta | str | None) -> str | None:
    if timeout is None or isinstance(timeout, str):
        return timeout
    if isinstance(timeout, timedelta):
        timeout = utcnow() + timeout
    if timeout.tzinfo is None:
        raise ValueError("timeout must carry a timezone (e.g. datetime.now(UTC) + ...)")
    return timeout.isoformat()


def _task_body(spec: TaskSpec) -> dict[str, Any]:
    body: dict[str, Any] = {"scheduler": spec.scheduler, "attributes": spec.attributes}
    timeout = _timeout_text(spec.timeout)
    if timeout is not None:
        body["timeout"] = timeout
    if spec.priority:
        body["priority"] = spec.priority
    if spec.key is not None:
        body["key"] = spec.key
    if spec.callback_url is not None:
        body["callback_url"] = spec.callback_url
    if spec.delay is not None:
        body["delay"] = spec.delay.total_seconds() if isinstance(spec.delay, timedelta) else spec.delay
    if spec.not_before is not None:
        if isinstance(spec.not_before, datetime) and spec.not_before.tzinfo is None:
            raise ValueError("not_before must carry a timezone (e.g. datetime.now(UTC) + ...)")
        body["not_before"] = (
            spec.not_before.isoformat() if isinstance(spec.not_before, datetime) else spec.not_before
        )
    if spec.retry is not None:
        body["retry"] = spec.retry.model_dump()
    if spec.attempt_timeout is not None:
        body["attempt_timeout"] = spec.attempt_timeout
    return body


def _none(_body: Any) -> None:
    return None


_TASKS = TypeAdapter(list[Task])
_SCHEDULERS = TypeAdapter(list[SchedulerStatus])
_TOKENS = TypeAdapter(list[TokenRecord])


def schedule(spec: TaskSpec) -> Call[Task]:
    return Call("POST", "/task/schedule", Task.model_validate, json=_task_body(spec))


def schedule_batch(specs: list[TaskSpec]) -> Call[list[Task]]:
    return Call(
        "POST",
        "/task/schedule/batch",
        lambda body: _TASKS.validate_python(body["tasks"]),
        json={"tasks": [_task_body(s) for s in specs]},
    )


def batches(specs: Iterable[TaskSpec], size: int) -> Iterator[list[TaskSpec]]:
    if not 1 <= size <= MAX_BATCH:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}")
    batch: list[TaskSpec] = []
    for spec in specs:
        batch.append(spec)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def get_task(task_id: UUID | str) -> Call[Task]:
    return Call("GET", f"/task/{task_id}", Task.model_validate)


def abort(task_id: UUID | str) -> Call[Task]:
    return Call("POST", f"/task/{task_id}/abort", Task.model_validate)


When = datetime | timedelta | str | None
"""A time: aware, or a timedelta from now, or ISO-8601 text."""


def _retry_body(delay: float | timedelta | None, not_before: When, timeout: When) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if delay is not None:
        body["delay"] = delay.total_seconds() if isinstance(delay, timedelta) else delay
    for name, value in (("not_before", not_before), ("timeout", timeout)):
        text = _timeout_text(value)
        if text is not None:
            body[name] = text
    return body


def retry(
    task_id: UUID | str, delay: float | timedelta | None, not_before: When, timeout: When
) -> Call[Task]:
    return Call(
        "POST", f"/task/{task_id}/retry", Task.model_validate, json=_retry_body(delay, not_before, timeout)
    )


def _selection(
    scheduler: str | None, state: TaskState | str | None, older_than: float | timedelta | None, limit: int
) -> dict[str, Any]:
    body: dict[str, Any] = {"limit": limit}
    if scheduler is not None:
        body["scheduler"] = scheduler
    if state is not None:
        body["state"] = str(state)
    if older_than is not None:
        body["older_than"] = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
    return body


def abort_many(
    scheduler: str | None, state: TaskState | str | None, older_than: float | timedelta | None, limit: int
) -> Call[BulkChange]:
    return Call(
        "POST",
        "/tasks/abort",
        BulkChange.model_validate,
        json=_selection(scheduler, state, older_than, limit),
    )


def retry_many(
    scheduler: str | None,
    state: TaskState | str | None,
    older_than: float | timedelta | None,
    limit: int,
    retry: tuple[float | timedelta | None, When, When],
) -> Call[BulkChange]:
    body = {**_selection(scheduler, state, older_than, limit), **_retry_body(*retry)}
    return Call("POST", "/tasks/retry", BulkChange.model_validate, json=body)


def list_tasks(
    scheduler: str | None, state: TaskState | str | None, limit: int, cursor: str | None
) -> Call[TaskPage]:
    params: dict[str, Any] = {"limit": limit}
    if scheduler is not None:
        params["scheduler"] = scheduler
    if state is not None:
        params["state"] = str(state)
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", "/tasks", TaskPage.model_validate, params=params)


def register_scheduler(definition: SchedulerDefinition) -> Call[SchedulerStatus]:
    # Fields left unset or None stay out, so the server's defaults apply (queue_type:
    # TASKBROKER_QUEUE_TYPE; retry and attempt_timeout: none).
    body = definition.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    return Call("POST", "/scheduler", SchedulerStatus.model_validate, json=body)


def schedulers() -> Call[list[SchedulerStatus]]:
    return Call("GET", "/schedulers", _SCHEDULERS.validate_python)


def scheduler(name: str) -> Call[SchedulerStatus]:
    return Call("GET", f"/scheduler/{name}", SchedulerStatus.model_validate)


def pause_scheduler(name: str) -> Call[SchedulerStatus]:
    return Call("POST", f"/scheduler/{name}/pause", SchedulerStatus.model_validate)


def resume_scheduler(name: str) -> Call[SchedulerStatus]:
    return Call("POST", f"/scheduler/{name}/resume", SchedulerStatus.model_validate)


_CONSUMERS = TypeAdapter(list[ConsumerStatus])


def consumers(scheduler: str | None) -> Call[list[ConsumerStatus]]:
    return Call(
        "GET",
        "/consumers",
        lambda body: _CONSUMERS.validate_python(body["consumers"]),
        params={"scheduler": scheduler} if scheduler else None,
    )


def delete_scheduler(name: str, force: bool) -> Call[None]:
    return Call("DELETE", f"/scheduler/{name}", _none, params={"force": "true"} if force else None)


def create_token(
    role: Role | str, name: str, schedulers: list[str] | None, expires_at: datetime | None
) -> Call[IssuedToken]:
    body: dict[str, Any] = {"role": str(role), "name": name, "schedulers": schedulers}
    if expires_at is not None:
        body["expires_at"] = expires_at.isoformat()
    return Call("POST", "/token", IssuedToken.model_validate, json=body)


def tokens() -> Call[list[TokenRecord]]:
    return Call("GET", "/tokens", _TOKENS.validate_python)


def revoke_token(token_id: str) -> Call[None]:
    return Call("DELETE", f"/token/{token_id}", _none)


_SCHEDULES = TypeAdapter(list[Schedule])
_RUNS = TypeAdapter(list[ScheduleRun])


def schedules_list() -> Call[list[Schedule]]:
    return Call("GET", "/schedules", _SCHEDULES.validate_python)


def schedule_create(spec: ScheduleSpec) -> Call[Schedule]:
    body = spec.model_dump(mode="json", exclude_unset=True)
    return Call("POST", "/schedules", Schedule.model_validate, json=body)


def schedule_get(schedule_id: UUID | str) -> Call[Schedule]:
    return Call("GET", f"/schedules/{schedule_id}", Schedule.model_validate)


def schedule_update(schedule_id: UUID | str, changes: dict[str, Any]) -> Call[Schedule]:
    return Call("PATCH", f"/schedules/{schedule_id}", Schedule.model_validate, json=changes)


def schedule_delete(schedule_id: UUID | str) -> Call[None]:
    return Call("DELETE", f"/schedules/{schedule_id}", _none)


def schedule_run(schedule_id: UUID | str) -> Call[Task]:
    return Call("POST", f"/schedules/{schedule_id}/run", Task.model_validate)


def schedule_runs(schedule_id: UUID | str, limit: int) -> Call[list[ScheduleRun]]:
    return Call("GET", f"/schedules/{schedule_id}/runs", _RUNS.validate_python, params={"limit": limit})


@dataclass(frozen=True, slots=True)
class EventStream:
    """Where an event stream is read from; ``ends_on_final``: a task's stream ends with it."""

    path: str
    params: dict[str, str]
    ends_on_final: bool


def task_events(task_id: UUID | str) -> EventStream:
    return EventStream(f"/task/{task_id}/events", {}, ends_on_final=True)


def all_events(scheduler: str | None) -> EventStream:
    return EventStream("/events", {"scheduler": scheduler} if scheduler else {}, ends_on_final=False)


def resume_headers(last_id: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    return headers


def event_of(data: str) -> TaskEvent:
    return TaskEvent.model_validate_json(data)


RECONNECT_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
"""Seconds before each reconnect of a dropped event stream (the last one repeats)."""


def reconnect_delay(failures: int) -> float:
    return RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
