"""Redis memory a retained failed task costs (TASKBROKER_FAILED_RETENTION keeps one 7 days by
default): its hash (with a short error, and with a traceback-sized one), its attributes key when
they are long, its entry in the final index, and its events. Real Redis, a throwaway key
prefix, removed afterwards.

    .venv/bin/python -m bench.failed_memory --tasks 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

from taskbroker.backends import redis_client
from taskbroker.models import SchedulerDefinition, TaskState, utcnow
from taskbroker.settings import Settings
from taskbroker.store import NewTask, TaskStore

SHORT: dict[str, Any] = {"function": "taskbroker.runtimes.builtin:fail"}
LONG: dict[str, Any] = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"payload": "x" * 150}}
SHORT_ERROR = "ValueError: boom"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    + '  File "x.py", line 1, in f\n    g()\n' * 25
    + "ValueError: boom"
)
"""About 1 KiB: a real traceback is often longer; the hash grows by its length."""


async def _fail_all(store: TaskStore, attributes: dict[str, Any], error: str, tasks: int) -> list[str]:
    ids: list[str] = []
    timeout = utcnow() + timedelta(hours=1)
    for start in range(0, tasks, 1000):
        new = [
            NewTask(uuid.uuid4(), "bench", attributes, timeout, owner="0123456789ab")
            for _ in range(min(1000, tasks - start))
        ]
        await store.create(new, now=utcnow())
        for task in new:
            await store.claim(str(task.id), consumer="bench-consumer", lease=30, max_attempts=3)
            await store.finish(str(task.id), consumer="bench-consumer", state=TaskState.FAILED, error=error)
        ids += [str(t.id) for t in new]
    return ids


async def measure(tasks: int) -> dict[str, float]:
    settings = Settings()
    client = redis_client(settings.redis_url)
    results: dict[str, float] = {"tasks": tasks}
    try:
        for name, attributes, error in (
            ("short_attributes_short_error", SHORT, SHORT_ERROR),
            ("long_attributes_short_error", LONG, SHORT_ERROR),
            ("short_attributes_1k_traceback", SHORT, TRACEBACK),
        ):
            prefix = f"tbbench-{uuid.uuid4().hex[:8]}"
            store = TaskStore(client, prefix, timedelta(hours=1), failed_retention=timedelta(days=7))
            try:
                await store.register_scheduler(SchedulerDefinition(name="bench"))
                ids = await _fail_all(store, attributes, error, tasks)
                sample = ids[:: max(1, tasks // 200)]
                hashes = [await client.memory_usage(f"{prefix}:task:{i}", samples=0) or 0 for i in sample]
                extra = [
                    await client.memory_usage(f"{prefix}:attributes:{i}", samples=0) or 0 for i in sample
                ]
                index = await client.memory_usage(f"{prefix}:final:bench:failed", samples=0) or 0
                stream = await client.memory_usage(f"{prefix}:events", samples=0) or 0
                per_task = {
                    "hash": sum(hashes) / len(hashes),
                    "attributes_key": sum(extra) / len(extra),
                    "final_index_entry": index / tasks,
                    "events": stream / tasks,
                }
                per_task["total"] = sum(per_task.values())
                results.update({f"{name}.{k}": round(v, 1) for k, v in per_task.items()})
            finally:
                keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
                if keys:
                    await client.delete(*keys)
    finally:
        await client.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.tasks)), indent=2))


if __name__ == "__main__":
    main()
