"""The timeout daemon's costs: expiring a large backlog of due tasks, and one idle sweep as the
number of live (not yet due) tasks grows (it must stay flat: the deadline index is read from
its due end only)."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from datetime import timedelta
from typing import Any

from bench.harness import AMQP_URL, REDIS_URL, delete_keys, log_json_to_nowhere, progress
from taskbroker.backends import real_backends
from taskbroker.models import SchedulerDefinition, utcnow
from taskbroker.settings import Settings
from taskbroker.store import NewTask, TaskStore
from taskbroker.timeout_daemon.daemon import TimeoutDaemon

SCHEDULER = "bench-expiry"
CREATE_BATCH = 1000


async def _create(store: TaskStore, count: int, *, due: bool) -> None:
    now = utcnow()
    timeout = now - timedelta(seconds=1) if due else now + timedelta(hours=6)
    for start in range(0, count, CREATE_BATCH):
        size = min(CREATE_BATCH, count - start)
        await store.create(
            [NewTask(uuid.uuid4(), SCHEDULER, {"n": 1}, timeout) for _ in range(size)], now=now
        )
        if start and start % 100_000 == 0:
            progress(f"created {start:,} tasks")


async def _measure(expire: int, live_counts: list[int], idle_sweeps: int) -> dict[str, Any]:
    settings = Settings(redis_url=REDIS_URL, amqp_url=AMQP_URL, key_prefix=f"bench-{uuid.uuid4().hex[:8]}")
    backends = real_backends(settings, connection_name="taskbroker-bench-daemon")
    daemon = TimeoutDaemon(
        settings=settings, store=backends.store, events=backends.events, broker=backends.broker
    )
    figures: dict[str, Any] = {}
    try:
        await backends.store.register_scheduler(SchedulerDefinition(name=SCHEDULER))
        progress(f"creating {expire:,} due tasks")
        await _create(backends.store, expire, due=True)
        started = time.perf_counter()
        report = await daemon.sweep()
        figures["expire_seconds"] = round(time.perf_counter() - started, 3)
        figures["expired"] = report.expired
        figures["idle_sweep_ms"] = {}
        created = 0
        for live in sorted(live_counts):
            progress(f"idle sweep with {live:,} live tasks")
            await _create(backends.store, live - created, due=False)
            created = live
            timings = []
            for _ in range(idle_sweeps):
                started = time.perf_counter()
                await daemon.sweep()
                timings.append(time.perf_counter() - started)
            figures["idle_sweep_ms"][str(live)] = round(statistics.median(timings) * 1000, 3)
    finally:
        await backends.close()
        delete_keys(f"{settings.key_prefix}:*")
    return figures


def timeout_daemon_costs(expire: int, live_counts: list[int], idle_sweeps: int = 50) -> dict[str, Any]:
    # As deployed, a JSON log line per expired task, but written to nowhere: the terminal is not
    # the cost being measured. structlog binds the stream it is given at configuration time.
    log_json_to_nowhere()
    return asyncio.run(_measure(expire, live_counts, idle_sweeps))
