"""Reconciliation: a pending task whose message never reached its queue (the publish was never
confirmed: an API killed mid-request, a create script whose reply a Redis cut lost) or whose
message was lost in RabbitMQ is published again by the timeout daemon once no consumer has
claimed it within TASKBROKER_REPUBLISH_AFTER, and then runs. Claimed tasks are left alone."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

from taskbroker import metrics
from taskbroker.backends import Backends
from taskbroker.models import TaskState, utcnow
from taskbroker.names import queue_name
from taskbroker.settings import Settings
from taskbroker.store import NewTask
from taskbroker.timeout_daemon.daemon import TimeoutDaemon
from tests.support.inprocess import Api, running_consumer

SCHEDULER = "reconcile"
ECHO = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"n": 1}}


async def _stored_without_a_message(
    backends: Backends, settings: Settings, count: int = 1, scheduler: str = SCHEDULER, age: float = 0.0
) -> list[uuid.UUID]:
    """Tasks as an API killed between storing them and publishing them leaves them, stored
    ``age`` seconds past their republish time."""
    now = utcnow() - timedelta(seconds=settings.republish_after + age)
    tasks = [NewTask(uuid.uuid4(), scheduler, ECHO, now + timedelta(hours=1)) for _ in range(count)]
    await backends.store.create(tasks, now=now)
    return [t.id for t in tasks]


async def _messages(backends: Backends, settings: Settings, scheduler: str = SCHEDULER) -> int:
    return (await backends.broker.stats(queue_name(settings.key_prefix, scheduler))).messages


def _daemon(settings: Settings, backends: Backends, batch: int = 1000) -> TimeoutDaemon:
    return TimeoutDaemon(
        settings=settings, store=backends.store, events=backends.events, broker=backends.broker, batch=batch
    )


async def test_a_stored_task_that_was_never_published_is_republished_and_runs(
    api: Api, settings: Settings, backends: Backends
) -> None:
    await api.register(SCHEDULER)
    (task_id,) = await _stored_without_a_message(backends, settings)
    assert await _messages(backends, settings) == 0

    report = await _daemon(settings, backends).sweep()

    assert report.republished == 1
    assert await _messages(backends, settings) == 1
    async with running_consumer(settings, backends, SCHEDULER):
        assert (await api.wait_for_state(str(task_id), "complete"))["result"] == {"n": 1}


async def test_a_task_is_not_republished_before_republish_after(
    api: Api, settings: Settings, backends: Backends
) -> None:
    await api.register(SCHEDULER)
    now = utcnow()
    await backends.store.create([NewTask(uuid.uuid4(), SCHEDULER, ECHO, now + timedelta(hours=1))], now=now)

    report = await _daemon(settings, backends).sweep()

    assert report.republished == 0
    assert await _messages(backends, settings) == 0


async def test_a_claimed_task_is_never_republished(api: Api, settings: Settings, backends: Backends) -> None:
    await api.register(SCHEDULER)
    (task_id,) = await _stored_without_a_message(backends, settings)
    claim = await backends.store.claim(str(task_id), consumer="c1", lease=60, max_attempts=3)
    assert claim.task is not None

    report = await _daemon(settings, backends).sweep()

    assert report.republished == 0
    assert await _messages(backends, settings) == 0


async def test_each_republish_of_one_task_waits_twice_as_long_as_the_last(
    api: Api, settings: Settings, backends: Backends
) -> None:
    """A task waiting out a long backlog costs a few duplicate messages, not one per interval."""
    await api.register(SCHEDULER)
    (task_id,) = await _stored_without_a_message(backends, settings)
    daemon = _daemon(settings, backends)
    unclaimed = f"{settings.key_prefix}:unclaimed"

    await daemon.sweep()
    first = await backends.store.redis.zscore(unclaimed, str(task_id))
    await backends.store.redis.zadd(unclaimed, {str(task_id): 0})
    await daemon.sweep()
    second = await backends.store.redis.zscore(unclaimed, str(task_id))

    assert first is not None
    assert second is not None
    now = utcnow().timestamp()
    assert 1.5 * settings.republish_after < first - now <= 2 * settings.republish_after
    assert 3.5 * settings.republish_after < second - now <= 4 * settings.republish_after


async def test_a_backlog_of_several_batches_is_republished_in_one_sweep_with_the_metric(
    api: Api, settings: Settings, backends: Backends
) -> None:
    await api.register(SCHEDULER)
    await _stored_without_a_message(backends, settings, count=7)
    before = _republished_metric()

    report = await _daemon(settings, backends, batch=3).sweep()

    assert report.republished == 7
    assert await _messages(backends, settings) == 7
    assert _republished_metric() - before == 7


async def test_a_scheduler_whose_queue_is_missing_does_not_hold_up_the_others(
    api: Api, settings: Settings, backends: Backends
) -> None:
    await api.register(SCHEDULER)
    await api.register("reconcile-gone")
    await _stored_without_a_message(backends, settings, count=2, scheduler="reconcile-gone")
    await _stored_without_a_message(backends, settings, count=2)
    await backends.broker.delete(queue_name(settings.key_prefix, "reconcile-gone"))

    report = await _daemon(settings, backends).sweep()

    assert report.republished == 2
    assert await _messages(backends, settings) == 2


async def test_a_task_republished_by_the_daemon_is_told_to_a_repeat_of_its_key(
    api: Api, settings: Settings, backends: Backends
) -> None:
    await api.register(SCHEDULER)
    now = utcnow() - timedelta(seconds=settings.republish_after + 1)
    task_id = uuid.uuid4()
    await backends.store.create(
        [NewTask(task_id, SCHEDULER, ECHO, now + timedelta(hours=1), owner="admin", key="lost")], now=now
    )
    await _daemon(settings, backends).sweep()

    response = await api.http.post(
        "/task/schedule",
        json={"scheduler": SCHEDULER, "attributes": ECHO},
        headers={"Idempotency-Key": "lost"},
    )

    assert response.status_code == 200
    assert response.json()["id"] == str(task_id)
    await backends.store.discard([task_id])  # a late discard of the lost request
    assert (await backends.store.get(task_id)).state is TaskState.PENDING


def _republished_metric(schedulers: Sequence[str] = (SCHEDULER,)) -> float:
    total = 0.0
    for scheduler in schedulers:
        value = metrics.REGISTRY.get_sample_value(
            "taskbroker_timeout_daemon_republished_total", {"scheduler": scheduler}
        )
        total += value or 0.0
    return total
