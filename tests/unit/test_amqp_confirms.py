"""Publisher confirms as AmqpBroker.publish sees them: every message settles exactly once, by its
confirm, its nack, the channel closing, or the confirm timeout (one timer for all of them)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pika
import pytest

from taskbroker.errors import BrokerUnavailable
from taskbroker.queue import amqp


class FakeChannel:
    """Just enough of a pika channel for the confirm tracker; ``publish`` records the messages."""

    def __init__(self) -> None:
        self.is_open = True
        self.published: list[bytes] = []
        self.on_close: list[Any] = []

    def add_on_return_callback(self, _callback: Any) -> None:
        pass

    def add_on_close_callback(self, callback: Any) -> None:
        self.on_close.append(callback)

    def basic_publish(self, *, body: bytes, **_kwargs: Any) -> None:
        self.published.append(body)


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


async def test_a_nacked_message_fails_its_publish() -> None:
    broker = _broker_over(FakeChannel(), confirm_timeout=30)
    publishing = asyncio.ensure_future(broker.publish("q", [b"1"]))
    await asyncio.sleep(0)

    assert broker._publisher is not None
    broker._publisher.on_confirm(_nack(1))

    with pytest.raises(BrokerUnavailable, match="nack"):
        await publishing


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
    broker = _broker_over(channel, confirm_timeout=30)
    publishing = asyncio.ensure_future(broker.publish("q", [b"1", b"2"]))
    await asyncio.sleep(0)

    for callback in channel.on_close:
        callback(channel, RuntimeError("connection reset"))

    with pytest.raises(BrokerUnavailable, match="closed the publishing channel"):
        await publishing
