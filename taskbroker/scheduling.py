"""Creating tasks: store them, then publish them with confirms. Shared by the HTTP API and,
later, anything else that creates tasks (recurring schedules), so there is one way to do it.

The order is what makes "accepted" mean "will run": the task is stored before its message is
published, so a consumer always finds the task its message names; the caller is answered only
after every message is confirmed; if publishing fails, the stored tasks are discarded again and
the caller gets an error, so nothing half-written stays behind. A task with a ``not_before``
is stored ``delayed`` and not published now: the timeout daemon publishes it when it is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from taskbroker import metrics
from taskbroker.errors import BrokerUnavailable, QueueMissing, StoreUnavailable, TaskNotFound
from taskbroker.idempotency import create_or_find
from taskbroker.models import Task, TaskState, utcnow
from taskbroker.names import queue_name
from taskbroker.queue.base import QueueBroker
from taskbroker.retry_policy import RetryPolicy
from taskbroker.settings import Settings
from taskbroker.store import AppliedDefaults, NewTask, TaskStore

log = structlog.get_logger("taskbroker.scheduling")


class TaskRequest:
    """What a caller asks for; the timeout defaults to now + the default timeout. ``task_id`` is
    given by callers that chose it beforehand (a schedule's run); otherwise a new one is drawn."""

    __slots__ = (
        "attempt_timeout",
        "attributes",
        "callback_url",
        "key",
        "not_before",
        "owner",
        "priority",
        "retry",
        "scheduler",
        "task_id",
        "timeout",
    )

    def __init__(
        self,
        scheduler: str,
        attributes: dict[str, Any],
        timeout: datetime | None = None,
        owner: str = "",
        task_id: uuid.UUID | None = None,
        *,
        priority: int = 0,
        key: str = "",
        callback_url: str = "",
        not_before: datetime | None = None,
        retry: RetryPolicy | None = None,
        attempt_timeout: float | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.attributes = attributes
        self.timeout = timeout
        self.owner = owner
        self.task_id = task_id
        self.priority = priority
        self.key = key
        self.callback_url = callback_url
        self.not_before = not_before
        self.retry = retry
        self.attempt_timeout = attempt_timeout


@dataclass(frozen=True, slots=True)
class Scheduled:
    task: Task
    created: bool
    """False when an idempotency key named a live task, which ``task`` then is."""


async def schedule_tasks(
    requests: Sequence[TaskRequest], *, store: TaskStore, broker: QueueBroker, settings: Settings
) -> list[Task]:
    """Create and enqueue tasks, all or none. Raises UnknownScheduler, StoreUnavailable,
    BrokerUnavailable or QueueMissing; after any of them no task of the call remains stored."""
    return [s.task for s in await schedule(requests, store=store, broker=broker, settings=settings)]


async def schedule(
    requests: Sequence[TaskRequest], *, store: TaskStore, broker: QueueBroker, settings: Settings
) -> list[Scheduled]:
    """``schedule_tasks``, saying which tasks were created and which an idempotency key found
    (also IdempotencyKeyPending: taskbroker.idempotency)."""
    now = utcnow()
    new = [
        NewTask(
            r.task_id or uuid.uuid4(),
            r.scheduler,
            r.attributes,
            r.timeout or now + settings.default_timeout,
            r.owner,
            r.priority,
            r.key,
            r.callback_url,
            r.not_before,
            r.retry,
            r.attempt_timeout,
        )
        for r in requests
    ]

    async def adopt(holder: str) -> None:
        await _adopt(holder, store=store, broker=broker, settings=settings)

    found = await create_or_find(store, new, now=now, adopt=adopt)
    created = [t for t, existing in zip(new, found, strict=True) if not isinstance(existing, Task)]
    by_scheduler: dict[str, tuple[list[bytes], list[int]]] = defaultdict(lambda: ([], []))
    for task in created:
        if task.not_before is not None:
            continue  # stored delayed: published when due
        bodies, priorities = by_scheduler[task.scheduler]
        bodies.append(str(task.id).encode())
        priorities.append(task.priority)
    publishes = [
        broker.publish(queue_name(settings.key_prefix, s), bodies, priorities)
        for s, (bodies, priorities) in by_scheduler.items()
    ]
    try:
        # One scheduler (the usual request) is awaited as is: gather would wrap it in a task.
        if publishes:
            await (publishes[0] if len(publishes) == 1 else asyncio.gather(*publishes))
    except (BrokerUnavailable, QueueMissing):
        # If Redis is gone too, the tasks stay stored without a message: the timeout daemon's
        # reconciliation republishes them, and a retry with the same key adopts them.
        with contextlib.suppress(StoreUnavailable):
            await store.discard([t.id for t in created])
        raise
    # Delayed tasks too: published means "its request succeeded", so a late discard spares it.
    keyed = [t for t in created if t.key]
    if keyed:
        await _mark_keyed_published(store, keyed)
    for task in created:
        if task.not_before is None:
            log.info("task.scheduled", task_id=str(task.id), scheduler=task.scheduler, attempt=0)
        else:
            log.info(
                "task.scheduled",
                task_id=str(task.id),
                scheduler=task.scheduler,
                attempt=0,
                not_before=task.not_before.isoformat(),
            )
        metrics.task_scheduled(task.scheduler)
    return [
        Scheduled(existing, created=False) if isinstance(existing, Task) else _created(t, existing, now)
        for t, existing in zip(new, found, strict=True)
    ]


def _created(task: NewTask, defaults: AppliedDefaults | None, now: datetime) -> Scheduled:
    """The answer for a task just stored, built from values already validated (the request, the
    new id, now, its scheduler's defaults): not checked again."""
    fields: dict[str, Any] = {}
    if task.not_before is not None:
        fields["not_before"] = task.not_before
    retry = task.retry or (defaults.retry if defaults else None)
    if retry is not None:
        fields["retry"] = retry
    attempt_timeout = task.attempt_timeout or (defaults.attempt_timeout if defaults else None)
    if attempt_timeout is not None:
        fields["attempt_timeout"] = attempt_timeout
    return Scheduled(
        Task.model_construct(
            id=task.id,
            scheduler=task.scheduler,
            attributes=task.attributes,
            timeout=task.timeout,
            state=TaskState.PENDING if task.not_before is None else TaskState.DELAYED,
            created_at=now,
            owner=task.owner or None,
            priority=task.priority,
            key=task.key or None,
            callback_url=task.callback_url or None,
            # Given, not defaulted: model_construct inspects a default_factory's signature on
            # every call (pydantic 2.x), which cost a sixth of a one-task request's API time.
            errors=[],
            **fields,
        ),
        created=True,
    )


async def _adopt(holder: str, *, store: TaskStore, broker: QueueBroker, settings: Settings) -> None:
    """Publish the message of a keyed task whose own request never confirmed it (taskbroker.
    idempotency), then mark it published. A holder gone meanwhile (discarded) needs nothing."""
    try:
        task = await store.get(uuid.UUID(holder))
    except TaskNotFound:
        return
    await broker.publish(queue_name(settings.key_prefix, task.scheduler), [holder.encode()], [task.priority])
    if await store.mark_published([task.id]):
        log.info("task.adopted", task_id=holder, scheduler=task.scheduler)


async def _mark_keyed_published(store: TaskStore, keyed: Sequence[NewTask]) -> None:
    """Confirmed: repeats of these keys may now be told of them. If Redis fails here the tasks
    still run; repeats get 409 naming the task until it is final."""
    try:
        await store.mark_published([t.id for t in keyed])
    except StoreUnavailable as exc:
        log.warning("task.publish_mark_failed", task_ids=[str(t.id) for t in keyed], error=str(exc))
