"""Dramatiq with its RabbitMQ broker and default settings, configured by environment so the
benchmark and the `dramatiq` worker processes load the same actor.

BENCH_DRAMATIQ_QUEUE: queue name; BENCH_COUNTER: Redis key the actor increments on completion.
"""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench.harness import AMQP_URL, REDIS_URL

QUEUE = os.environ.get("BENCH_DRAMATIQ_QUEUE", "bench-dramatiq")
COUNTER = os.environ.get("BENCH_COUNTER", "bench:dramatiq:done")

broker = RabbitmqBroker(url=AMQP_URL)
dramatiq.set_broker(broker)
_counter = redis.Redis.from_url(REDIS_URL)


@dramatiq.actor(queue_name=QUEUE)
def noop() -> None:
    _counter.incr(COUNTER)
