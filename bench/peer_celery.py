"""Celery, as its documentation recommends for a RabbitMQ broker, configured by environment so the
benchmark and the `celery worker` processes it starts load the same app.

BENCH_CELERY_QUEUE: queue name; BENCH_CELERY_ACKS_LATE: "1" for acks_late with a Redis result
backend, else Celery's defaults (acks early, no results); BENCH_COUNTER: Redis key the task
increments, so the benchmark sees completion the same way for every peer.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

from bench.harness import AMQP_URL, REDIS_URL

QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "bench-celery")
ACKS_LATE = os.environ.get("BENCH_CELERY_ACKS_LATE") == "1"
COUNTER = os.environ.get("BENCH_COUNTER", "bench:celery:done")

app = Celery("bench", broker=AMQP_URL.replace("amqp://", "pyamqp://", 1))
app.conf.update(
    task_default_queue=QUEUE,
    task_acks_late=ACKS_LATE,
    task_reject_on_worker_lost=ACKS_LATE,
    # Celery's documentation pairs acks_late with a prefetch multiplier of 1; 4 is its default.
    worker_prefetch_multiplier=1 if ACKS_LATE else 4,
    result_backend=REDIS_URL if ACKS_LATE else None,
    # Results under this run's own prefix, so cleaning up never touches anyone else's keys.
    result_backend_transport_options={"global_keyprefix": f"{QUEUE}:"},
    task_ignore_result=not ACKS_LATE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
_counter = redis.Redis.from_url(REDIS_URL)


@app.task(name="bench.noop")
def noop() -> None:
    _counter.incr(COUNTER)
