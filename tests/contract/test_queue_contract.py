"""The QueueBroker contract (taskbroker/queue/base.py), run against RabbitMQ and the embedded
queue alike: the consumer's guarantees rest on exactly these behaviours."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from taskbroker.backends import Backends
from taskbroker.errors import QueueMissing
from taskbroker.names import queue_name
from taskbroker.queue.base import MAX_PRIORITY, Delivery, LossCause, QueueBroker
from taskbroker.settings import Settings
from tests.support.waiting import eventually


@pytest.fixture
async def broker(backends: Backends) -> QueueBroker:
    await backends.broker.connect()
    return backends.broker


@pytest.fixture
async def queue(broker: QueueBroker, settings: Settings) -> AsyncIterator[str]:
    name = queue_name(settings.key_prefix, f"contract-{uuid.uuid4().hex[:6]}")
    await broker.declare(name)
    yield name
    await broker.delete(name)


def _bodies(count: int) -> list[bytes]:
    return [f"m{n}".encode() for n in range(count)]


async def _ready(broker: QueueBroker, queue: str, messages: int) -> bool:
    return (await broker.stats(queue)).messages == messages


async def test_declare_is_idempotent_and_a_published_message_is_delivered(
    broker: QueueBroker, queue: str
) -> None:
    await broker.declare(queue)
    await broker.publish(queue, _bodies(3))
    received: list[Delivery] = []

    subscription = await broker.subscribe(queue, prefetch=10, on_delivery=received.append)
    await eventually(lambda: _async(len(received) == 3), what="three deliveries")
    for delivery in received:
        delivery.ack()
    await subscription.cancel()

    assert [d.body for d in received] == _bodies(3)
    assert not any(d.redelivered for d in received)
    await eventually(lambda: _ready(broker, queue, 0), what="an empty queue")


async def test_requeued_message_comes_back_marked_redelivered(broker: QueueBroker, queue: str) -> None:
    await broker.publish(queue, [b"again"])
    received: list[Delivery] = []
    subscription = await broker.subscribe(queue, prefetch=1, on_delivery=received.append)

    await eventually(lambda: _async(len(received) == 1), what="the first delivery")
    received[0].requeue()
    await eventually(lambda: _async(len(received) == 2), what="the redelivery")
    received[1].ack()
    await subscription.cancel()

    assert received[1].body == b"again"
    assert received[1].redelivered


async def test_unacked_deliveries_return_to_the_queue_when_the_subscription_ends(
    broker: QueueBroker, queue: str
) -> None:
    await broker.publish(queue, _bodies(4))
    received: list[Delivery] = []
    subscription = await broker.subscribe(queue, prefetch=2, on_delivery=received.append)
    await eventually(lambda: _async(len(received) == 2), what="two deliveries")

    await subscription.cancel()

    await eventually(lambda: _ready(broker, queue, 4), what="all four messages ready again")


async def test_prefetch_caps_the_unacked_deliveries(broker: QueueBroker, queue: str) -> None:
    await broker.publish(queue, _bodies(5))
    received: list[Delivery] = []
    subscription = await broker.subscribe(queue, prefetch=2, on_delivery=received.append)

    await eventually(lambda: _async(len(received) == 2), what="two deliveries")
    await eventually(lambda: _ready(broker, queue, 3), what="three messages still ready")
    received[0].ack()
    await eventually(lambda: _async(len(received) == 3), what="a third delivery after one ack")
    for delivery in received[1:]:
        delivery.ack()
    await subscription.cancel()

    assert len(received) == 3


async def test_each_message_goes_to_exactly_one_of_two_subscriptions(broker: QueueBroker, queue: str) -> None:
    first: list[Delivery] = []
    second: list[Delivery] = []

    def acking(into: list[Delivery]) -> Callable[[Delivery], None]:
        def on_delivery(delivery: Delivery) -> None:
            into.append(delivery)
            delivery.ack()

        return on_delivery

    subscriptions = [
        await broker.subscribe(queue, prefetch=3, on_delivery=acking(first)),
        await broker.subscribe(queue, prefetch=3, on_delivery=acking(second)),
    ]
    assert (await broker.stats(queue)).consumers == 2
    await broker.publish(queue, _bodies(40))

    await eventually(lambda: _async(len(first) + len(second) == 40), what="forty deliveries")
    for subscription in subscriptions:
        await subscription.cancel()

    bodies = [d.body for d in first + second]
    assert sorted(bodies) == sorted(_bodies(40))
    assert first
    assert second


async def test_a_missing_queue_is_queue_missing_for_publish_stats_and_subscribe(
    broker: QueueBroker, settings: Settings
) -> None:
    missing = queue_name(settings.key_prefix, "never-declared")

    with pytest.raises(QueueMissing):
        await broker.publish(missing, [b"x"])
    with pytest.raises(QueueMissing):
        await broker.stats(missing)
    with pytest.raises(QueueMissing):
        await broker.subscribe(missing, prefetch=1, on_delivery=lambda _d: None)


async def test_one_body_published_at_once_to_a_queue_and_a_missing_one_fails_only_there(
    broker: QueueBroker, queue: str, settings: Settings
) -> None:
    """A returned message is matched to its confirm by queue and body: the copy sent to the
    declared queue is confirmed (and there), the copy without a queue is QueueMissing."""
    missing = queue_name(settings.key_prefix, "never-declared-either")

    bodies = _bodies(50)
    # Alternating on one channel: RabbitMQ returns and acks an unroutable message at once, while
    # the declared queue's copy before it is confirmed only once stored, so returns overtake.
    outcomes = await asyncio.gather(
        *(broker.publish(name, [body]) for body in bodies for name in (queue, missing)),
        return_exceptions=True,
    )

    assert outcomes[0::2] == [None] * len(bodies)
    assert all(isinstance(outcome, QueueMissing) for outcome in outcomes[1::2])
    assert (await broker.stats(queue)).messages == len(bodies)


async def test_delete_removes_the_queue_and_its_messages(broker: QueueBroker, settings: Settings) -> None:
    name = queue_name(settings.key_prefix, "to-delete")
    await broker.declare(name)
    await broker.publish(name, [b"x"])

    await broker.delete(name)

    with pytest.raises(QueueMissing):
        await broker.stats(name)


async def test_a_backlog_is_delivered_highest_priority_first_in_order_within_a_priority(
    broker: QueueBroker, queue: str
) -> None:
    priorities = [0, 5, 9, 1, 9, 0, 5, MAX_PRIORITY, 3]
    bodies = [f"p{p}-{n}".encode() for n, p in enumerate(priorities)]
    await broker.publish(queue, bodies, priorities)
    await eventually(lambda: _ready(broker, queue, len(bodies)), what="the whole backlog ready")
    received: list[Delivery] = []

    def acking(delivery: Delivery) -> None:
        received.append(delivery)
        delivery.ack()

    subscription = await broker.subscribe(queue, prefetch=1, on_delivery=acking)
    await eventually(lambda: _async(len(received) == len(bodies)), what="every delivery")
    await subscription.cancel()

    # sorted() is stable: FIFO within one priority.
    expected = [b for _, b in sorted(zip(priorities, bodies, strict=True), key=lambda pair: -pair[0])]
    assert [d.body for d in received] == expected


async def _async(value: bool) -> bool:
    return value


async def test_acks_out_of_order_with_requeues_settle_exactly_the_acked_messages(
    broker: QueueBroker, queue: str
) -> None:
    # RabbitMQ's acks are coalesced (one multiple ack per loop turn): a multiple ack must never
    # cover a delivery still in flight, nor name a tag already settled (a channel error).
    await broker.publish(queue, _bodies(10))
    received: list[Delivery] = []
    subscription = await broker.subscribe(queue, prefetch=10, on_delivery=received.append)
    await eventually(lambda: _async(len(received) == 10), what="ten deliveries")
    by_body = {d.body: d for d in received}

    for body in (b"m9", b"m0", b"m2", b"m1", b"m5", b"m7", b"m8"):
        by_body[body].ack()
    by_body[b"m3"].requeue()
    await eventually(lambda: _async(len(received) == 11), what="the requeued message back")
    by_body[b"m4"].ack()
    received[10].ack()
    await eventually(lambda: _ready(broker, queue, 0), what="nothing ready")

    assert not subscription.lost.is_set()
    await subscription.cancel()
    await eventually(lambda: _ready(broker, queue, 1), what="only the never-acked m6 back in the queue")
    assert received[10].body == b"m3"


async def test_an_ack_made_just_before_cancel_is_not_handed_back(broker: QueueBroker, queue: str) -> None:
    await broker.publish(queue, _bodies(3))
    received: list[Delivery] = []
    subscription = await broker.subscribe(queue, prefetch=3, on_delivery=received.append)
    await eventually(lambda: _async(len(received) == 3), what="three deliveries")

    received[0].ack()
    received[2].ack()
    await subscription.cancel()

    await eventually(lambda: _ready(broker, queue, 1), what="only the unacked message back")


async def test_deleting_the_queue_loses_its_subscription_until_it_is_declared_again(
    broker: QueueBroker, queue: str
) -> None:
    # RabbitMQ cancels the consumers of a deleted queue (basic.cancel) and leaves their channel
    # open: the subscription must still end, and say why, so its consumer can subscribe again.
    await broker.publish(queue, [b"before"])
    received: list[Delivery] = []
    subscription = await broker.subscribe(queue, prefetch=2, on_delivery=received.append)
    await eventually(lambda: _async(len(received) == 1), what="the first delivery")

    await broker.delete(queue)

    await eventually(lambda: _async(subscription.lost.is_set()), what="the subscription to be lost")
    assert subscription.loss is not None
    assert subscription.loss.cause is LossCause.CANCELLED_BY_BROKER
    received[0].ack()  # a delivery of a lost subscription: a no-op, never an error
    with pytest.raises(QueueMissing):
        await broker.subscribe(queue, prefetch=2, on_delivery=received.append)

    await broker.declare(queue)
    again = await broker.subscribe(queue, prefetch=2, on_delivery=received.append)
    await broker.publish(queue, [b"after"])
    await eventually(lambda: _async(len(received) == 2), what="a delivery on the new subscription")
    received[1].ack()
    await again.cancel()

    assert received[1].body == b"after"
    assert not again.lost.is_set()
    assert again.loss is None
