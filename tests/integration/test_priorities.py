"""Priorities: of a scheduler's waiting tasks the highest priority runs first (a consumer of
prefetch 1), republishing keeps a task's priority, and an old queue without priorities is a
clear error, not a broken scheduler."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pika
import pytest

from taskbroker.backends import Backends
from taskbroker.errors import QueueIncompatible
from taskbroker.models import utcnow
from taskbroker.names import queue_name
from taskbroker.settings import Settings
from taskbroker.store import NewTask
from taskbroker.timeout_daemon.daemon import TimeoutDaemon
from tests.conftest import AMQP_URL
from tests.support.inprocess import Api, running_consumer
from tests.support.recorder import Recording
from tests.support.waiting import eventually

SCHEDULER = "prio"


async def test_a_backlog_runs_in_priority_order_with_one_consumer_of_prefetch_one(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    priorities = [0, 3, 9, 1, 9, 5, 0, 7]
    for n, priority in enumerate(priorities):
        response = await api.http.post(
            "/task/schedule",
            json={
                "scheduler": SCHEDULER,
                "attributes": recording.call(f"{priority}-{n}"),
                "priority": priority,
            },
        )
        assert response.status_code == 201, response.text
        assert response.json()["priority"] == priority

    async with running_consumer(settings, backends, SCHEDULER, concurrency=1, prefetch=1):
        await eventually(
            lambda: _async(len(recording.events()) == 2 * len(priorities)), what="every task to run"
        )

    order = [e.tag for e in recording.events() if e.event == "start"]
    expected = [f"{p}-{n}" for n, p in sorted(enumerate(priorities), key=lambda t: (-t[1], t[0]))]
    assert order == expected


@pytest.mark.parametrize("priority", [-1, 10, "high"])
async def test_a_priority_outside_0_to_9_is_422(api: Api, priority: object) -> None:
    await api.register(SCHEDULER)

    response = await api.http.post(
        "/task/schedule",
        json={
            "scheduler": SCHEDULER,
            "attributes": {"function": "taskbroker.runtimes.builtin:noop"},
            "priority": priority,
        },
    )

    assert response.status_code == 422


async def test_a_republished_lapsed_task_keeps_its_priority(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    now = utcnow()
    urgent = uuid.uuid4()
    # A task some consumer claimed and then died with: stored, its message long acked.
    await backends.store.create(
        [NewTask(urgent, SCHEDULER, recording.call("urgent"), now + timedelta(hours=1), priority=8)], now=now
    )
    claim = await backends.store.claim(str(urgent), consumer="dead", lease=0.01, max_attempts=3)
    assert claim.task is not None
    for n in range(3):
        await api.http.post(
            "/task/schedule", json={"scheduler": SCHEDULER, "attributes": recording.call(f"low-{n}")}
        )
    daemon = TimeoutDaemon(
        settings=settings, store=backends.store, events=backends.events, broker=backends.broker
    )

    async def requeued() -> bool:
        return (await daemon.sweep()).requeued == 1 or (await backends.store.get(urgent)).state == "pending"

    await eventually(requeued, what="the lapsed lease to be republished")

    async with running_consumer(settings, backends, SCHEDULER, concurrency=1, prefetch=1):
        await eventually(lambda: _async(recording.ends("low-2") == 1), what="the backlog to run")

    assert next(e.tag for e in recording.events() if e.event == "start") == "urgent"


async def test_declaring_over_a_queue_made_without_priorities_is_queue_incompatible(
    settings: Settings, real: Backends
) -> None:
    name = queue_name(settings.key_prefix, "legacy")
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        connection.channel().queue_declare(name, durable=True)
        with pytest.raises(QueueIncompatible, match="rabbitmqctl delete_queue"):
            await real.broker.declare(name)
        await real.broker.publish(name, [b"still-works"], [5])
        assert (await real.broker.stats(name)).messages == 1
    finally:
        connection.channel().queue_delete(name)
        connection.close()


async def test_registering_a_scheduler_over_a_legacy_queue_is_409_saying_how_to_migrate(
    settings: Settings, real: Backends
) -> None:
    from tests.support.inprocess import api_client

    name = queue_name(settings.key_prefix, "legacy2")
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        connection.channel().queue_declare(name, durable=True)
        async with api_client(settings, real) as api:
            response = await api.http.post("/scheduler", json={"name": "legacy2"})
        assert response.status_code == 409
        assert "x-max-priority" in response.json()["detail"]
    finally:
        connection.channel().queue_delete(name)
        connection.close()


async def _async(value: bool) -> bool:
    return value
