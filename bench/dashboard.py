"""What the dashboard's Tasks page costs with many live tasks: the page itself and the API reads its
script makes (the first page of tasks, its scheduler list, a later page by cursor, the overview),
against a real `taskbroker api` over the real Redis, with ``--tasks`` pending tasks stored under a
throwaway key prefix (removed afterwards). Issue 17's figure: under 300 ms with 100,000.

    .venv/bin/python -m bench.dashboard --tasks 100000

Prints one JSON object: per read, the median and 95th percentile in ms over ``--rounds``, and
``tasks_page_ms``, the median of what one view of the Tasks page waits for in all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.harness import AMQP_URL, BIN, REDIS_URL, Fleet, delete_keys, free_port, progress, wait_until
from taskbroker.backends import redis_client
from taskbroker.models import SchedulerDefinition, utcnow
from taskbroker.store import NewTask, TaskStore

SCHEDULER = "bench-dashboard"
PAGE = 50
"""The Tasks page's page size (api/dashboard/static/js/tasks.js)."""
ATTRIBUTES = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"payload": "x" * 150}}


async def _store_tasks(prefix: str, tasks: int, batch: int = 1000) -> None:
    client = redis_client(REDIS_URL)
    store = TaskStore(client, prefix, timedelta(hours=1))
    try:
        await store.register_scheduler(SchedulerDefinition(name=SCHEDULER))
        timeout = utcnow() + timedelta(hours=6)
        for start in range(0, tasks, batch):
            new = [
                NewTask(uuid.uuid4(), SCHEDULER, ATTRIBUTES, timeout, owner="admin")
                for _ in range(min(batch, tasks - start))
            ]
            await store.create(new, now=utcnow())
    finally:
        await client.aclose()


def _timed(http: httpx.Client, path: str, **params: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    response = http.get(path, params=params)
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed, response.json() if "json" in response.headers.get("content-type", "") else None


def measure(tasks: int, rounds: int) -> dict[str, Any]:
    """The figures for ``tasks`` live tasks (the lead's benchmark run calls this)."""
    prefix = f"tbbench-{uuid.uuid4().hex[:8]}"
    admin = f"bench-admin-{secrets.token_hex(16)}"
    progress(f"storing {tasks} live tasks under {prefix}")
    asyncio.run(_store_tasks(prefix, tasks))
    port = free_port()
    env = {
        "TASKBROKER_KEY_PREFIX": prefix,
        "TASKBROKER_REDIS_URL": REDIS_URL,
        "TASKBROKER_AMQP_URL": AMQP_URL,
        "TASKBROKER_ADMIN_TOKEN": admin,
    }
    fleet = Fleet(Path(tempfile.mkdtemp(prefix="bench-dashboard-")))
    url = f"http://127.0.0.1:{port}"
    samples: dict[str, list[float]] = {}
    views: list[float] = []
    try:
        fleet.start("api", [str(BIN / "taskbroker"), "api", "--port", str(port)], env)

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, what="the API to answer /health", timeout=60)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60) as http:
            for round_ in range(rounds + 1):
                page_ms, _ = _timed(http, "/ui/tasks")
                whoami_ms, _ = _timed(http, "/whoami")
                schedulers_ms, _ = _timed(http, "/schedulers")
                first_ms, first = _timed(http, "/tasks", limit=PAGE)
                filtered_ms, _ = _timed(http, "/tasks", limit=PAGE, scheduler=SCHEDULER)
                next_ms, _ = _timed(http, "/tasks", limit=PAGE, cursor=first["next_cursor"])
                overview_ms, _ = _timed(http, "/overview")
                if round_ == 0:
                    continue  # warm-up: first connections, first script loads
                for name, value in (
                    ("page_html", page_ms),
                    ("whoami", whoami_ms),
                    ("schedulers", schedulers_ms),
                    ("tasks_first_page", first_ms),
                    ("tasks_first_page_of_scheduler", filtered_ms),
                    ("tasks_next_page", next_ms),
                    ("overview", overview_ms),
                ):
                    samples.setdefault(name, []).append(value)
                # The script asks for whoami, then the scheduler list and the first page.
                views.append(page_ms + whoami_ms + schedulers_ms + first_ms)
    finally:
        fleet.stop()
        delete_keys(f"{prefix}:*")

    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "median_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2),
        }

    return {
        "live_tasks": tasks,
        "rounds": rounds,
        "reads": {name: summary(values) for name, values in samples.items()},
        "tasks_page_ms": round(statistics.median(views), 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    if not os.access(BIN / "taskbroker", os.X_OK):
        sys.exit(f"no taskbroker command next to {sys.executable}: install the checkout first")
    figures = measure(args.tasks, args.rounds)
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
