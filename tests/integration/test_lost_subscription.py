"""A consumer whose subscription is lost, whatever the cause, logs why, reports itself not ready,
resubscribes with backoff until it consumes again, and leaves the task it is running alone.

One test per cause: the queue deleted under the consumer (RabbitMQ cancels the consumer; the
consumer must wait for the queue to be declared again, never declaring it itself), the consumer's
channel closed by the broker (a channel error), and the connection lost (a TCP proxy the test
cuts, or the server closing it as `rabbitmqctl close_connection` does). The consumer gets its own
RabbitMQ connection; the API and the assertions use another.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from structlog.testing import capture_logs

from taskbroker.backends import Backends
from taskbroker.errors import QueueMissing
from taskbroker.names import queue_name
from taskbroker.queue.amqp import AmqpBroker
from taskbroker.queue.base import Delivery, Subscription
from taskbroker.scheduler_worker.consumer import Consumer
from taskbroker.settings import Settings
from tests.conftest import AMQP_URL, proxied_url
from tests.support.inprocess import Api, running_consumer
from tests.support.rabbitmq_server import close_connection
from tests.support.recorder import Recording
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually

SCHEDULER = "resubscribing"
LogEntries = list[MutableMapping[str, Any]]


class _KeepingDeliveries(AmqpBroker):
    """The real broker, keeping the consumer's deliveries so the test can ack one a second time:
    RabbitMQ answers an unknown delivery tag by closing the channel (PRECONDITION_FAILED)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, connection_name="taskbroker-test-consumer")
        self.deliveries: list[Delivery] = []

    async def subscribe(
        self, queue: str, *, prefetch: int, on_delivery: Callable[[Delivery], None]
    ) -> Subscription:
        def keep(delivery: Delivery) -> None:
            self.deliveries.append(delivery)
            on_delivery(delivery)

        return await super().subscribe(queue, prefetch=prefetch, on_delivery=keep)


def _losses(logs: LogEntries) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "consumer.subscription_lost"]


def _subscribed(logs: LogEntries) -> int:
    return sum(e["event"] == "consumer.subscribed" for e in logs)


async def _true(value: bool) -> bool:
    return value


@asynccontextmanager
async def _consumer_with_a_running_task(
    settings: Settings, real: Backends, broker: AmqpBroker, api: Api, recording: Recording
) -> AsyncIterator[tuple[Consumer, dict[str, Any]]]:
    """A consumer on its own connection, running a held task the test releases at the end."""
    backends = dataclasses.replace(real, broker=broker)
    try:
        async with running_consumer(settings, backends, SCHEDULER) as consumer:
            running = await api.schedule(SCHEDULER, recording.call("running", asynchronous=True, held=True))
            await eventually(lambda: _true(recording.starts("running") == 1), what="the task to start")
            yield consumer, running
    finally:
        await broker.close()


async def _assert_recovered(
    api: Api, consumer: Consumer, recording: Recording, running: dict[str, Any], logs: LogEntries
) -> None:
    """Subscribed again, it runs a new task; the task it ran through the loss finishes once."""
    await eventually(lambda: _true(consumer.ready.is_set()), what="the consumer to be ready again")
    assert _subscribed(logs) == 2
    after = await api.schedule(SCHEDULER, recording.call("after"))
    assert (await api.wait_for_state(after["id"]))["state"] == "complete"

    recording.release("running")
    final = await api.wait_for_state(running["id"])
    assert final["state"] == "complete", final
    assert final["attempts"] == 1
    assert [e.event for e in recording.events("running")] == ["start", "end"]


