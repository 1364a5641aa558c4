"""The asyncio client: ``AsyncClient(url, token)``, the same methods as Client, awaited."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import httpx

from taskbroker.client import calls
from taskbroker.client.calls import BulkChange, Call, EventStream, IssuedToken, TaskPage, TaskSpec
from taskbroker.client.errors import ApiUnreachable, Unavailable
from taskbroker.client.sse import SseDecoder
from taskbroker.event_models import TaskEvent
from taskbroker.models import ConsumerStatus, QueueType, SchedulerDefinition, SchedulerStatus, Task, TaskState
from taskbroker.retry_policy import RetryPolicy
from taskbroker.schedule_models import Schedule, ScheduleRun, ScheduleSpec
from taskbroker.token_models import Role, TokenRecord

T = TypeVar("T")

STREAM_READ_TIMEOUT = 60.0
"""Longest silence on an event stream before reconnecting (the server sends a heartbeat every 15 s)."""
MAX_STREAM_FAILURES = 10
"""Failed reconnects in a row before an event stream gives up with ApiUnreachable."""


class AsyncClient:
    """The taskbroker API over HTTP. Methods return the API's models and raise ``ApiError``
    subclasses (``NotFound``, ``Conflict``, ...) for error answers, ``ApiUnreachable`` when the API
    does not answer. Use as a context manager, or call ``close()``."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout
        self._http = httpx.AsyncClient(base_url=url, timeout=timeout, headers=headers)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(call.method, call.path, json=call.json, params=call.params)
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"no answer from {self._http.base_url}: {exc!r}") from exc
        return calls.read_answer(call, response)

    # Tasks

    async def schedule(
        self,
        scheduler: str,
        attributes: dict[str, Any],
        timeout: datetime | timedelta | str | None = None,  # noqa: ASYNC109 (the task's expiry)
        *,
        priority: int = 0,
        key: str | None = None,
        callback_url: str | None = None,
        delay: float | timedelta | None = None,
        not_before: datetime | str | None = None,
        retry: RetryPolicy | None = None,
        attempt_timeout: float | None = None,
    ) -> Task:
        """Schedule one task; ``timeout`` is when it expires (a datetime with a zone, or from now).
        With ``key``, a live task already holding it is answered instead of a new one. With
        ``delay`` or ``not_before`` it waits ``delayed`` until then; ``retry`` and
        ``attempt_timeout``: docs/retries.md."""
        spec = TaskSpec(
            scheduler,
            attributes,
            timeout,
            priority=priority,
            key=key,
            callback_url=callback_url,
            delay=delay,
            not_before=not_before,
            retry=retry,
            attempt_timeout=attempt_timeout,
        )
        return await self._send(calls.schedule(spec))

    async def schedule_many(
        self,
        tasks: Iterable[TaskSpec],
        *,
        batch_size: int = calls.MAX_BATCH,
        on_batch: Callable[[list[Task]], None] | None = None,
    ) -> list[Task]:
        """Schedule tasks in batches (each all or nothing); ``on_batch`` sees each batch stored."""
        scheduled: list[Task] = []
        for batch in calls.batches(tasks, batch_size):
            stored = await self._send(calls.schedule_batch(batch))
            scheduled += stored
            if on_batch is not None:
                on_batch(stored)
        return scheduled

    async def get(self, task_id: UUID | str) -> Task:
        return await self._send(calls.get_task(task_id))

    async def abort(self, task_id: UUID | str) -> Task:
        return await self._send(calls.abort(task_id))

    async def retry(
        self,
        task_id: UUID | str,
        *,
        delay: float | timedelta | None = None,
        not_before: datetime | str | None = None,
        timeout: datetime | timedelta | str | None = None,  # noqa: ASYNC109 (an expiry, not a wait)
    ) -> Task:
        """Re-run a failed, timed-out or aborted task still retained: pending again, or delayed
        by ``delay`` (seconds) or until ``not_before``; ``timeout`` is its new expiry (default:
        the server's default timeout from now). Conflict for a live or complete task."""
        return await self._send(calls.retry(task_id, delay, not_before, timeout))

    async def abort_many(
        self,
        scheduler: str | None = None,
        state: TaskState | str | None = None,
        *,
        older_than: float | timedelta | None = None,
        limit: int = 1000,
    ) -> BulkChange:
        """Abort up to ``limit`` (at most 10,000) live tasks: of ``scheduler`` (default: all the
        token may use), in ``state`` (pending, running, delayed), created at least
        ``older_than`` (seconds) ago. A client token aborts its own tasks only."""
        return await self._send(calls.abort_many(scheduler, state, older_than, limit))

    async def retry_many(
        self,
        scheduler: str | None = None,
        state: TaskState | str | None = None,
        *,
        older_than: float | timedelta | None = None,
        limit: int = 1000,
        delay: float | timedelta | None = None,
        not_before: datetime | str | None = None,
        timeout: datetime | timedelta | str | None = None,  # noqa: ASYNC109 (an expiry, not a wait)
    ) -> BulkChange:
        """Re-run up to ``limit`` (at most 10,000) retained tasks that ended ``state`` (failed,
        timeout, aborted; default: any of them), finished at least ``older_than`` (seconds) ago,
        newest first; the rest as for ``retry``. A client token re-runs its own tasks only."""
        return await self._send(
            calls.retry_many(scheduler, state, older_than, limit, (delay, not_before, timeout))
        )

    async def tasks(
        self,
        scheduler: str | None = None,
        state: TaskState | str | None = None,
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> TaskPage:
        return await self._send(calls.list_tasks(scheduler, state, limit, cursor))

    async def wait(self, task_id: UUID | str, *, timeout: float | None = None) -> Task:  # noqa: ASYNC109
        """The task once it is final, read from its event stream (no polling); TimeoutError
        after ``timeout`` seconds. Reconnects and resumes if the stream drops."""
        deadline = None if timeout is None else time.monotonic() + timeout
        after: str | None = None
        while True:
            final = None
            async with contextlib.aclosing(
                self._events(calls.task_events(task_id), after, deadline)
            ) as events:
                async for event in events:
                    if event.state.is_final:
                        final = event
                        break
            task = await self.get(task_id)
            if final is None or task.state.is_final:
                return task
            after = final.id  # that final state was re-run by hand since (retry): wait for the next

    def task_events(self, task_id: UUID | str, *, after: str | None = None) -> AsyncIterator[TaskEvent]:
        """The task's events so far, then live ones, ending with its final state."""
        return self._events(calls.task_events(task_id), after, None)

    def events(self, scheduler: str | None = None, *, after: str | None = None) -> AsyncIterator[TaskEvent]:
        """Live events of every task this token may see (of one scheduler), without end; with
        ``after`` (an event id) it first replays the retained events since then."""
        return self._events(calls.all_events(scheduler), after, None)

    async def _events(
        self, stream: EventStream, after: str | None, deadline: float | None
    ) -> AsyncGenerator[TaskEvent]:
        last_id, failures = after, 0
        while True:
            try:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("the task did not finish in time")
                read = STREAM_READ_TIMEOUT if remaining is None else min(remaining, STREAM_READ_TIMEOUT)
                async with self._http.stream(
                    "GET",
                    stream.path,
                    params=stream.params,
                    headers=calls.resume_headers(last_id),
                    timeout=httpx.Timeout(self._timeout, read=read),
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        calls.read_answer(Call("GET", stream.path, calls.event_of), response)
                    decoder = SseDecoder()
                    async for line in response.aiter_lines():
                        message = decoder.feed(line)
                        if message is None:
                            continue
                        event = calls.event_of(message.data)
                        last_id, failures = message.id or event.id, 0
                        yield event
                        if stream.ends_on_final and event.state.is_final:
                            return
            except (httpx.TransportError, Unavailable) as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError("the task did not finish in time") from exc
                failures += 1
                if failures > MAX_STREAM_FAILURES:
                    raise ApiUnreachable(f"event stream {stream.path} keeps failing: {exc!r}") from exc
            await asyncio.sleep(calls.reconnect_delay(failures))

    # Schedulers (admin)

    async def register_scheduler(
        self,
        name: str | SchedulerDefinition,
        runtime: str = "inline",
        description: str = "",
        *,
        queue_type: QueueType | None = None,
    ) -> SchedulerStatus:
        """``queue_type`` None leaves it to the server (TASKBROKER_QUEUE_TYPE)."""
        chosen = {"queue_type": queue_type} if queue_type is not None else {}
        definition = (
            name
            if isinstance(name, SchedulerDefinition)
            else SchedulerDefinition(name=name, runtime=runtime, description=description, **chosen)
        )
        return await self._send(calls.register_scheduler(definition))

    async def schedulers(self) -> list[SchedulerStatus]:
        return await self._send(calls.schedulers())

    async def scheduler(self, name: str) -> SchedulerStatus:
        return await self._send(calls.scheduler(name))

    async def pause_scheduler(self, name: str) -> SchedulerStatus:
        """Its consumers stop taking new tasks within one heartbeat (admin)."""
        return await self._send(calls.pause_scheduler(name))

    async def resume_scheduler(self, name: str) -> SchedulerStatus:
        return await self._send(calls.resume_scheduler(name))

    async def consumers(self, scheduler: str | None = None) -> list[ConsumerStatus]:
        """The live consumers (admin, or a worker token for its schedulers)."""
        return await self._send(calls.consumers(scheduler))

    async def delete_scheduler(self, name: str, *, force: bool = False) -> None:
        await self._send(calls.delete_scheduler(name, force))

    # Tokens (admin)

    async def create_token(
        self,
        role: Role | str,
        *,
        name: str = "",
        schedulers: list[str] | None = None,
        expires_at: datetime | None = None,
    ) -> IssuedToken:
        return await self._send(calls.create_token(role, name, schedulers, expires_at))

    async def tokens(self) -> list[TokenRecord]:
        return await self._send(calls.tokens())

    async def revoke_token(self, token_id: str) -> None:
        await self._send(calls.revoke_token(token_id))

    # Recurring schedules (admins)

    async def schedules_list(self) -> list[Schedule]:
        return await self._send(calls.schedules_list())

    async def schedule_create(self, spec: ScheduleSpec) -> Schedule:
        return await self._send(calls.schedule_create(spec))

    async def schedule_get(self, schedule_id: UUID | str) -> Schedule:
        return await self._send(calls.schedule_get(schedule_id))

    async def schedule_update(self, schedule_id: UUID | str, changes: dict[str, Any]) -> Schedule:
        """Change some fields (name, trigger, attributes, enabled: pause and resume)."""
        return await self._send(calls.schedule_update(schedule_id, changes))

    async def schedule_delete(self, schedule_id: UUID | str) -> None:
        await self._send(calls.schedule_delete(schedule_id))

    async def schedule_run(self, schedule_id: UUID | str) -> Task:
        """Force a run now: the task it created."""
        return await self._send(calls.schedule_run(schedule_id))

    async def schedule_runs(self, schedule_id: UUID | str, limit: int = 100) -> list[ScheduleRun]:
        return await self._send(calls.schedule_runs(schedule_id, limit))
