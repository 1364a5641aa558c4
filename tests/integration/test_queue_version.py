"""Scheduler queues are version 2 classic queues; a queue an earlier taskbroker declared as
version 1 is used as it is, not refused."""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from taskbroker.backends import Backends
from taskbroker.names import queue_name
from taskbroker.queue.amqp import QUEUE_ARGUMENTS, VERSION_1_QUEUE_ARGUMENTS
from taskbroker.settings import Settings
from tests.conftest import AMQP_URL


@pytest.fixture
def channel() -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        yield connection.channel()
    finally:
        connection.close()


def _declared_with(channel: BlockingChannel, name: str, arguments: dict[str, int]) -> bool:
    """Whether RabbitMQ takes a declaration with these arguments as the queue's own: it refuses
    (406) any that differ, which closes the channel."""
    try:
        channel.queue_declare(name, durable=True, arguments=arguments)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 406:
            raise
        return False
    return True


async def test_a_new_scheduler_queue_is_a_version_2_priority_queue(
    settings: Settings, real: Backends, channel: BlockingChannel
) -> None:
    name = queue_name(settings.key_prefix, "v2")
    try:
        await real.broker.declare(name)
        assert _declared_with(channel, name, {"x-max-priority": 9, "x-queue-version": 2})
        other = channel.connection.channel()
        assert not _declared_with(other, name, {"x-max-priority": 9})
    finally:
        channel.connection.channel().queue_delete(name)


async def test_a_version_1_queue_of_an_earlier_taskbroker_is_declared_and_still_carries_tasks(
    settings: Settings, real: Backends, channel: BlockingChannel
) -> None:
    name = queue_name(settings.key_prefix, "v1")
    assert QUEUE_ARGUMENTS != VERSION_1_QUEUE_ARGUMENTS
    channel.queue_declare(name, durable=True, arguments=VERSION_1_QUEUE_ARGUMENTS)
    try:
        await real.broker.declare(name)  # no error: the queue is used as it is
        await real.broker.publish(name, [b"low", b"high"], [1, 8])
        assert (await real.broker.stats(name)).messages == 2
        method, _properties, body = channel.basic_get(name, auto_ack=True)
        assert method is not None
        assert body == b"high"  # its priorities still hold
    finally:
        channel.queue_delete(name)
