"""Releasing due delayed tasks: the timeout daemon's step, on the real servers. Several daemons
release each task once; a publish that fails leaves the task to reconciliation, never lost."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

from taskbroker.backends import Backends, real_backends
from taskbroker.models import SchedulerDefinition, TaskState
from taskbroker.names import queue_name
from taskbroker.settings import Settings
from taskbroker.store import NewTask
from taskbroker.timeout_daemon.daemon import TimeoutDaemon
from tests.support.waiting import eventually

SCHEDULER = "release"
NOOP = {"function": "taskbroker.runtimes.builtin:noop"}
MANY = 5000


def _daemon(settings: Settings, backends: Backends) -> TimeoutDaemon:
    return TimeoutDaemon(
        settings=settings, store=backends.store, events=backends.events, broker=backends.broker
    )


async def _register(settings: Settings, backends: Backends) -> str:
    queue = queue_name(settings.key_prefix, SCHEDULER)
    await backends.broker.declare(queue)
    await backends.store.register_scheduler(SchedulerDefinition(name=SCHEDULER))
    return queue


async def _create_delayed(backends: Backends, count: int, not_before: datetime) -> list[str]:
    now = datetime.now(UTC)
    ids = []
    for start in range(0, count, 1000):
        tasks = [
            NewTask(uuid.uuid4(), SCHEDULER, NOOP, now + timedelta(hours=1), not_before=not_before)
            for _ in range(min(1000, count - start))
        ]
        await backends.store.create(tasks, now=now)
        ids += [str(t.id) for t in tasks]
    return ids


async def test_two_daemons_release_each_due_task_once(settings: Settings, real: Backends) -> None:
    queue = await _register(settings, real)
    ids = await _create_delayed(real, MANY, datetime.now(UTC))
    other = real_backends(settings, connection_name="taskbroker-test-second-daemon")
    try:
        reports = await asyncio.gather(_daemon(settings, real).sweep(), _daemon(settings, other).sweep())
    finally:
        await other.close()

    assert sum(r.released for r in reports) == MANY
    assert await real.store.delayed_count() == 0

    async def all_published() -> bool:
        return (await real.broker.stats(queue)).messages == MANY

    # Exactly one message per task: no task was released (and published) by both daemons.
    await eventually(all_published, what=f"{MANY} messages in the queue")
    sample = [await real.store.get(uuid.UUID(i)) for i in ids[:: MANY // 50]]
    assert {t.state for t in sample} == {TaskState.PENDING}
    census = await real.store.live_census()
    assert census.delayed_per_scheduler == {SCHEDULER: 0}
    assert census.pending == MANY


async def test_delayed_tasks_not_yet_due_stay_delayed(settings: Settings, real: Backends) -> None:
    queue = await _register(settings, real)
    await _create_delayed(real, 3, datetime.now(UTC) + timedelta(minutes=10))

    report = await _daemon(settings, real).sweep()

    assert report.released == 0
    assert await real.store.delayed_count() == 3
    assert (await real.broker.stats(queue)).messages == 0


async def test_release_whose_publish_fails_is_published_by_reconciliation(
    settings: Settings, real: Backends
) -> None:
    queue = await _register(settings, real)
    (task_id,) = await _create_delayed(real, 1, datetime.now(UTC))
    await real.broker.delete(queue)  # the publish now fails: QueueMissing
    daemon = _daemon(settings, real)

    first = await daemon.sweep()

    assert first.released == 1
    assert (await real.store.get(uuid.UUID(task_id))).state is TaskState.PENDING
    unclaimed_at = await real.store.redis.zscore(f"{settings.key_prefix}:unclaimed", task_id)
    assert unclaimed_at is not None
    assert unclaimed_at <= time.time()  # due for reconciliation at once, not after republish_after

    await real.broker.declare(queue)
    second = await daemon.sweep()

    assert second.republished == 1
    assert (await real.broker.stats(queue)).messages == 1


async def test_a_backlog_over_two_schedulers_one_queue_missing_publishes_the_other_and_keeps_the_rest(
    settings: Settings, real: Backends
) -> None:
    """Several batches in flight at once (released in Redis while earlier ones publish): every
    task of the scheduler whose queue is gone is left due for reconciliation, none is lost, and
    the other scheduler's tasks are all published."""
    queue = await _register(settings, real)
    other_queue = queue_name(settings.key_prefix, "release-other")
    await real.broker.declare(other_queue)
    await real.store.register_scheduler(SchedulerDefinition(name="release-other"))
    now = datetime.now(UTC)
    per_scheduler = 2500
    tasks = [
        NewTask(uuid.uuid4(), name, NOOP, now + timedelta(hours=1), not_before=now)
        for _ in range(per_scheduler)
        for name in (SCHEDULER, "release-other")
    ]
    for start in range(0, len(tasks), 1000):
        await real.store.create(tasks[start : start + 1000], now=now)
    await real.broker.delete(other_queue)

    report = await _daemon(settings, real).sweep()

    assert report.released == 2 * per_scheduler
    assert (await real.broker.stats(queue)).messages == per_scheduler
    unclaimed = f"{settings.key_prefix}:unclaimed"
    left = [t for t in tasks if t.scheduler == "release-other"]
    scores = await real.store.redis.zmscore(unclaimed, [str(t.id) for t in left])
    assert all(score is not None and score <= time.time() for score in scores)
    census = await real.store.live_census()
    assert census.delayed_per_scheduler == {SCHEDULER: 0, "release-other": 0}
    assert census.pending == 2 * per_scheduler


async def test_a_stale_entry_of_the_delayed_index_leaves_it_without_a_release(
    settings: Settings, real: Backends
) -> None:
    queue = await _register(settings, real)
    stale, kept = await _create_delayed(real, 2, datetime.now(UTC))
    # What an interrupted transition could leave: the task moved on, its index entry did not.
    await real.store.redis.hset(f"{settings.key_prefix}:task:{stale}", "state", "pending")

    report = await _daemon(settings, real).sweep()

    assert report.released == 1
    assert await real.store.delayed_count() == 0
    assert (await real.store.get(uuid.UUID(kept))).state is TaskState.PENDING
    assert (await real.broker.stats(queue)).messages == 1
