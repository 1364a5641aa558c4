"""Due webhook deliveries in Redis: the sorted set ``{prefix}:webhooks`` of task ids scored by
when each is next due. ``finalize`` (taskbroker/lua/_prelude.lua) adds a task there in the script
that makes it final; this module claims, reschedules and removes them."""

from __future__ import annotations

import time
from dataclasses import dataclass

from taskbroker.models import Task
from taskbroker.store import TaskStore, load_script, record_fields, redis_call, task_from_record


@dataclass(frozen=True, slots=True)
class DueWebhook:
    task: Task
    attempt: int
    """1 for the first POST; counted at claim, so a dispatcher that died mid-POST still counts."""


@dataclass(frozen=True, slots=True)
class ClaimedWebhooks:
    due: list[DueWebhook]
    expired: list[str]
    """Ids of tasks that outlived their retention before delivery (dropped, nothing to send)."""


class WebhookDeliveries:
    def __init__(self, store: TaskStore) -> None:
        self._store = store
        self._key = f"{store.key_prefix}:webhooks"
        self._claim = store.redis.register_script(load_script("webhook_claim"))

    @redis_call
    async def claim(self, *, lease: float, limit: int) -> ClaimedWebhooks:
        """Take up to ``limit`` due deliveries for ``lease`` seconds (atomic: no two dispatchers
        hold one at once)."""
        now = time.time()
        reply = await self._claim(keys=[], args=[self._store.key_prefix, repr(now), repr(now + lease), limit])
        due: list[DueWebhook] = []
        expired: list[str] = []
        for item in reply:
            if isinstance(item, str):
                expired.append(item)
            else:
                record = record_fields(item)
                due.append(DueWebhook(task_from_record(record), int(record["webhook_attempts"])))
        return ClaimedWebhooks(due, expired)

    @redis_call
    async def done(self, task_id: str) -> None:
        """Delivered, or given up: never due again."""
        await self._store.redis.zrem(self._key, task_id)

    @redis_call
    async def retry_at(self, task_id: str, due: float) -> None:
        """Due again at ``due`` (XX: a delivery another dispatcher finished meanwhile stays done)."""
        await self._store.redis.zadd(self._key, {task_id: due}, xx=True)

    @redis_call
    async def pending(self) -> int:
        return int(await self._store.redis.zcard(self._key))
