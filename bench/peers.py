"""Run Celery and Dramatiq end to end the same way as ours: two worker processes, N no-op tasks
published from one process, seconds until a Redis counter the task increments reaches N."""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pika

from bench.harness import (
    AMQP_URL,
    BIN,
    Fleet,
    cpu_per_thousand,
    delete_keys,
    progress,
    redis_client,
    wait_until,
)


def _count(key: str) -> int:
    client = redis_client()
    try:
        return int(client.get(key) or 0)
    finally:
        client.close()


def _delete_queues(*names: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)
    finally:
        connection.close()


def _delete_exchange(name: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        connection.channel().exchange_delete(name)
    finally:
        connection.close()


def _load(module: str, env: dict[str, str]) -> Any:
    """Import the peer's module in this process with the run's settings (fresh each time)."""
    os.environ.update(env)
    sys.modules.pop(module, None)
    return importlib.import_module(module)


def celery_end_to_end(tasks: int, *, acks_late: bool, workers: int = 2) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    env = {
        "BENCH_CELERY_QUEUE": f"bench-celery-{run}",
        "BENCH_CELERY_ACKS_LATE": "1" if acks_late else "0",
        "BENCH_COUNTER": f"bench:celery:{run}",
    }
    module = _load("bench.peer_celery", env)
    fleet = Fleet(Path(tempfile.mkdtemp(prefix="bench-celery-")))
    fleet.start(
        "celery",
        [
            str(BIN / "celery"),
            "-A",
            "bench.peer_celery",
            "worker",
            "--concurrency",
            str(workers),
            "--pool",
            "prefork",
            "--loglevel",
            "WARNING",
            "-Q",
            env["BENCH_CELERY_QUEUE"],
        ],
        env,
    )
    try:
        module.app.connection_for_write().ensure_connection(max_retries=3)
        _wait_for_consumer(env["BENCH_CELERY_QUEUE"])
        before = fleet.cpu_seconds()
        started = time.perf_counter()
        for _ in range(tasks):
            module.noop.apply_async()
        published = time.perf_counter()
        wait_until(lambda: _count(env["BENCH_COUNTER"]) >= tasks, what="Celery to run every task")
        finished = time.perf_counter()
        after = fleet.cpu_seconds()
    finally:
        fleet.stop()
        _delete_queues(env["BENCH_CELERY_QUEUE"])
        _delete_exchange(env["BENCH_CELERY_QUEUE"])
        delete_keys(env["BENCH_COUNTER"])
        delete_keys(f"{env['BENCH_CELERY_QUEUE']}:*")
    return {
        "tasks": tasks,
        "tasks_per_s": round(tasks / (finished - started), 1),
        "schedule_seconds": round(published - started, 3),
        "total_seconds": round(finished - started, 3),
        "cpu_s_per_1000": cpu_per_thousand(before, after, tasks),
    }


def celery_publish_rate(tasks: int) -> dict[str, Any]:
    """apply_async from one process with no worker running: Celery's scheduling rate."""
    run = uuid.uuid4().hex[:8]
    env = {
        "BENCH_CELERY_QUEUE": f"bench-celery-{run}",
        "BENCH_CELERY_ACKS_LATE": "0",
        "BENCH_COUNTER": f"bench:celery:{run}",
    }
    module = _load("bench.peer_celery", env)
    try:
        module.noop.apply_async()  # connect and declare outside the timing
        started = time.perf_counter()
        for _ in range(tasks):
            module.noop.apply_async()
        elapsed = time.perf_counter() - started
    finally:
        _delete_queues(env["BENCH_CELERY_QUEUE"])
        _delete_exchange(env["BENCH_CELERY_QUEUE"])
    return {"requests": tasks, "tasks_per_s": round(tasks / elapsed, 1)}


def dramatiq_end_to_end(tasks: int, *, processes: int = 2, threads: int = 8) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    queue = f"bench-dramatiq-{run}"
    env = {"BENCH_DRAMATIQ_QUEUE": queue, "BENCH_COUNTER": f"bench:dramatiq:{run}"}
    module = _load("bench.peer_dramatiq", env)
    fleet = Fleet(Path(tempfile.mkdtemp(prefix="bench-dramatiq-")))
    fleet.start(
        "dramatiq",
        [
            str(BIN / "dramatiq"),
            "bench.peer_dramatiq",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
        ],
        env,
    )
    try:
        _wait_for_consumer(queue)
        before = fleet.cpu_seconds()
        started = time.perf_counter()
        for _ in range(tasks):
            module.noop.send()
        published = time.perf_counter()
        wait_until(lambda: _count(env["BENCH_COUNTER"]) >= tasks, what="Dramatiq to run every task")
        finished = time.perf_counter()
        after = fleet.cpu_seconds()
    finally:
        fleet.stop()
        module.broker.close()
        _delete_queues(queue, f"{queue}.DQ", f"{queue}.XQ")
        delete_keys(env["BENCH_COUNTER"])
    return {
        "tasks": tasks,
        "tasks_per_s": round(tasks / (finished - started), 1),
        "schedule_seconds": round(published - started, 3),
        "total_seconds": round(finished - started, 3),
        "cpu_s_per_1000": cpu_per_thousand(before, after, tasks),
    }


def _wait_for_consumer(queue: str) -> None:
    def consumed() -> bool:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            frame = connection.channel().queue_declare(queue, passive=True)
            return bool(frame.method.consumer_count > 0)
        except pika.exceptions.ChannelClosedByBroker:
            return False
        finally:
            if connection.is_open:
                connection.close()

    progress(f"waiting for a consumer on {queue}")
    wait_until(consumed, what=f"a consumer on {queue}", timeout=120, interval=0.5)
