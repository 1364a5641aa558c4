"""A repeated idempotency key whose holder's message is not confirmed yet.

A repeat is never told of a task that may yet be discarded (its publish failed), so the store
answers IdempotencyKeyPending until the holder is marked published. Usually the first request
settles within milliseconds: marked published (the repeat then gets that task), or discarded
with its key freed (the repeat then creates the task itself).

If the holder stays unconfirmed for ADOPT_AFTER seconds, the first request is taken to be lost
(its API process died, or Redis dropped the create script's reply and the client was answered
503): the repeat adopts the holder, publishing its message itself and marking it published, so a
retry gets its task within seconds instead of a 409 for the task's lifetime. Adopting a holder
whose first request is in fact still publishing costs a duplicate message, which claim() drops;
a discard after the mark leaves the task alone, and a discard before it makes the mark miss, so
the repeat then creates the task anew.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from taskbroker.errors import IdempotencyKeyPending
from taskbroker.models import Task
from taskbroker.store import AppliedDefaults, NewTask, TaskStore

ADOPT_AFTER = 2.0
"""Seconds a repeat waits for the holder's own request to confirm before adopting the holder."""
POLL_INTERVAL = 0.02
MAX_ADOPTIONS = 3
"""Adoptions one call makes before answering 409: each settles one holder, so more means new
holders keep appearing (concurrent first requests), which the client's retry resolves."""


async def create_or_find(
    store: TaskStore,
    tasks: Sequence[NewTask],
    *,
    now: datetime,
    adopt: Callable[[str], Awaitable[None]],
) -> list[Task | AppliedDefaults | None]:
    """``store.create``, retried while a key's holder is unconfirmed; after ADOPT_AFTER seconds,
    ``adopt(holder id)`` publishes the holder's message and marks it. IdempotencyKeyPending (a 409
    with Retry-After) only if holders stay unconfirmed through MAX_ADOPTIONS adoptions."""
    adoptions = 0
    adopt_at = time.monotonic() + ADOPT_AFTER
    while True:
        try:
            return await store.create(tasks, now=now)
        except IdempotencyKeyPending as pending:
            if time.monotonic() < adopt_at:
                await asyncio.sleep(POLL_INTERVAL)
                continue
            if adoptions == MAX_ADOPTIONS:
                raise
            adoptions += 1
            await adopt(pending.holder)
