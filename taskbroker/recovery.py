"""Putting tasks back on their queues: the one path that hands an orphaned task to a new consumer.

Used by the timeout daemon for leases that lapsed (a consumer died) and by a consumer giving up
tasks at shutdown. The message is published and confirmed first; only then does the task go
from lapsed-running to pending. A crash in between leaves the lease lapsed, so the next sweep
publishes again: a duplicate message at worst, which claim() drops.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from taskbroker.names import queue_name
from taskbroker.queue.base import QueueBroker
from taskbroker.store import TaskRef, TaskStore


async def republish(store: TaskStore, broker: QueueBroker, refs: Sequence[TaskRef]) -> int:
    """Publish each task's message again, then mark the tasks pending. Returns how many moved.

    Raises BrokerUnavailable / QueueMissing / StoreUnavailable; the caller retries on its next
    sweep, and nothing is lost meanwhile because the leases stay lapsed.
    """
    by_scheduler: dict[str, list[str]] = defaultdict(list)
    for ref in refs:
        by_scheduler[ref.scheduler].append(ref.id)
    for scheduler, ids in by_scheduler.items():
        priorities = await store.priorities(ids)
        await broker.publish(queue_name(store.key_prefix, scheduler), [i.encode() for i in ids], priorities)
    return await store.requeue([ref.id for ref in refs])
