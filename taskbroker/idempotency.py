"""Waiting out a repeated idempotency key whose first request is still being confirmed.

A repeat must never be told of a task that may yet be discarded (its publish failed), so the
store answers IdempotencyKeyPending until the holder is marked published. The first request
settles within the broker's confirm timeout either way: marked published (the repeat then gets
that task), or discarded with its key freed (the repeat then creates the task itself).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime

from taskbroker.errors import IdempotencyKeyPending
from taskbroker.models import Task
from taskbroker.store import NewTask, TaskStore

HOLDER_WAIT = 20.0
"""Seconds a repeat waits for the first request: longer than a publish confirm may take (15 s)."""
POLL_INTERVAL = 0.02


async def create_or_find(store: TaskStore, tasks: Sequence[NewTask], *, now: datetime) -> list[Task | None]:
    """``store.create``, retried while a key's holder is unconfirmed; IdempotencyKeyPending
    (a 409 with Retry-After) only if it stays so for HOLDER_WAIT seconds (its creator crashed)."""
    give_up = time.monotonic() + HOLDER_WAIT
    while True:
        try:
            return await store.create(tasks, now=now)
        except IdempotencyKeyPending:
            if time.monotonic() > give_up:
                raise
        await asyncio.sleep(POLL_INTERVAL)
