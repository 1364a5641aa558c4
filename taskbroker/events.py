"""Task events: every state change, read back from the Redis stream ``{prefix}:events``.

The transition scripts append the events (``emit`` in lua/_prelude.lua), atomically with the
change. The stream is bounded by length (``MAXLEN ~`` on every append) and by age (the timeout
daemon trims entries older than ``TASKBROKER_EVENTS_RETENTION``). Each task hash lists the ids of
its own events in its ``events`` field, so a task's history costs O(its events) to read and no
key per task. Unlike pub/sub, a listener that was away reads what it missed: entry ids are the
resume points (SSE ``Last-Event-ID``). The event's shape is taskbroker.event_models.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import redis.asyncio as aioredis

from taskbroker.event_models import LAST, START, EventKind, TaskEvent, parse_event_id
from taskbroker.models import TaskState
from taskbroker.store import redis_call


def event_from_entry(entry_id: str, fields: dict[str, str]) -> TaskEvent:
    not_before = fields.get("not_before")
    return TaskEvent(
        id=entry_id,
        task_id=UUID(fields["task"]),
        scheduler=fields["scheduler"],
        state=EventKind(fields["state"]),
        attempt=int(fields.get("attempt") or 0),
        at=datetime.fromtimestamp(float(fields["at"]), UTC),
        owner=fields.get("owner") or None,
        reason=fields.get("reason") or None,
        not_before=None if not_before is None else datetime.fromtimestamp(float(not_before), UTC),
    )


@dataclass(frozen=True, slots=True)
class TaskHistory:
    events: list[TaskEvent]
    exists: bool
    final: bool
    """The task is final: its last event is in ``events`` (or was before ``after``)."""


class EventLog:
    """Reads (and trims) the event stream. Methods raise StoreUnavailable when Redis is down."""

    def __init__(self, client: aioredis.Redis, key_prefix: str) -> None:
        self._redis = client
        self._prefix = key_prefix
        self.key = f"{key_prefix}:events"

    @redis_call
    async def last_id(self) -> str:
        """The newest entry's id (START when there is none): live reading starts after it."""
        newest = await self._redis.xrevrange(self.key, count=1)
        return str(newest[0][0]) if newest else START

    @redis_call
    async def read_after(self, after: str, *, count: int = 500) -> list[TaskEvent]:
        """Up to ``count`` retained events after ``after``, oldest first."""
        if parse_event_id(after) == LAST:
            return []  # Redis refuses an exclusive start at the highest id, after which nothing is
        entries: Any = await self._redis.xrange(self.key, min=f"({after}", max="+", count=count)
        return [event_from_entry(str(i), f) for i, f in entries]

    @redis_call
    async def wait_after(self, after: str, *, block_ms: int, count: int = 500) -> list[TaskEvent]:
        """Events after ``after``, waiting up to ``block_ms`` for the first one (XREAD BLOCK)."""
        reply: Any = await self._redis.xread({self.key: after}, block=block_ms, count=count)
        if not reply:
            return []
        _, entries = reply[0]
        return [event_from_entry(str(i), f) for i, f in entries]

    @redis_call
    async def task_history(self, task_id: UUID, *, after: str = START) -> TaskHistory:
        """The task's retained events after ``after``. A final event trimmed from the stream is
        rebuilt from the task record, so a listener always learns how a readable task ended."""
        key = f"{self._prefix}:task:{task_id}"
        fields: Any = await self._redis.hmget(
            key, ["state", "events", "scheduler", "attempts", "owner", "finished_at"]
        )
        state, ids_text, scheduler, attempts, owner, finished_at = fields
        if state is None:
            return TaskHistory(events=[], exists=False, final=False)
        final = TaskState(state).is_final
        floor = parse_event_id(after)
        ids = [i for i in str(ids_text or "").split() if parse_event_id(i) > floor]
        pipe = self._redis.pipeline(transaction=False)
        for event_id in ids:
            pipe.xrange(self.key, min=event_id, max=event_id)
        found = await pipe.execute() if ids else []
        events = [event_from_entry(str(e[0][0]), e[0][1]) for e in found if e]
        last_missing = bool(ids) and not found[-1]
        if final and last_missing:
            events.append(
                TaskEvent(
                    id=ids[-1],
                    task_id=task_id,
                    scheduler=str(scheduler),
                    state=EventKind(state),
                    attempt=int(attempts or 0),
                    at=datetime.fromtimestamp(float(finished_at or time.time()), UTC),
                    owner=owner or None,
                )
            )
        return TaskHistory(events=events, exists=True, final=final)

    @redis_call
    async def trim(self, *, retention: float, now: float | None = None) -> int:
        """Drop events older than ``retention`` seconds (approximately: whole stream nodes)."""
        oldest_ms = int(((time.time() if now is None else now) - retention) * 1000)
        return int(await self._redis.xtrim(self.key, minid=f"{max(oldest_ms, 0)}-0", approximate=True))
