"""Redis CPU per task over its whole life: created, published, claimed, finished, its events
written and trimmed, its keys expired after retention. What one Redis primary carries follows
from it (docs/scaling.md).

Runs `taskbroker api`, one `taskbroker worker` and one `taskbroker timeout-daemon` (retention and
event retention of 2 s, so a task's whole life fits in the run) against the real Redis and
RabbitMQ, schedules no-op tasks, waits until every one is complete and its keys and events are
gone, and reads Redis' own CPU counters (``INFO CPU``: used_cpu_sys + used_cpu_user) before and
after. The Redis is shared, so the same counters are read over idle windows before and after
(the processes up, no tasks): their rate, times the run's duration, is subtracted. Run it when
the machine is quiet; the JSON records the load average and both figures.

    python -m bench.redis_cpu                    # 10,000 tasks in batches of 1,000, then one per request
    python -m bench.redis_cpu --tasks 20000 --modes batch
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.harness import BIN, machine_speed, progress, redis_client, wait_until
from bench.ours import NOOP, Ours

RESULTS = Path(__file__).resolve().parent / "results"
SCHEDULER = "redis-cpu"
RETENTION_S = 2
SAMPLE = 200
"""Task ids whose keys are polled until they expire (polling all would cost Redis more)."""


def redis_cpu_seconds() -> dict[str, float]:
    client = redis_client()
    try:
        info: dict[str, Any] = client.info("cpu")
    finally:
        client.close()
    return {
        "total": float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
        "main_thread": float(info.get("used_cpu_sys_main_thread", 0.0))
        + float(info.get("used_cpu_user_main_thread", 0.0)),
    }


def idle_rate(seconds: float) -> dict[str, float]:
    """Redis CPU seconds per second with the fleet up and no task: other clients, our
    processes' heartbeats, subscriptions and sweeps."""
    before = redis_cpu_seconds()
    time.sleep(seconds)
    after = redis_cpu_seconds()
    return {k: (after[k] - before[k]) / seconds for k in after}


async def _schedule(url: str, headers: dict[str, str], tasks: int, mode: str) -> list[str]:
    """Schedule ``tasks`` no-op tasks, 1,000 per request (batch) or one per request (single, 16
    requests at a time); their ids."""
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
        if mode == "batch":
            for start in range(0, tasks, 1000):
                body = {"tasks": [{"scheduler": SCHEDULER, "attributes": NOOP}] * min(1000, tasks - start)}
                response = await http.post("/task/schedule/batch", json=body)
                response.raise_for_status()
                ids.extend(t["id"] for t in response.json()["tasks"])
            return ids
        queue = iter(range(tasks))

        async def client() -> None:
            for _ in queue:
                response = await http.post(
                    "/task/schedule", json={"scheduler": SCHEDULER, "attributes": NOOP}
                )
                response.raise_for_status()
                ids.append(response.json()["id"])

        await asyncio.gather(*(client() for _ in range(16)))
    return ids


def _gone(prefix: str, ids: list[str]) -> bool:
    """Every sampled task's hash expired, and the event stream trimmed to nothing."""
    client = redis_client()
    try:
        pipe = client.pipeline(transaction=False)
        for task_id in ids:
            pipe.exists(f"{prefix}:task:{task_id}")
        pipe.xlen(f"{prefix}:events")
        *exists, events = pipe.execute()
        return not any(exists) and events == 0
    finally:
        client.close()


def _steady(before: float, after: float) -> bool:
    """The idle rates before and after the run within a factor of 2 of each other."""
    low, high = sorted((before, after))
    return high <= 2 * low + 0.001


def measure(ours: Ours, tasks: int, mode: str, idle_seconds: float) -> dict[str, Any]:
    progress(f"{mode}: idle window of {idle_seconds:.0f} s")
    idle_before = idle_rate(idle_seconds)
    before = redis_cpu_seconds()
    started = time.perf_counter()
    ids = asyncio.run(_schedule(ours.url, ours.headers, tasks, mode))
    scheduled = time.perf_counter()
    wait_until(lambda: ours.live_tasks(SCHEDULER) == 0, what="every task to finish", interval=0.2)
    finished = time.perf_counter()
    sample = random.sample(ids, min(SAMPLE, len(ids)))
    wait_until(lambda: _gone(ours.prefix, sample), what="the tasks' keys to expire", interval=0.5)
    ended = time.perf_counter()
    after = redis_cpu_seconds()
    progress(f"{mode}: {tasks:,} tasks lived and expired in {ended - started:.1f} s; idle window again")
    idle_after = idle_rate(idle_seconds)
    duration = ended - started
    figures: dict[str, Any] = {
        "mode": mode,
        "tasks": tasks,
        "schedule_seconds": round(scheduled - started, 2),
        "complete_seconds": round(finished - started, 2),
        "expired_seconds": round(duration, 2),
        "idle_redis_cpu_per_s": {
            "before": round(idle_before["total"], 4),
            "after": round(idle_after["total"], 4),
        },
        # Other clients of a shared Redis changed their load during the run: the subtracted
        # background is a guess, and the figures mean little.
        "background_steady": _steady(idle_before["total"], idle_after["total"]),
    }
    for counter in ("total", "main_thread"):
        used = after[counter] - before[counter]
        background = (idle_before[counter] + idle_after[counter]) / 2 * duration
        figures[counter] = {
            "redis_cpu_s": round(used, 3),
            "background_cpu_s": round(background, 3),
            "raw_us_per_task": round(used / tasks * 1e6, 1),
            "us_per_task": round((used - background) / tasks * 1e6, 1),
        }
    return figures


def run(tasks: int, modes: list[str], idle_seconds: float) -> dict[str, Any]:
    ours = Ours()
    ours.env |= {
        "TASKBROKER_RETENTION": str(RETENTION_S),
        "TASKBROKER_EVENTS_RETENTION": str(RETENTION_S),
    }
    try:
        ours.start_api()
        ours.register(SCHEDULER)
        ours.start_workers(SCHEDULER, count=1)
        ours.fleet.start("timeout-daemon", [str(BIN / "taskbroker"), "timeout-daemon"], ours.env)
        warm_up = min(1000, tasks)
        progress(f"warm-up: {warm_up:,} tasks")
        asyncio.run(_schedule(ours.url, ours.headers, warm_up, "batch"))
        wait_until(lambda: ours.live_tasks(SCHEDULER) == 0, what="the warm-up", interval=0.2)
        runs = [measure(ours, tasks, mode, idle_seconds) for mode in modes]
    finally:
        ours.close()
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "machine": machine_speed(),
        "redis_version": redis_client().info("server")["redis_version"],
        "worker_concurrency": ours.worker_concurrency,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=10_000, help="Tasks per mode.")
    parser.add_argument(
        "--modes", default="batch,single", help="Comma-separated: batch (1,000 per request), single."
    )
    parser.add_argument("--idle", type=float, default=10.0, help="Seconds of each idle window.")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="The JSON file (default: bench/results/redis-cpu-<time>.json).",
    )
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"batch", "single"}
    if unknown:
        parser.error(f"unknown modes: {sorted(unknown)}")
    figures = run(args.tasks, modes, args.idle)
    print(json.dumps(figures, indent=2))
    output = args.output
    if output is None:
        RESULTS.mkdir(exist_ok=True)
        output = RESULTS / f"redis-cpu-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    output.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
