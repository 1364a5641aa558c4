"""Creating tasks: store them, then publish them with confirms. Shared by the HTTP API and,
later, anything else that creates tasks (recurring schedules), so there is one way to do it.

The order is what makes "accepted" mean "will run": the task is stored before its message is
published, so a consumer always finds the task its message names; the caller is answered only
after every message is confirmed; if publishing fails, the stored tasks are discarded again and
the caller gets an error, so nothing half-written stays behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog

from taskbroker import metrics
from taskbroker.errors import BrokerUnavailable, QueueMissing, StoreUnavailable
from taskbroker.models import Task, TaskState, utcnow
from taskbroker.names import queue_name
from taskbroker.queue.base import QueueBroker
from taskbroker.settings import Settings
from taskbroker.store import NewTask, TaskStore

log = structlog.get_logger("taskbroker.scheduling")


class TaskRequest:
    """What a caller asks for; the timeout defaults to now + the default timeout. ``task_id`` is
    given by callers that chose it beforehand (a schedule's run); otherwise a new one is drawn."""

    __slots__ = ("attributes", "owner", "scheduler", "task_id", "timeout")

    def __init__(
        self,
        scheduler: str,
        attributes: dict[str, Any],
        timeout: datetime | None = None,
        owner: str = "",
        task_id: uuid.UUID | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.attributes = attributes
        self.timeout = timeout
        self.owner = owner
        self.task_id = task_id


async def schedule_tasks(
    requests: Sequence[TaskRequest], *, store: TaskStore, broker: QueueBroker, settings: Settings
) -> list[Task]:
    """Create and enqueue tasks, all or none. Raises UnknownScheduler, StoreUnavailable,
    BrokerUnavailable or QueueMissing; after any of them no task of the call remains stored."""
    now = utcnow()
    new = [
        NewTask(
            r.task_id or uuid.uuid4(),
            r.scheduler,
            r.attributes,
            r.timeout or now + settings.default_timeout,
            r.owner,
        )
        for r in requests
    ]
    await store.create(new, now=now)
    by_scheduler: dict[str, list[bytes]] = defaultdict(list)
    for task in new:
        by_scheduler[task.scheduler].append(str(task.id).encode())
    try:
        await asyncio.gather(
            *(
                broker.publish(queue_name(settings.key_prefix, s), bodies)
                for s, bodies in by_scheduler.items()
            )
        )
    except (BrokerUnavailable, QueueMissing):
        # If Redis is gone too, the tasks stay pending without a message until their timeout
        # ends them; the caller was refused either way and will retry.
        with contextlib.suppress(StoreUnavailable):
            await store.discard([t.id for t in new])
        raise
    for task in new:
        log.info("task.scheduled", task_id=str(task.id), scheduler=task.scheduler, attempt=0)
        metrics.task_scheduled(task.scheduler)
    return [
        Task(
            id=t.id,
            scheduler=t.scheduler,
            attributes=t.attributes,
            timeout=t.timeout,
            state=TaskState.PENDING,
            created_at=now,
            owner=t.owner or None,
        )
        for t in new
    ]