async def test_a_consumer_whose_queue_is_deleted_waits_for_it_and_consumes_again(
    real_api: Api, real: Backends, settings: Settings, recording: Recording
) -> None:
    await real_api.register(SCHEDULER)
    queue = queue_name(settings.key_prefix, SCHEDULER)
    broker = AmqpBroker(AMQP_URL, connection_name="taskbroker-test-consumer")
    with capture_logs() as logs:
        async with _consumer_with_a_running_task(settings, real, broker, real_api, recording) as (
            consumer,
            running,
        ):
            await real.broker.delete(queue)

            await eventually(lambda: _true(bool(_losses(logs))), what="the consumer to log the loss")
            assert not consumer.ready.is_set()
            assert _losses(logs)[0]["reason"] == "cancelled_by_broker"
            await eventually(
                lambda: _true(any(e["event"] == "consumer.subscribe_failed" for e in logs)),
                what="a subscribe attempt to find the queue missing",
            )
            assert not consumer.ready.is_set()
            with pytest.raises(QueueMissing):
                await real.broker.stats(queue)  # the consumer did not declare it

            # The same definition again (200): registering declares the queue again.
            again = await real_api.http.post("/scheduler", json={"name": SCHEDULER, "runtime": "inline"})
            assert again.status_code == 200, again.text
            await _assert_recovered(real_api, consumer, recording, running, logs)


async def test_a_consumer_whose_channel_the_broker_closes_resubscribes(
    real_api: Api, real: Backends, settings: Settings, recording: Recording
) -> None:
    await real_api.register(SCHEDULER)
    broker = _KeepingDeliveries(AMQP_URL)
    with capture_logs() as logs:
        async with _consumer_with_a_running_task(settings, real, broker, real_api, recording) as (
            consumer,
            running,
        ):
            broker.deliveries[0].ack()  # acked already, after its claim: a channel error

            await eventually(lambda: _true(bool(_losses(logs))), what="the consumer to log the loss")
            loss = _losses(logs)[0]
            assert loss["reason"] == "channel_closed"
            assert "PRECONDITION_FAILED" in loss["detail"]
            await _assert_recovered(real_api, consumer, recording, running, logs)


async def test_a_consumer_that_loses_its_connection_to_the_network_reports_not_ready_and_resubscribes(
    real_api: Api, real: Backends, settings: Settings, recording: Recording, amqp_proxy: TcpProxy
) -> None:
    await real_api.register(SCHEDULER)
    broker = AmqpBroker(proxied_url(AMQP_URL, amqp_proxy), connection_name="taskbroker-test-consumer")
    with capture_logs() as logs:
        async with _consumer_with_a_running_task(settings, real, broker, real_api, recording) as (
            consumer,
            running,
        ):
            amqp_proxy.cut()

            await eventually(lambda: _true(bool(_losses(logs))), what="the consumer to log the loss")
            assert not consumer.ready.is_set()
            assert _losses(logs)[0]["reason"] == "connection_lost"
            await eventually(
                lambda: _true(any(e["event"] == "consumer.subscribe_failed" for e in logs)),
                what="a subscribe attempt to find RabbitMQ unreachable",
            )
            assert not consumer.ready.is_set()

            amqp_proxy.restore()
            await _assert_recovered(real_api, consumer, recording, running, logs)


async def test_a_consumer_whose_connection_the_server_closes_resubscribes(
    real_api: Api, real: Backends, settings: Settings, recording: Recording
) -> None:
    await real_api.register(SCHEDULER)
    name = f"taskbroker-test-consumer-{settings.key_prefix}"
    broker = AmqpBroker(AMQP_URL, connection_name=name)
    with capture_logs() as logs:
        async with _consumer_with_a_running_task(settings, real, broker, real_api, recording) as (
            consumer,
            running,
        ):
            await asyncio.to_thread(close_connection, name)  # as `rabbitmqctl close_connection`

            await eventually(lambda: _true(bool(_losses(logs))), what="the consumer to log the loss")
            loss = _losses(logs)[0]
            assert loss["reason"] == "connection_lost"
            assert "CONNECTION_FORCED" in loss["detail"]
            await _assert_recovered(real_api, consumer, recording, running, logs)
