"""Publisher confirms as AmqpBroker.publish sees them: every message settles exactly once, by its
confirm, its nack, the channel closing, or the confirm timeout (one timer for all of them)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pika
import pytest

from taskbroker.errors import BrokerUnavailable, QueueMissing
from taskbroker.queue import amqp
from tests.support.waiting import eventually


class FakeChannel:
    """Just enough of a pika channel for the confirm tracker; ``publish`` records the messages."""

    def __init__(self) -> None:
        self.is_open = True
        self.published: list[bytes] = []
        self.on_close: list[Any] = []
        self.on_return: list[Any] = []

    def add_on_return_callback(self, callback: Any) -> None:
        self.on_return.append(callback)

    def give_back(self, queue: str, body: bytes) -> None:
        """What RabbitMQ does with a mandatory message no queue takes: a basic.return first."""
        for callback in self.on_return:
            callback(self, SimpleNamespace(routing_key=queue), None, body)

    def add_on_close_callback(self, callback: Any) -> None:
        self.on_close.append(callback)

    def basic_publish(self, *, body: bytes, **_kwargs: Any) -> None:
        self.published.append(body)

    def confirm_delivery(self, _on_confirm: Any, callback: Any) -> None:
        callback(None)

    def close(self) -> None:
        self.is_open = False


def _new_channels(broker: amqp.AmqpBroker) -> list[FakeChannel]:
    """The channels the broker opens from now on (fakes, as the first one)."""
    opened: list[FakeChannel] = []

    async def open_channel() -> FakeChannel:
        opened.append(FakeChannel())
        return opened[-1]

    broker._open_channel = open_channel  # type: ignore[method-assign]
    return opened


def _ack(tag: int, *, multiple: bool = False) -> SimpleNamespace:
    return SimpleNamespace(method=pika.spec.Basic.Ack(delivery_tag=tag, multiple=multiple))


def _nack(tag: int) -> SimpleNamespace:
    return SimpleNamespace(method=pika.spec.Basic.Nack(delivery_tag=tag))


def _broker_over(channel: FakeChannel, confirm_timeout: float) -> amqp.AmqpBroker:
    broker = amqp.AmqpBroker("amqp://guest:guest@127.0.0.1:5672/", confirm_timeout=confirm_timeout)
    broker._publisher = amqp._ConfirmTracker(channel, confirm_timeout)
    return broker


async def test_a_multiple_ack_confirms_every_message_up_to_its_tag() -> None:
    channel = FakeChannel()
    broker = _broker_over(channel, confirm_timeout=30)
    publishing = asyncio.ensure_future(broker.publish("q", [b"1", b"2", b"3"]))
    await asyncio.sleep(0)

    assert broker._publisher is not None
    broker._publisher.on_confirm(_ack(3, multiple=True))

    await publishing
    assert channel.published == [b"1", b"2", b"3"]


async def _published(channels: list[FakeChannel], count: int) -> None:
    async def enough() -> bool:
        return bool(channels) and len(channels[-1].published) >= count

    await eventually(enough, what=f"{count} messages on a new channel", deadline=10)


async def test_a_nacked_message_is_published_again_on_a_new_channel_and_its_confirm_ends_the_publish() -> (
    None
):
    channel = FakeChannel()
    broker = _broker_over(channel, confirm_timeout=30)
    opened = _new_channels(broker)
    publishing = asyncio.ensure_future(broker.publish("q", [b"1", b"2"]))
    await asyncio.sleep(0)

    first = broker._publisher
    assert first is not None
    first.on_confirm(_ack(1))
    first.on_confirm(_nack(2))
    await _published(opened, 1)
    assert broker._publisher is not None
    broker._publisher.on_confirm(_ack(1))

    await publishing
    assert channel.published == [b"1", b"2"]
    assert opened[0].published == [b"2"]  # only the nacked one again, on a channel of its own


async def test_a_message_nacked_until_the_deadline_fails_its_publish_as_broker_unavailable() -> None:
    broker = _broker_over(FakeChannel(), confirm_timeout=0.5)
    opened = _new_channels(broker)
    assert broker._publisher is not None
    first = broker._publisher
    publishing = asyncio.ensure_future(broker.publish("q", [b"1"]))
    await asyncio.sleep(0)
    first.on_confirm(_nack(1))
    nacked = 0
    while not publishing.done():
        if len(opened) > nacked and opened[nacked].published and broker._publisher is not None:
            nacked += 1
            broker._publisher.on_confirm(_nack(1))
        await asyncio.sleep(0.01)

    with pytest.raises(BrokerUnavailable, match="nack"):
        await publishing
    assert nacked >= 1


@pytest.mark.parametrize("messages", [1, 3])
async def test_messages_not_confirmed_in_time_fail_their_publish_as_broker_unavailable(
    messages: int,
) -> None:
    broker = _broker_over(FakeChannel(), confirm_timeout=0.05)

    with pytest.raises(BrokerUnavailable, match=f"did not confirm {messages} messages in time") as raised:
        await broker.publish("q", [b"x"] * messages)

    assert type(raised.value) is BrokerUnavailable  # the API maps the exact type to 503


async def test_the_confirm_timer_covers_messages_published_after_the_first() -> None:
    broker = _broker_over(FakeChannel(), confirm_timeout=0.05)
    first = asyncio.ensure_future(broker.publish("q", [b"1"]))
    await asyncio.sleep(0.03)
    second = asyncio.ensure_future(broker.publish("q", [b"2"]))
    await asyncio.sleep(0)
    assert broker._publisher is not None
    broker._publisher.on_confirm(_ack(2))

    with pytest.raises(BrokerUnavailable, match="in time"):
        await first
    await second  # confirmed before its own deadline: the first one's timer did not fail it


async def test_a_closed_channel_fails_every_unconfirmed_message() -> None:
    channel = FakeChannel()
    tracker = amqp._ConfirmTracker(channel, 30)
    confirms = [tracker.publish("q", b"1"), tracker.publish("q", b"2")]

    for callback in channel.on_close:
        callback(channel, RuntimeError("connection reset"))

    for confirm in confirms:
        with pytest.raises(BrokerUnavailable, match="closed the publishing channel"):
            await confirm


async def test_a_publish_whose_channel_closed_and_no_node_answers_is_broker_unavailable_at_once() -> None:
    channel = FakeChannel()
    broker = amqp.AmqpBroker(
        ["amqp://guest:guest@127.0.0.1:1/", "amqp://guest:guest@127.0.0.1:2/"], confirm_timeout=30
    )
    broker._publisher = amqp._ConfirmTracker(channel, 30)
    publishing = asyncio.ensure_future(broker.publish("q", [b"1", b"2"]))
    await asyncio.sleep(0)

    channel.is_open = False
    for callback in channel.on_close:
        callback(channel, RuntimeError("connection reset"))

    with pytest.raises(BrokerUnavailable, match="none of the 2 RabbitMQ nodes answered"):
        await asyncio.wait_for(publishing, timeout=10)


async def test_a_returned_message_fails_as_queue_missing_and_only_the_one_of_its_queue_and_body() -> None:
    channel = FakeChannel()
    tracker = amqp._ConfirmTracker(channel, 30)
    confirms = [tracker.publish("q", b"1"), tracker.publish("gone", b"1"), tracker.publish("q", b"2")]

    channel.give_back("gone", b"1")
    tracker.on_confirm(_ack(3, multiple=True))

    await confirms[0]
    with pytest.raises(QueueMissing):
        await confirms[1]
    await confirms[2]


async def test_a_return_for_a_message_given_up_on_does_not_fail_a_later_copy_of_it() -> None:
    channel = FakeChannel()
    tracker = amqp._ConfirmTracker(channel, 0.01)
    with pytest.raises(amqp._ConfirmTimeout):
        await tracker.publish("gone", b"task")
    channel.give_back("gone", b"task")  # late: the message was already given up on
    tracker.on_confirm(_ack(1))

    again = tracker.publish("gone", b"task")  # the queue is back: this copy is taken
    tracker.on_confirm(_ack(2))

    await again
