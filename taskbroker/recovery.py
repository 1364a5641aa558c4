"""Putting tasks back on their queues: the one path that publishes a stored task's message again.

Used by the timeout daemon for leases that lapsed (a consumer died), for pending tasks no
consumer claimed in time (reconciliation: a publish that was never confirmed, an API killed
mid-request, a message lost in RabbitMQ), and by a consumer giving up tasks at shutdown. The
message is published and confirmed first; only then is the task's record changed. A crash in
between leaves the record as it was, so the next sweep publishes again: a duplicate message at
worst, which claim() drops.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from taskbroker.names import queue_name
from taskbroker.queue.base import QueueBroker
from taskbroker.store import TaskRef, TaskStore


async def publish_again(store: TaskStore, broker: QueueBroker, refs: Sequence[TaskRef]) -> None:
    """Publish each task's message again, with its priority, and wait for the confirms.

    Raises BrokerUnavailable / QueueMissing / StoreUnavailable; nothing is lost meanwhile, because
    the caller changes the tasks' records only after this returns.
    """
    by_scheduler: dict[str, list[str]] = defaultdict(list)
    for ref in refs:
        by_scheduler[ref.scheduler].append(ref.id)
    for scheduler, ids in by_scheduler.items():
        priorities = await store.priorities(ids)
        await broker.publish(queue_name(store.key_prefix, scheduler), [i.encode() for i in ids], priorities)


async def republish(store: TaskStore, broker: QueueBroker, refs: Sequence[TaskRef]) -> int:
    """Publish lapsed running tasks' messages again, then mark them pending. Returns how many moved.

    Raises as ``publish_again``; the caller retries on its next sweep (the leases stay lapsed).
    """
    await publish_again(store, broker, refs)
    return await store.requeue([ref.id for ref in refs])


async def reconcile(store: TaskStore, broker: QueueBroker, refs: Sequence[TaskRef]) -> int:
    """Publish unclaimed pending tasks' messages again, then set their next republish time.
    Returns how many were still pending. Raises as ``publish_again``."""
    await publish_again(store, broker, refs)
    return await store.republished([ref.id for ref in refs])
