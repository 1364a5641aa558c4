"""RabbitMQ's own rate on this machine, with no taskbroker code in the way: how long one queue
of ours (classic, priorities, queue version 2) takes to take N persistent messages, published
with confirms by plain pika and all in flight at once. The figure a release or a scheduling
burst through taskbroker is compared with: what no client design can go below here.

    .venv/bin/python -m bench.rabbitmq_floor --messages 100000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Any

import pika
import psutil
from pika.channel import Channel
from pika.frame import Method

from bench.harness import AMQP_URL
from taskbroker.queue.amqp import QUEUE_ARGUMENTS

CHUNK = 1000  # messages framed per turn of the I/O loop, so RabbitMQ works while pika frames


def _listener(port: int) -> psutil.Process | None:
    """The process listening on ``port`` on this machine (RabbitMQ's Erlang VM), if it is here."""
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr[1] == port:
            return psutil.Process(connection.pid) if connection.pid else None
    return None


def _cpu(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    times = process.cpu_times()
    return float(times.user + times.system)


def rabbitmq_floor(messages: int, url: str = AMQP_URL) -> dict[str, Any]:
    """Seconds from the first publish to the last confirm, the messages per second, and the CPU
    RabbitMQ spent on them (when it runs on this machine): that CPU over the machine's cores is
    a floor no layout of the work can go below, RabbitMQ being the one doing it."""
    parameters = pika.URLParameters(url)
    rabbitmq = _listener(parameters.port)
    queue = f"bench-floor-{uuid.uuid4().hex[:8]}"
    bodies = [str(uuid.uuid4()).encode() for _ in range(messages)]
    properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    state: dict[str, Any] = {"confirmed": 0, "started": 0.0, "seconds": None, "nacked": 0, "cpu": 0.0}
    connection: pika.SelectConnection

    def on_open(_connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=on_channel)

    def on_channel(channel: Channel) -> None:
        channel.queue_declare(
            queue, durable=True, arguments=QUEUE_ARGUMENTS, callback=lambda _f: confirm(channel)
        )

    def confirm(channel: Channel) -> None:
        channel.confirm_delivery(lambda frame: on_confirm(channel, frame), callback=lambda _f: start(channel))

    def start(channel: Channel) -> None:
        state["started"] = time.perf_counter()
        state["cpu"] = _cpu(rabbitmq)
        publish(channel, 0)

    def publish(channel: Channel, start_at: int) -> None:
        for body in bodies[start_at : start_at + CHUNK]:
            channel.basic_publish("", queue, body, properties, mandatory=True)
        if start_at + CHUNK < messages:
            connection.ioloop.call_later(0, lambda: publish(channel, start_at + CHUNK))

    def on_confirm(channel: Channel, frame: Method[Any]) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            state["nacked"] += 1
        state["confirmed"] = method.delivery_tag if method.multiple else state["confirmed"] + 1
        if state["confirmed"] >= messages and state["seconds"] is None:
            state["seconds"] = time.perf_counter() - state["started"]
            state["cpu"] = _cpu(rabbitmq) - state["cpu"]
            channel.queue_delete(queue, callback=lambda _f: connection.close())

    connection = pika.SelectConnection(
        parameters,
        on_open_callback=on_open,
        on_open_error_callback=lambda _c, error: connection.ioloop.stop(),
        on_close_callback=lambda _c, _reason: connection.ioloop.stop(),
    )
    connection.ioloop.start()
    if state["seconds"] is None:
        raise RuntimeError(f"RabbitMQ at {url} did not confirm {messages:,} messages: is it running?")
    seconds = float(state["seconds"])
    return {
        "messages": messages,
        "seconds": round(seconds, 3),
        "per_s": round(messages / seconds),
        "nacked": state["nacked"],
        "rabbitmq_cpu_seconds": round(state["cpu"], 3) if rabbitmq else None,
        "cores": psutil.cpu_count(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rabbitmq_floor", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--messages", type=int, default=100_000, help="persistent messages to publish")
    args = parser.parse_args(argv)
    figures = rabbitmq_floor(args.messages)
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
