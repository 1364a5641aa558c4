"""How long after an abort, or after a task's timeout passes, its consumer's runtime is told to
cancel the running task. Real Redis and RabbitMQ, the API app, a consumer and a timeout daemon in
one process (the cancel notice still travels through Redis pub/sub, as between processes).

    .venv/bin/python -m bench.cancel_latency --samples 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from taskbroker.api.app import create_app
from taskbroker.backends import real_backends
from taskbroker.models import Task
from taskbroker.names import queue_name
from taskbroker.runtimes.base import RuntimeConfig
from taskbroker.runtimes.inline import InlineRuntime
from taskbroker.scheduler_worker.consumer import Consumer
from taskbroker.settings import Settings
from taskbroker.timeout_daemon.daemon import TimeoutDaemon

SCHEDULER = "cancel-bench"
LONG_SLEEP = {"function": "taskbroker.runtimes.builtin:sleep", "kwargs": {"seconds": 3600}}
RESULTS = Path(__file__).parent / "results"


class TimedInline(InlineRuntime):
    """Inline, noting when each run starts and when cancel reaches it (wall clock)."""

    def __init__(self, config: RuntimeConfig) -> None:
        super().__init__(config)
        self.started: dict[str, asyncio.Event] = {}
        self.cancelled_at: dict[str, float] = {}
        self.cancelled: dict[str, asyncio.Event] = {}

    def _events(self, task_id: str) -> tuple[asyncio.Event, asyncio.Event]:
        return (
            self.started.setdefault(task_id, asyncio.Event()),
            self.cancelled.setdefault(task_id, asyncio.Event()),
        )

    async def run(self, task: Task) -> Any:
        self._events(str(task.id))[0].set()
        return await super().run(task)

    async def cancel(self, task: Task) -> None:
        self.cancelled_at[str(task.id)] = time.time()
        self._events(str(task.id))[1].set()
        await super().cancel(task)


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def measure(samples: int, sweep_interval: float) -> dict[str, Any]:
    settings = Settings(key_prefix=f"bench-cancel-{uuid.uuid4().hex[:8]}", sweep_interval=sweep_interval)
    backends = real_backends(settings, connection_name="taskbroker-bench-cancel")
    runtime = TimedInline(RuntimeConfig(scheduler=SCHEDULER, concurrency=4))
    consumer = Consumer(
        settings=settings,
        store=backends.store,
        broker=backends.broker,
        runtime=runtime,
        scheduler=SCHEDULER,
        concurrency=4,
    )
    daemon = TimeoutDaemon(
        settings=settings, store=backends.store, events=backends.events, broker=backends.broker
    )
    stop = asyncio.Event()
    app = create_app(settings, backends, owns_backends=False)
    background: list[asyncio.Task[None]] = []
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
            response = await http.post("/scheduler", json={"name": SCHEDULER})
            response.raise_for_status()
            background = [asyncio.create_task(consumer.run(stop)), asyncio.create_task(daemon.run(stop))]
            await consumer.ready.wait()

            abort_delays = []
            for number in range(samples):
                task = (
                    await http.post("/task/schedule", json={"scheduler": SCHEDULER, "attributes": LONG_SLEEP})
                ).json()
                started, cancelled = runtime._events(task["id"])
                await started.wait()
                asked = time.time()
                (await http.post(f"/task/{task['id']}/abort")).raise_for_status()
                await cancelled.wait()
                abort_delays.append(runtime.cancelled_at[task["id"]] - asked)
                print(f"\rabort {number + 1}/{samples}", end="", flush=True)
            print()

            timeout_delays = []
            for number in range(samples):
                deadline = datetime.now(UTC) + timedelta(seconds=0.5)
                body = {"scheduler": SCHEDULER, "attributes": LONG_SLEEP, "timeout": deadline.isoformat()}
                task = (await http.post("/task/schedule", json=body)).json()
                _, cancelled = runtime._events(task["id"])
                await cancelled.wait()
                timeout_delays.append(runtime.cancelled_at[task["id"]] - deadline.timestamp())
                print(f"\rtimeout {number + 1}/{samples}", end="", flush=True)
            print()
    finally:
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
        await backends.broker.delete(queue_name(settings.key_prefix, SCHEDULER))
        keys = [k async for k in backends.store.redis.scan_iter(match=f"{settings.key_prefix}:*")]
        if keys:
            await backends.store.redis.delete(*keys)
        await backends.close()
    return {
        "samples": samples,
        "sweep_interval_s": sweep_interval,
        "abort_to_cancel": _quantiles(abort_delays),
        "timeout_to_cancel": _quantiles(timeout_delays),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=50, help="Aborts and timeouts to measure (each).")
    parser.add_argument(
        "--sweep-interval", type=float, default=1.0, help="The timeout daemon's TASKBROKER_SWEEP_INTERVAL."
    )
    args = parser.parse_args()
    figures = asyncio.run(measure(args.samples, args.sweep_interval))
    print(json.dumps(figures, indent=2))
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"cancel-latency-{stamp}.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
