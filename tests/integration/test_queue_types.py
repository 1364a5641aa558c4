"""A scheduler's queue type: classic (priorities, one node) or quorum (replicated, no priorities
on RabbitMQ 3.x). The type is part of the definition; a quorum scheduler refuses a task with a
priority (422) rather than silently running it out of order."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from taskbroker.backends import Backends
from taskbroker.errors import QueueIncompatible
from taskbroker.models import QueueType
from taskbroker.names import queue_name
from taskbroker.queue.amqp import AmqpBroker
from taskbroker.queue.base import Delivery
from taskbroker.settings import Settings
from tests.conftest import AMQP_URL
from tests.support.inprocess import Api, api_client, running_consumer
from tests.support.recorder import Recording
from tests.support.waiting import eventually

SCHEDULER = "quorum-sched"


async def _register(api: Api, body: dict[str, object]) -> dict[str, object]:
    response = await api.http.post("/scheduler", json=body)
    assert response.status_code == 201, response.text
    registered: dict[str, object] = response.json()
    return registered


async def test_a_scheduler_registered_as_quorum_says_so(api: Api) -> None:
    registered = await _register(api, {"name": SCHEDULER, "queue_type": "quorum"})

    shown = (await api.http.get(f"/scheduler/{SCHEDULER}")).json()

    assert registered["queue_type"] == shown["queue_type"] == "quorum"
    again = await api.http.post("/scheduler", json={"name": SCHEDULER, "queue_type": "quorum"})
    assert again.status_code == 200, again.text


async def test_a_scheduler_without_a_queue_type_takes_the_setting(
    settings: Settings, backends: Backends
) -> None:
    quorum_by_default = settings.model_copy(update={"queue_type": QueueType.QUORUM})
    async with api_client(quorum_by_default, backends) as api:
        registered = await _register(api, {"name": SCHEDULER})
    async with api_client(settings, backends) as api:
        classic = await _register(api, {"name": "classic-sched"})

    assert registered["queue_type"] == "quorum"
    assert classic["queue_type"] == "classic"


async def test_an_unknown_queue_type_is_422(api: Api) -> None:
    response = await api.http.post("/scheduler", json={"name": SCHEDULER, "queue_type": "stream"})

    assert response.status_code == 422, response.text


async def test_a_prioritised_task_on_a_quorum_scheduler_is_422_and_not_stored(api: Api) -> None:
    await _register(api, {"name": SCHEDULER, "queue_type": "quorum"})
    await _register(api, {"name": "classic-sched", "queue_type": "classic"})

    refused = await api.http.post(
        "/task/schedule", json={"scheduler": SCHEDULER, "attributes": {}, "priority": 3}
    )
    batch = await api.http.post(
        "/task/schedule/batch",
        json={
            "tasks": [
                {"scheduler": "classic-sched", "attributes": {}, "priority": 5},
                {"scheduler": SCHEDULER, "attributes": {}, "priority": 1},
            ]
        },
    )
    accepted = await api.http.post("/task/schedule", json={"scheduler": SCHEDULER, "attributes": {}})

    assert refused.status_code == 422, refused.text
    assert "quorum" in refused.json()["detail"]
    assert "priority 0" in refused.json()["detail"]
    assert batch.status_code == 422, batch.text
    assert accepted.status_code == 201, accepted.text
    listed = (await api.http.get("/tasks")).json()
    assert [t["id"] for t in listed["tasks"]] == [accepted.json()["id"]]


async def test_a_definition_stored_before_queue_types_registers_again_as_the_same_classic(
    api: Api, backends: Backends, settings: Settings
) -> None:
    old = json.dumps({"description": "", "name": SCHEDULER, "runtime": "inline"}, separators=(",", ":"))
    await backends.store.redis.hset(f"{settings.key_prefix}:schedulers", SCHEDULER, old)
    await backends.broker.declare(queue_name(settings.key_prefix, SCHEDULER))

    again = await api.http.post("/scheduler", json={"name": SCHEDULER})
    quorum = await api.http.post("/scheduler", json={"name": SCHEDULER, "queue_type": "quorum"})

    assert again.status_code == 200, again.text
    assert again.json()["queue_type"] == "classic"
    assert quorum.status_code == 409, quorum.text


async def test_a_quorum_schedulers_tasks_run(
    real_api: Api, settings: Settings, real: Backends, recording: Recording
) -> None:
    await _register(real_api, {"name": SCHEDULER, "queue_type": "quorum"})
    response = await real_api.http.post(
        "/task/schedule", json={"scheduler": SCHEDULER, "attributes": recording.call("q")}
    )
    assert response.status_code == 201, response.text

    async with running_consumer(settings, real, SCHEDULER, concurrency=1):
        await eventually(lambda: _async(len(recording.events()) == 2), what="the task to run")


async def test_a_classic_queue_cannot_become_quorum_and_says_why(real: Backends, settings: Settings) -> None:
    classic = queue_name(settings.key_prefix, f"classic-{uuid.uuid4().hex[:6]}")
    quorum = queue_name(settings.key_prefix, f"quorum-{uuid.uuid4().hex[:6]}")
    broker = AmqpBroker(AMQP_URL, connection_name="taskbroker-test-typed", delivery_limit=20)
    other_limit = AmqpBroker(AMQP_URL, connection_name="taskbroker-test-typed", delivery_limit=5)
    try:
        await broker.declare(classic)
        await broker.declare(quorum, QueueType.QUORUM)
        with pytest.raises(QueueIncompatible, match="another queue type"):
            await broker.declare(classic, QueueType.QUORUM)
        with pytest.raises(QueueIncompatible, match="another queue type"):
            await broker.declare(quorum, QueueType.CLASSIC)
        with pytest.raises(QueueIncompatible, match="TASKBROKER_QUORUM_DELIVERY_LIMIT"):
            await other_limit.declare(quorum, QueueType.QUORUM)
    finally:
        for queue in (classic, quorum):
            await broker.delete(queue)
        await broker.close()
        await other_limit.close()


async def _async(value: bool) -> bool:
    return value


async def test_a_quorum_queue_drops_a_message_after_its_delivery_limit_and_reconciliation_has_the_task(
    settings: Settings,
) -> None:
    """The backstop: a message handed back on every delivery (a consumer dying before its claim)
    is delivered limit + 1 times, then dropped; the task it named stays pending in Redis, where
    the timeout daemon's reconciliation republishes it (tests/integration/test_reconciliation.py)."""
    queue = queue_name(settings.key_prefix, f"limited-{uuid.uuid4().hex[:6]}")
    broker = AmqpBroker(AMQP_URL, connection_name="taskbroker-test-limit", delivery_limit=2)
    poison: list[bool] = []
    marker = asyncio.Event()

    def on_delivery(delivery: Delivery) -> None:
        if delivery.body == b"marker":
            delivery.ack()
            marker.set()
            return
        poison.append(delivery.redelivered)
        delivery.requeue()

    try:
        await broker.declare(queue, QueueType.QUORUM)
        await broker.publish(queue, [b"poison"])
        subscription = await broker.subscribe(queue, prefetch=1, on_delivery=on_delivery)
        await eventually(lambda: _async(len(poison) >= 3), what="three deliveries of the poison")
        # Behind it in the queue: delivered only once the poison is gone (or being handed back).
        await broker.publish(queue, [b"marker"])
        await asyncio.wait_for(marker.wait(), timeout=30)
        await subscription.cancel()

        assert poison == [False, True, True]
        assert await _empty(broker, queue)
    finally:
        await broker.delete(queue)
        await broker.close()


async def _empty(broker: AmqpBroker, queue: str) -> bool:
    return (await broker.stats(queue)).messages == 0
