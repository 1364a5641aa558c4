"""Redis memory that task events add per live task: the ``events`` field of each task hash plus
its entries in the event stream. Real Redis, a throwaway key prefix, removed afterwards.

    .venv/bin/python -m bench.event_memory --tasks 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from datetime import timedelta

from taskbroker.backends import redis_client
from taskbroker.models import SchedulerDefinition, utcnow
from taskbroker.settings import Settings
from taskbroker.store import NewTask, TaskStore

ATTRIBUTES = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"payload": "x" * 150}}
"""About 200 bytes of attributes as JSON, the benchmark's figure."""


async def measure(tasks: int, batch: int = 1000) -> dict[str, float]:
    settings = Settings()
    prefix = f"tbbench-{uuid.uuid4().hex[:8]}"
    client = redis_client(settings.redis_url)
    store = TaskStore(client, prefix, timedelta(hours=1), events_max_length=settings.events_max_length)
    try:
        await store.register_scheduler(SchedulerDefinition(name="bench"))
        timeout = utcnow() + timedelta(hours=1)
        ids: list[str] = []
        for start in range(0, tasks, batch):
            new = [
                NewTask(uuid.uuid4(), "bench", ATTRIBUTES, timeout, owner="0123456789ab")
                for _ in range(min(batch, tasks - start))
            ]
            ids += [str(t.id) for t in new]
            await store.create(new, now=utcnow())
        sample = ids[:: max(1, tasks // 200)]
        hashes = [await client.memory_usage(f"{prefix}:task:{i}", samples=0) or 0 for i in sample]
        with_events = sum(hashes) / len(hashes)
        # The same hashes without the `events` field: what the task costs without events.
        for task_id in sample:
            await client.hdel(f"{prefix}:task:{task_id}", "events")
        bare = [await client.memory_usage(f"{prefix}:task:{i}", samples=0) or 0 for i in sample]
        stream = await client.memory_usage(f"{prefix}:events", samples=0) or 0
        length = await client.xlen(f"{prefix}:events")
        return {
            "tasks": tasks,
            "task_hash_bytes": with_events,
            "events_field_bytes": with_events - sum(bare) / len(bare),
            "stream_bytes_per_event": stream / length,
            "event_bytes_per_pending_task": with_events - sum(bare) / len(bare) + stream / length,
        }
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.tasks)), indent=2))


if __name__ == "__main__":
    main()
