"""A task that runs longer than RabbitMQ's consumer_timeout completes once, on its first attempt,
and its consumer's channel survives.

RabbitMQ 3.10 has no per-queue override, so the test lowers the node-wide consumer_timeout (and
the channel tick that checks it) with rabbitmqctl and restores both afterwards. The check only
runs on a channel that is busy, so the test keeps the consumer's channel busy with short tasks,
as production traffic would. A control first shows the lowered timeout really closes a channel
that holds a delivery unacked, so the main assertion cannot pass vacuously.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError

from tests.conftest import AMQP_URL
from tests.support.blocking_api import BlockingApi
from tests.support.processes import Processes
from tests.support.recorder import Recording
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

SCHEDULER = "long"
CONSUMER_TIMEOUT_MS = 2_000
TICK_MS = 500
LONG_TASK_SECONDS = 8.0  # four times the consumer timeout


def _rabbit_env(expression: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "eval", expression], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def short_consumer_timeout() -> Iterator[None]:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is needed to lower RabbitMQ's consumer_timeout")
    previous = {
        key: _rabbit_env(f"application:get_env(rabbit, {key}).")
        for key in ("consumer_timeout", "channel_tick_interval")
    }
    _rabbit_env(
        f"application:set_env(rabbit, consumer_timeout, {CONSUMER_TIMEOUT_MS}), "
        f"application:set_env(rabbit, channel_tick_interval, {TICK_MS})."
    )
    try:
        yield
    finally:
        for key, value in previous.items():
            if value.startswith("{ok,"):
                _rabbit_env(f"application:set_env(rabbit, {key}, {value[4:-1]}).")
            else:
                _rabbit_env(f"application:unset_env(rabbit, {key}).")


def _channel_holding_a_delivery_is_closed(queue: str) -> bool:
    """Control: a plain consumer that holds one delivery unacked on a busy channel loses it."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    held: list[int] = []

    def on_message(channel: BlockingChannel, method: object, _props: object, _body: bytes) -> None:
        tag = method.delivery_tag  # type: ignore[attr-defined]
        if held:
            channel.basic_ack(tag)
        else:
            held.append(tag)

    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        channel.basic_qos(prefetch_count=4)
        channel.basic_consume(queue, on_message)
        give_up = time.monotonic() + 60
        while time.monotonic() < give_up:
            channel.basic_publish("", queue, b"keep the channel busy")
            connection.process_data_events(time_limit=0.2)
        return False
    except AMQPError:
        return True
    finally:
        with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as cleanup:
            cleanup.channel().queue_delete(queue)
        if connection.is_open:
            connection.close()


def test_task_longer_than_the_consumer_timeout_completes_once_on_a_surviving_channel(
    short_consumer_timeout: None, processes: Processes, http: httpx.Client, recording: Recording
) -> None:
    assert _channel_holding_a_delivery_is_closed(f"tbtest-probe-{uuid.uuid4().hex[:8]}")
    _, url = processes.api()
    api = BlockingApi(http, url)
    api.register(SCHEDULER)
    worker = processes.worker("worker", SCHEDULER, concurrency=2)
    long_task = api.schedule(SCHEDULER, recording.call("long", asynchronous=True, seconds=LONG_TASK_SECONDS))
    eventually_sync(lambda: recording.starts("long"), what="the long task to start")

    short_tasks: list[dict[str, Any]] = []

    def long_task_final_while_traffic_flows() -> bool:
        short_tasks.append(api.schedule(SCHEDULER, recording.call(f"short-{len(short_tasks)}")))
        return bool(api.task(long_task["id"])["state"] != "running")

    eventually_sync(long_task_final_while_traffic_flows, what="the long task to end", interval=0.2)

    final = api.task(long_task["id"])
    assert final["state"] == "complete", final
    assert final["attempts"] == 1
    assert recording.starts("long") == 1
    assert not worker.events("consumer.subscription_lost"), worker.describe()
    assert worker.returncode is None
    for task in short_tasks:
        assert api.wait_for_state(task["id"])["state"] == "complete"
    print(
        f"\nlong task ran {LONG_TASK_SECONDS} s past a {CONSUMER_TIMEOUT_MS} ms consumer_timeout, "
        f"with {len(short_tasks)} short tasks through the same channel"
    )
