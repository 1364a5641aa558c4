"""The timeout daemon's costs for delayed tasks (a delay, or a retry's backoff): releasing a large
backlog of due ones (made pending and published, confirmed, to a real queue), and one idle sweep
as the number of delayed tasks waiting grows (it must stay flat: the delayed index is read from
its due end only, ZRANGE BYSCORE LIMIT). The release is set beside RabbitMQ's own rate in the
same run (bench.rabbitmq_floor: as many messages, plain pika, no Redis): what a release cannot
go below on this machine however it is written.

    .venv/bin/python -m bench.delayed --quick     # a smoke run at tiny sizes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from datetime import timedelta
from typing import Any

from bench.harness import AMQP_URL, REDIS_URL, delete_keys, log_json_to_nowhere, progress
from bench.rabbitmq_floor import rabbitmq_floor
from taskbroker.backends import real_backends
from taskbroker.models import SchedulerDefinition, utcnow
from taskbroker.names import queue_name
from taskbroker.settings import Settings
from taskbroker.store import NewTask, TaskStore
from taskbroker.timeout_daemon.daemon import TimeoutDaemon

SCHEDULER = "bench-delayed"
CREATE_BATCH = 1000


async def _create(store: TaskStore, count: int, *, due: bool) -> None:
    now = utcnow()
    not_before = now if due else now + timedelta(hours=5)
    timeout = now + timedelta(hours=6)
    for start in range(0, count, CREATE_BATCH):
        size = min(CREATE_BATCH, count - start)
        await store.create(
            [NewTask(uuid.uuid4(), SCHEDULER, {"n": 1}, timeout, not_before=not_before) for _ in range(size)],
            now=now,
        )
        if start and start % 100_000 == 0:
            progress(f"created {start:,} delayed tasks")


async def _measure(release: int, waiting_counts: list[int], idle_sweeps: int) -> dict[str, Any]:
    settings = Settings(redis_url=REDIS_URL, amqp_url=AMQP_URL, key_prefix=f"bench-{uuid.uuid4().hex[:8]}")
    backends = real_backends(settings, connection_name="taskbroker-bench-delayed")
    daemon = TimeoutDaemon(
        settings=settings, store=backends.store, events=backends.events, broker=backends.broker
    )
    queue = queue_name(settings.key_prefix, SCHEDULER)
    figures: dict[str, Any] = {}
    try:
        await backends.broker.declare(queue)
        await backends.store.register_scheduler(SchedulerDefinition(name=SCHEDULER))
        progress(f"creating {release:,} due delayed tasks")
        await _create(backends.store, release, due=True)
        started = time.perf_counter()
        report = await daemon.sweep()
        figures["release_seconds"] = round(time.perf_counter() - started, 3)
        figures["released"] = report.released
        figures["published"] = (await backends.broker.stats(queue)).messages
        await backends.broker.delete(queue)
        await backends.broker.declare(queue)
        figures["idle_sweep_ms"] = {}
        created = 0
        for waiting in sorted(waiting_counts):
            progress(f"idle sweep with {waiting:,} delayed tasks waiting")
            await _create(backends.store, waiting - created, due=False)
            created = waiting
            timings = []
            for _ in range(idle_sweeps):
                started = time.perf_counter()
                await daemon.sweep()
                timings.append(time.perf_counter() - started)
            figures["idle_sweep_ms"][str(waiting)] = round(statistics.median(timings) * 1000, 3)
    finally:
        await backends.broker.delete(queue)
        await backends.close()
        delete_keys(f"{settings.key_prefix}:*")
    return figures


def delayed_release_costs(release: int, waiting_counts: list[int], idle_sweeps: int = 50) -> dict[str, Any]:
    # A JSON log line per released task, as deployed, written to nowhere (as bench.daemon does).
    log_json_to_nowhere()
    figures = asyncio.run(_measure(release, waiting_counts, idle_sweeps))
    progress(f"RabbitMQ alone: {release:,} persistent messages, confirmed")
    floor = rabbitmq_floor(release)
    figures["rabbitmq_floor_seconds"] = floor["seconds"]
    # RabbitMQ's CPU for those messages over the machine's cores: below this no release can go.
    figures["rabbitmq_floor_cpu_seconds"] = floor["rabbitmq_cpu_seconds"]
    figures["cores"] = floor["cores"]
    figures["release_vs_rabbitmq_floor"] = round(figures["release_seconds"] / floor["seconds"], 2)
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.delayed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the benchmark runs")
    parser.add_argument("--release", type=int, default=100_000, help="due delayed tasks to release")
    parser.add_argument("--waiting", default="0,1000000", help="delayed tasks waiting, comma separated")
    args = parser.parse_args(argv)
    if args.quick:
        args.release, args.waiting = 2000, "0,20000"
    figures = delayed_release_costs(args.release, [int(n) for n in args.waiting.split(",") if n.strip()])
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
